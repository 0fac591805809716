"""``civicbot needs``: define, list and close needs assessments, report who has been heard,
export, and invite under-represented residents back. ``civicbot census``: load the census
the report weighs against (see docs/needs.md for turning Nomis tables into the file)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import typer

from admin.cli.runtime import AppServices, Runtime
from flows.needs.census import CensusFileError
from flows.needs.definition import DefinitionError, london
from flows.needs.service import Reminder, status
from storage.needs import NeedsAssessment

MAX_FILE_BYTES = 20 * 1024 * 1024
SUPPRESS_BELOW = 5  # aggregate cells of 1-4 respondents are not shown in exports
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def read_text(rt: Runtime, file: Path) -> str:
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise rt.fail(f"{file}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
        return file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise rt.fail(f"{file}: not UTF-8 text (byte {exc.start}); nothing was written") from None
    except OSError as exc:
        raise rt.fail(f"{file}: cannot read it ({exc.strerror or exc})") from None


def _problems(rt: Runtime, file: Path, problems: list[str]) -> typer.Exit:
    for problem in problems:
        typer.secho(f"{file.name}: {problem}", err=True, fg=typer.colors.RED)
    return rt.fail(f"{len(problems)} problem(s); nothing was written. Fix the file and run again.")


def build(rt: Runtime) -> typer.Typer:
    app = typer.Typer(help="Needs assessments: who has been heard.", no_args_is_help=True)

    @app.command("open")
    def open_(
        file: Path = typer.Argument(..., help="The assessment's YAML file."),
        announce: bool = typer.Option(
            False, "--announce", help="Invite consented residents in its wards when it opens."
        ),
    ) -> None:
        """Check FILE and create the assessment, or update it while it has not opened.

        It opens at opens_at (at once if that has passed) and closes at closes_at."""
        text = read_text(rt, file)

        async def work(services: AppServices) -> tuple[NeedsAssessment, str] | DefinitionError:
            try:
                return await services.needs.define(text, announce=announce, actor=rt.actor())
            except DefinitionError as exc:
                return exc

        result = rt.run(work)
        if isinstance(result, DefinitionError):
            raise _problems(rt, file, result.problems)
        row, what = result
        typer.echo(
            f"{what} needs assessment {row.id}: opens {london(row.opens_at)}, closes "
            f"{london(row.closes_at)} (Europe/London); {len(row.categories)} categories"
            + ("; residents will be invited when it opens" if announce else "")
        )

    @app.command("list")
    def list_() -> None:
        """Every needs assessment, with its status and times (Europe/London)."""

        async def work(services: AppServices) -> list[tuple[NeedsAssessment, str]]:
            now = services.clock.now()
            return [(a, status(a, now)) for a in await services.needs.all()]

        rows = rt.run(work)
        if not rows:
            typer.echo("no needs assessments yet: civicbot needs open FILE.yaml")
            return
        typer.echo(f"{'id':<24}{'status':<11}{'opens':<18}{'closes':<18}wards")
        for row, state in rows:
            wards = "all" if row.wards is None else ",".join(row.wards)
            typer.echo(
                f"{row.id:<24}{state:<11}{london(row.opens_at):<18}"
                f"{london(row.closed_at or row.closes_at):<18}{wards}"
            )

    @app.command("close")
    def close(assessment_id: str = typer.Argument(..., metavar="ID")) -> None:
        """Close an assessment now: later answers are told it has closed."""

        async def work(services: AppServices) -> NeedsAssessment:
            return await services.needs.close(assessment_id, actor=rt.actor())

        row = rt.run(work)
        typer.echo(f"needs assessment {row.id} closed")

    @app.command("report")
    def report(
        assessment_id: str = typer.Argument(..., metavar="ID"),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Who has been heard, ward by ward and group by group, and the ranked needs."""

        async def work(services: AppServices) -> dict[str, Any]:
            return await services.needs.report(assessment_id)

        data = rt.run(work)
        if as_json:
            typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            typer.echo(human_report(data))

    @app.command("export")
    def export(
        assessment_id: str = typer.Argument(..., metavar="ID"),
        as_csv: bool = typer.Option(False, "--csv", help="CSV on standard output (required)."),
        rows: bool = typer.Option(
            False, "--rows", help="One row per response instead of the aggregate tables."
        ),
    ) -> None:
        """The aggregate tables (cells of fewer than 5 respondents suppressed), or with
        --rows one row per response under a random respondent id (no phone numbers or
        Telegram ids)."""
        if not as_csv:
            raise rt.fail("give --csv (the only export format)")
        if rows:

            async def rows_work(services: AppServices) -> list[dict[str, Any]]:
                return (await services.needs.export_rows(assessment_id))[1]

            write_rows(rt.run(rows_work))
            return

        async def work(services: AppServices) -> dict[str, Any]:
            return await services.needs.report(assessment_id)

        write_aggregates(rt.run(work))

    @app.command("remind")
    def remind(
        assessment_id: str = typer.Argument(..., metavar="ID"),
        under_represented: bool = typer.Option(
            False,
            "--under-represented",
            help="Invite residents of under-represented wards and groups who have not answered.",
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Count who would be invited, and the SMS cost; send nothing."
        ),
    ) -> None:
        """Invite consented, opted-in residents who have not answered and who belong to an
        under-represented ward or group, once each per assessment however often it runs."""
        if not under_represented:
            raise rt.fail("say who to remind: --under-represented")

        async def work(services: AppServices) -> Reminder:
            return await services.needs.remind(assessment_id, dry_run=dry_run, actor=rt.actor())

        print_reminder(rt.run(work), dry_run=dry_run)

    return app


