"""``civicbot wards``: load and list wards and the postcode→ward lookup."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from admin.cli.runtime import AppServices, Runtime
from admin.wards_import import WardFileError, read_wards_csv
from storage import repositories as repo

DEMO_FILE = Path(__file__).resolve().parents[1] / "data" / "demo_wards.csv"


def build(rt: Runtime) -> typer.Typer:
    app = typer.Typer(help="Wards and the postcode to ward lookup.", no_args_is_help=True)

    @app.command("load")
    def load(
        file: Path = typer.Argument(
            ..., help="CSV with postcode,ward_code,ward_name[,ward_name_cy]"
        ),
        if_empty: bool = typer.Option(
            False, "--if-empty", help="Only load when no wards exist yet (used by `make run`)."
        ),
    ) -> None:
        """Load wards and postcodes from FILE (rows for known postcodes are updated)."""
        try:
            parsed = read_wards_csv(file)
        except WardFileError as exc:
            for problem in exc.problems:
                typer.secho(f"{file.name}: {problem}", err=True, fg=typer.colors.RED)
            raise rt.fail("nothing was loaded; fix the file and run this again") from None

        async def work(services: AppServices) -> bool:
            async with services.sessions() as session, session.begin():
                if if_empty and await repo.list_wards(session):
                    return False
                await repo.upsert_wards(session, wards=parsed.wards, postcodes=parsed.postcodes)
                await repo.audit(
                    session,
                    actor=rt.actor(),
                    action="wards_loaded",
                    subject=file.name,
                    detail={"wards": len(parsed.wards), "postcodes": len(parsed.postcodes)},
                    now=services.clock.now(),
                )
            return True

        if rt.run(work):
            typer.echo(f"loaded {len(parsed.wards)} wards and {len(parsed.postcodes)} postcodes")
        else:
            typer.echo("wards are already loaded; nothing changed")

    @app.command("list")
    def list_wards() -> None:
        """List wards with how many postcodes each has."""

        async def work(services: AppServices) -> list[tuple[str, str, int]]:
            async with services.sessions() as session:
                return [(w.code, w.name, n) for w, n in await repo.list_wards(session)]

        rows = rt.run(work)
        if not rows:
            typer.echo(f"no wards loaded yet; try: civicbot wards load {DEMO_FILE}")
            return
        table = Table("code", "ward", "postcodes")
        for code, name, count in rows:
            table.add_row(code, name, str(count))
        Console().print(table)

    return app
