"""``civicbot tenders``: import and fetch OCDS notices, and see what tender alerts hold.

- ``import FILE...``: release packages, record packages, search-API pages or single
  releases; every file is checked before anything is written (a problem: its line or path,
  exit status 2, nothing written); then instant alerts go out (queued for ``serve``).
- ``fetch --source contracts-finder|find-a-tender [--since ISO-8601]``: pages through the
  live API from where the last fetch stopped.
- ``list [--open] [--json]``, ``show OCID [--json]``, ``matches --org ID [--json]``,
  ``orgs [--json]``: what is stored. The JSON keys are a contract: keys may be added, never
  renamed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from admin.cli.runtime import AppServices, Runtime
from flows.tenders import fetch as feeds
from flows.tenders.ocds import OcdsError
from flows.tenders.service import ImportResult
from storage import tenders as store
from storage.tenders import TenderProcess, TenderRelease


def process_json(row: TenderProcess) -> dict[str, Any]:
    """One contracting process as ``tenders list --json`` gives it."""
    value: dict[str, Any] = {
        "amount": row.value_amount,
        "min": row.value_min,
        "max": row.value_max,
        "currency": row.currency or None,
    }
    return {
        "ref": row.id,
        "ocid": row.ocid,
        "title": row.title,
        "buyer": row.buyer,
        "status": row.status,
        "deadline": None if row.deadline is None else row.deadline.isoformat(),
        "value": value,
        "regions": list(row.regions),
        "categories": list(row.categories),
        "cpv": list(row.cpv),
        "sme": row.sme,
        "vcse": row.vcse,
        "reserved": row.reserved,
        "framework": row.framework,
        "dps": row.dps,
        "social_value": row.social_value,
        "procurement_method": row.procurement_method,
        "url": row.url,
        "revision": row.revision,
        "releases_count": row.release_count,
    }


def _value_text(row: TenderProcess) -> str:
    if row.value_min is not None and row.value_max is not None:
        return f"{row.value_min:,.0f}-{row.value_max:,.0f}"
    return "-" if row.value_amount is None else f"{row.value_amount:,.0f}"


def build(rt: Runtime) -> typer.Typer:
    app = typer.Typer(help="Tender alerts: OCDS notices, organisations, matches.",
                      no_args_is_help=True)

    @app.command("import")
    def import_(
        files: list[Path] = typer.Argument(..., help="OCDS JSON files."),
    ) -> None:
        """Import OCDS files (checked whole first; nothing is written if any is broken),
        then queue instant alerts."""

        async def work(services: AppServices) -> ImportResult:
            with Progress(
                TextColumn("compiling"), BarColumn(), MofNCompleteColumn(), transient=True
            ) as bar:
                task = bar.add_task("compile", total=None)

                def step(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                try:
                    result = await services.tenders.import_files(files, progress=step)
                except OcdsError as exc:
                    raise rt.fail(
                        "; ".join(exc.problems) + ". Nothing was imported."
                    ) from None
            await services.tenders.send_alerts()
            return result

        result = rt.run(work)
        typer.echo(
            f"{result.files} file(s), {result.releases} release(s): {result.new_releases} new; "
            f"{result.processes} process(es) compiled ({result.new_processes} new, "
            f"{len(result.amended)} with a changed deadline, value or status)"
        )

    @app.command("fetch")
    def fetch(
        source: str = typer.Option(..., "--source", help="contracts-finder or find-a-tender"),
        since: str = typer.Option(
            None, "--since", help="Start again from this time (ISO 8601, e.g. 2025-01-20)."
        ),
        max_pages: int = typer.Option(None, "--max-pages", min=1, help="Stop after N pages."),
    ) -> None:
        """Page through a live API from where the last fetch stopped, importing each page."""
        if source not in feeds.SOURCES:
            raise rt.fail(f"--source {source!r}: use contracts-finder or find-a-tender")
        start: datetime | None = None
        if since is not None:
            try:
                start = datetime.fromisoformat(since.replace("Z", "+00:00"))
            except ValueError:
                raise rt.fail(f"--since {since!r}: not an ISO 8601 date or time") from None
            start = start if start.tzinfo else start.replace(tzinfo=UTC)

        async def work(services: AppServices) -> feeds.FetchResult:
            fetcher = feeds.Fetcher(
                sessions=services.sessions,
                tenders=services.tenders,
                clock=services.clock,
                bases=services.tenders.feed_bases,
            )

            def said(page: int, imported: ImportResult) -> None:
                typer.echo(
                    f"page {page}: {imported.releases} release(s), {imported.new_releases} new",
                    err=True,
                )

            try:
                result = await fetcher.run(source, since=start, max_pages=max_pages,
                                           on_page=said)
            except feeds.FetchError as exc:
                await services.tenders.send_alerts()
                raise rt.fail(str(exc)) from None
            await services.tenders.send_alerts()
            return result

        result = rt.run(work)
        end = "reached the last page" if result.finished else "stopped at --max-pages"
        typer.echo(
            f"{source}: {result.pages} page(s), {result.releases} release(s), "
            f"{result.new_releases} new; {end}"
        )

    @app.command("list")
    def list_(
        open_only: bool = typer.Option(False, "--open", help="Only open ones."),
        as_json: bool = typer.Option(False, "--json", help="A JSON array."),
    ) -> None:
        """Contracting processes, one per ocid."""

        async def work(services: AppServices) -> list[TenderProcess]:
            async with services.sessions() as session:
                return await store.processes(
                    session, open_at=services.clock.now() if open_only else None
                )

        rows = rt.run(work)
        if as_json:
            typer.echo(json.dumps([process_json(r) for r in rows], ensure_ascii=False, indent=1))
            return
        for r in rows:
            deadline = r.deadline.strftime("%Y-%m-%d") if r.deadline else "-"
            typer.echo(f"{r.id:>5}  {r.status:<11} {deadline:<10}  {_value_text(r):>21}  "
                       f"{r.title[:60]}")
        typer.echo(f"{len(rows)} process(es)", err=True)

    @app.command("show")
    def show(
        ocid: str = typer.Argument(..., help="The ocid (or the reference number)."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """One process: its fields, lots and releases."""

        async def work(
            services: AppServices,
        ) -> tuple[TenderProcess, list[TenderRelease]] | None:
            async with services.sessions() as session:
                row = await store.process_by_ocid(session, ocid=ocid)
                if row is None and ocid.isdigit():
                    row = await session.get(TenderProcess, int(ocid))
                if row is None:
                    return None
                return row, await store.releases_of(session, ocid=row.ocid)

        found = rt.run(work)
        if found is None:
            raise rt.fail(f"no process {ocid!r}; see `civicbot tenders list`")
        row, releases = found
        data = process_json(row)
        data["description"] = row.description
        data["lots"] = row.lots
        data["releases"] = [
            {"id": r.release_id, "date": r.date, "tag": r.data.get("tag"), "source": r.source}
            for r in releases
        ]
        if as_json:
            typer.echo(json.dumps(data, ensure_ascii=False, indent=1))
            return
        for key in ("ref", "ocid", "title", "buyer", "status", "deadline", "regions",
                    "categories", "cpv", "sme", "vcse", "url"):
            typer.echo(f"{key:>11}: {data[key]}")
        typer.echo(f"{'value':>11}: {_value_text(row)} {row.currency}")
        typer.echo(f"{'lots':>11}: {len(row.lots)}")
        for r in data["releases"]:
            typer.echo(f"    release {r['id']}  {r['date']}  {r['tag']}")

    @app.command("matches")
    def matches(
        org: int = typer.Option(..., "--org", help="The organisation's id (see `tenders orgs`)."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The open notices an organisation's subscriptions match now."""

        async def work(services: AppServices) -> list[dict[str, Any]]:
            found = await services.tenders.matches_for_org(org)
            return [{"subscription": sub.id, **process_json(row)} for sub, row in found]

        found = rt.run(work)
        if as_json:
            typer.echo(json.dumps(found, ensure_ascii=False, indent=1))
            return
        for item in found:
            typer.echo(f"sub {item['subscription']:>4}  {item['ref']:>5}  {item['title'][:70]}")
        typer.echo(f"{len(found)} match(es)", err=True)

    @app.command("orgs")
    def orgs(as_json: bool = typer.Option(False, "--json")) -> None:
        """Registered organisations and their subscriptions (never their contact details)."""

        async def work(services: AppServices) -> list[dict[str, Any]]:
            async with services.sessions() as session:
                out = []
                for o in await store.orgs(session):
                    assert o.id is not None
                    subs = await store.subscriptions_of(session, org_id=o.id)
                    out.append(
                        {
                            "id": o.id,
                            "name": o.name,
                            "type": o.kind,
                            "number": o.number,
                            "listed": o.listed,
                            "subscriptions": [
                                {
                                    "id": s.id,
                                    "categories": s.categories,
                                    "cpv": s.cpv,
                                    "regions": s.regions,
                                    "min_value": s.min_value,
                                    "max_value": s.max_value,
                                    "vcse_only": s.vcse_only,
                                    "keywords": s.keywords,
                                    "frequency": s.frequency,
                                    "paused": s.paused,
                                }
                                for s in subs
                            ],
                        }
                    )
                return out

        found = rt.run(work)
        if as_json:
            typer.echo(json.dumps(found, ensure_ascii=False, indent=1))
            return
        for o in found:
            typer.echo(f"{o['id']:>4}  {o['name'][:40]:<40} {o['type']:<10} "
                       f"{len(o['subscriptions'])} subscription(s)")

    return app