def build_census(rt: Runtime) -> typer.Typer:
    app = typer.Typer(help="Census populations, for needs reports.", no_args_is_help=True)

    @app.command("load")
    def load(
        file: Path = typer.Argument(..., help="CSV: ward_code,dimension,group,population"),
    ) -> None:
        """Check FILE whole, then replace the census of each dimension it has."""
        text = read_text(rt, file)

        async def work(services: AppServices) -> dict[str, int] | CensusFileError:
            try:
                return await services.needs.load_census(
                    text, source=file.name, actor=rt.actor()
                )
            except CensusFileError as exc:
                return exc

        result = rt.run(work)
        if isinstance(result, CensusFileError):
            raise _problems(rt, file, result.problems)
        typer.echo(
            f"loaded {result['rows']} census rows: {result['dimensions']} dimension(s) "
            f"over {result['wards']} ward(s)"
        )

    return app


# ---- presentation ---------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def human_report(data: dict[str, Any]) -> str:
    """The report as text: a table per ward with under-represented groups marked."""
    out: list[str] = []
    title = data.get("title", {}).get("en", "")
    out.append(f"Needs assessment {data['needs_assessment']}: {title} ({data.get('status')})")
    out.append(
        f"Responses from residents: {data['responses']}   "
        f"(under-represented: ratio below {data['under_represented_ratio']})"
    )
    weights = data["weights"]
    out.append(
        f"Weights: raking on {', '.join(weights['dimensions']) or 'nothing'}; "
        f"{'converged' if weights['converged'] else 'NOT converged'} "
        f"(largest margin error {weights['max_margin_error']:.2g}), efficiency "
        f"{_pct(weights['efficiency'])}, largest weight {weights['max_weight']:.2f} "
        f"(capped at {weights['cap']:g}x the mean)"
    )
    for left in weights["left_out"]:
        out.append(f"  not weighted on {left['dimension']}: {left['reason']}")
    ward_groups: dict[str, list[dict[str, Any]]] = {}
    for item in data["ward_groups"]:
        ward_groups.setdefault(item["ward_code"], []).append(item)
    for ward in data["wards"]:
        mark = "  << UNDER-REPRESENTED" if ward["under_represented"] else ""
        out.append("")
        out.append(
            f"== {ward['ward_name']} ({ward['ward_code']}): {ward['responses']} responses, "
            f"population {ward['population'] if ward['population'] is not None else 'unknown'}, "
            f"{_num(ward['per_1000'])} per 1,000, ratio {_num(ward['ratio'])}{mark}"
        )
        rows = ward_groups.get(ward["ward_code"], [])
        if rows:
            out.append(
                f"   {'dimension':<14}{'group':<40}{'resp':>6}{'share':>9}{'census':>9}"
                f"{'ratio':>7}"
            )
        for g in rows:
            flag = "  << under-represented" if g["under_represented"] else ""
            out.append(
                f"   {g['dimension'][:13]:<14}{g['group'][:39]:<40}{g['responses']:>6}"
                f"{_pct(g['share']):>9}{_pct(g['population_share']):>9}"
                f"{_num(g['ratio']):>7}{flag}"
            )
    out.append("")
    out.append("== All wards: groups")
    for d in data["dimensions"]:
        note = "" if d["census"] else " (no census loaded: not compared or weighted)"
        out.append(
            f"   {d['dimension']}: {d['answered']} answered, {d['prefer_not_to_say']} prefer "
            f"not to say, {d['not_answered']} not asked or skipped{note}"
        )
    for g in data["groups"]:
        flag = "  << under-represented" if g["under_represented"] else ""
        out.append(
            f"   {g['dimension'][:13]:<14}{g['group'][:39]:<40}{g['responses']:>6}"
            f"{_pct(g['share']):>9}{_pct(g['population_share']):>9}{_num(g['ratio']):>7}"
            f"  weighted {_pct(g['weighted_share'])}{flag}"
        )
    out.append("")
    out.append("== Needs (Borda count; weighted to the census)")
    names = {c["id"]: c["en"] for c in data.get("categories", [])}
    out.append(
        f"   {'rank':>4}  {'category':<40}{'picked':>8}{'score':>8}{'weighted':>11}{'w.rank':>8}"
    )
    for need in data["needs"]:
        out.append(
            f"   {need['rank']:>4}  {names.get(need['category'], need['category'])[:39]:<40}"
            f"{need['responses']:>8}{need['score']:>8}{need['weighted_score']:>11.1f}"
            f"{need['weighted_rank']:>8}"
        )
    polls = data.get("group_polls", [])
    out.append("")
    out.append(
        f"== Telegram group polls linked to it: {data['sources']['group_polls']} "
        "(counted as they are: not weighted, not in the scores above)"
    )
    for poll in polls:
        state = "closed" if poll["closed"] else "open"
        out.append(f"   poll {poll['poll_id']} in {poll['chat_id']} ({state}): {poll['question']}")
        for option in poll["options"]:
            out.append(f"      {option['option']}: {option['votes']}")
        out.append(f"      people who voted: {poll['voters']}")
    return "\n".join(out)


def _safe(value: Any) -> Any:
    """A cell a spreadsheet will show as text, never run as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def write_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        typer.echo("respondent,ward_code")
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _safe(v) for k, v in row.items()})


AGGREGATE_COLUMNS = [
    "table", "ward_code", "ward_name", "dimension", "group", "category", "responses", "share",
    "population_share", "ratio", "under_represented", "population", "per_1000", "score",
    "weighted_score", "rank", "weighted_rank",
]


def _suppressed(row: dict[str, Any]) -> dict[str, Any]:
    """Cells of 1-4 respondents, and what could be worked back from them, are not shown."""
    count = row.get("responses")
    if isinstance(count, int) and 0 < count < SUPPRESS_BELOW:
        row = dict(row)
        row["responses"] = f"<{SUPPRESS_BELOW}"
        for key in ("share", "ratio", "under_represented", "per_1000", "score", "weighted_score"):
            if key in row:
                row[key] = ""
    return row


def write_aggregates(data: dict[str, Any]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=AGGREGATE_COLUMNS, lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    tables = (
        ("ward", data["wards"]),
        ("group", data["groups"]),
        ("ward_group", data["ward_groups"]),
        ("need", data["needs"]),
    )
    for name, rows in tables:
        for row in rows:
            cells = _suppressed({"table": name, **row})
            writer.writerow({k: _safe(v) for k, v in cells.items()})
    sys.stdout.write(buffer.getvalue())


def print_reminder(reminder: Reminder, *, dry_run: bool) -> None:
    if reminder.audience is None:
        typer.echo(f"nobody to remind: {reminder.reason}")
        return
    typer.echo("by ward:")
    for ward, n in reminder.by_ward.items():
        typer.echo(f"  {ward:<40}{n:>7}")
    typer.echo("by under-represented group (a resident may be in several):")
    for group, n in reminder.by_group.items():
        typer.echo(f"  {group:<40}{n:>7}")
    audience = reminder.audience
    typer.echo(f"{'channel':<14}{'language':<10}{'recipients':>11}{'SMS segments':>14}")
    for line in audience.lines:
        segments = str(line.segments) if line.channel.endswith("sms") else "-"
        typer.echo(f"{line.channel:<14}{line.language:<10}{line.recipients:>11}{segments:>14}")
    typer.echo(f"recipients: {audience.recipients}")
    typer.echo(
        f"SMS segments in all: {audience.sms_segments}; "
        f"estimated cost: {audience.estimated_cost} {audience.currency}"
    )
    if dry_run:
        typer.echo("dry run: nothing was sent")
    elif reminder.sent is None:
        typer.echo(f"nothing sent: {reminder.reason}")
    else:
        typer.echo(
            f"reminder broadcast {reminder.sent.broadcast_id}: invited "
            f"{reminder.sent.queued} resident(s); {reminder.sent.already} had it already"
        )
