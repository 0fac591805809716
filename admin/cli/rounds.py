"""``civicbot pb round``, ``civicbot pb proposals`` and ``civicbot pb project``: PB rounds from
their YAML file to their results, Pabulib export and import, residents' ideas, and delivery
updates (see README "Participatory budgeting rounds" and docs/pb.md).

    civicbot pb round create FILE.yaml          check the whole file; prints the round id
    civicbot pb round list
    civicbot pb round show ID [--json]
    civicbot pb round update ID FILE.yaml [--reason TEXT]
    civicbot pb round open ID | close ID
    civicbot pb round results ID [--json]
    civicbot pb round export ID [--out FILE.pb]
    civicbot pb round import FILE.pb [--id ID] [--rule RULE]   prints the id as its last word
    civicbot pb proposals ROUND [--json]
    civicbot pb proposals accept ROUND PROPOSAL --cost N --id PROJECT
    civicbot pb project update ROUND PROJECT --text-en TEXT [--text-cy TEXT]

Bad input gets one clear line on stderr and exit status 2; nothing is written then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from admin.cli.needs import _problems, read_text
from admin.cli.runtime import AppServices, Runtime
from flows.needs.definition import DefinitionError, london
from flows.pb.pabulib import PabulibError
from flows.pb.pabulib import read_text as read_pabulib_text
from flows.rounds.service import Imported, money
from storage.pb_rounds import PbProject, PbProposal, PbRound


def register(pb_app: typer.Typer, rt: Runtime) -> None:
    """Add ``round``, ``proposals`` and ``project`` to ``civicbot pb``."""
    pb_app.add_typer(build_round(rt), name="round")
    pb_app.add_typer(build_project(rt), name="project")
    pb_app.command("proposals")(proposals_command(rt))


def build_round(rt: Runtime) -> typer.Typer:
    app = typer.Typer(
        help="PB rounds: define, open, close, results, Pabulib.", no_args_is_help=True
    )

    @app.command("create")
    def create(file: Path = typer.Argument(..., help="The round's YAML file.")) -> None:
        """Check FILE whole and create the round (a draft until voting opens); prints its id."""
        text = read_text(rt, file)

        async def work(services: AppServices) -> PbRound | DefinitionError:
            try:
                return await services.rounds.create(text, actor=rt.actor())
            except DefinitionError as exc:
                return exc

        result = rt.run(work)
        if isinstance(result, DefinitionError):
            raise _problems(rt, file, result.problems)
        typer.echo(result.id)

    @app.command("list")
    def list_() -> None:
        """Every round with its status, voting times (Europe/London) and rule."""
        rows = rt.run(lambda services: services.rounds.all())
        if not rows:
            typer.echo("no PB rounds yet: civicbot pb round create FILE.yaml")
            return
        typer.echo(f"{'id':<28}{'status':<9}{'voting opens':<18}{'closes':<18}{'rule':<10}budget")
        for row in rows:
            typer.echo(
                f"{row.id:<28}{row.status:<9}{london(row.voting_open):<18}"
                f"{london(row.voting_close):<18}{row.rule:<10}{money(row.budget, row.currency)}"
            )

    @app.command("show")
    def show(
        round_id: str = typer.Argument(..., metavar="ID"),
        as_json: bool = typer.Option(False, "--json", help="Print the round as JSON."),
    ) -> None:
        """The round: definition, status, times and projects."""
        data: dict[str, Any] = rt.run(lambda services: services.rounds.show(round_id))
        if as_json:
            typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
            return
        typer.echo(f"{data['id']}: {data['title']['en']} ({data['status']})")
        wards = data["wards"] if data["wards"] == "all" else ", ".join(data["wards"])
        typer.echo(
            f"wards: {wards}; budget {money(data['budget'], data['currency'])}; "
            f"ballot {data['ballot']}; rule {data['rule']}; "
            f"verification {data['verification']}"
        )
        for name, when in data["phases"].items():
            if when:
                typer.echo(f"{name}: {when}")
        typer.echo(f"ballots: {data['ballots']}; ideas: {data['proposals']}")
        for p in data["projects"]:
            typer.echo(
                f"  {p['id']:<8}{money(p['cost'], data['currency']):>14}  {p['title']['en']}"
            )

    @app.command("update")
    def update(
        round_id: str = typer.Argument(..., metavar="ID"),
        file: Path = typer.Argument(..., help="The round's YAML file."),
        reason: str = typer.Option(
            None, "--reason", help="Why voting_close moves later (after voting opened)."
        ),
    ) -> None:
        """Replace the round's definition before voting opens. After that the rules are
        locked: only voting_close may move later, with --reason (audited and announced)."""
        text = read_text(rt, file)

        async def work(services: AppServices) -> tuple[PbRound, str] | DefinitionError:
            try:
                return await services.rounds.update(round_id, text, actor=rt.actor(), reason=reason)
            except DefinitionError as exc:
                return exc

        result = rt.run(work)
        if isinstance(result, DefinitionError):
            raise _problems(rt, file, result.problems)
        row, done = result
        typer.echo(f"PB round {row.id}: {done}")

    @app.command("open")
    def open_(round_id: str = typer.Argument(..., metavar="ID")) -> None:
        """Open voting now (and invite residents in scope)."""
        row = rt.run(lambda services: services.rounds.open(round_id, actor=rt.actor()))
        typer.echo(
            f"PB round {row.id}: voting is open until {london(row.voting_close)} (Europe/London)"
        )

    @app.command("close")
    def close(round_id: str = typer.Argument(..., metavar="ID")) -> None:
        """Close voting now: ballots are frozen, tallied and the results sent."""
        row = rt.run(
            lambda services: services.rounds.close(round_id, actor=rt.actor(), announce=False)
        )
        results = row.results or {}
        typer.echo(
            f"PB round {row.id} closed: {results.get('voters', 0)} voter(s); funded "
            f"{', '.join(results.get('selected', [])) or 'nothing'}"
        )
        typer.echo("sending each voter the result (if this stops, the scheduler finishes it)")
        rt.run(lambda services: services.rounds.announce(actor=rt.actor()))
        typer.echo("result messages queued")

    @app.command("results")
    def results(
        round_id: str = typer.Argument(..., metavar="ID"),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """What was funded, with each project's votes and the reason from the rule."""
        data: dict[str, Any] = rt.run(lambda services: services.rounds.results(round_id))
        if as_json:
            typer.echo(json.dumps(data, ensure_ascii=False))
            return
        typer.echo(
            f"{data['round']}: {data['rule']}, {data['voters']} voter(s); funded "
            f"{', '.join(data['selected']) or 'nothing'} costing {data['cost']:,} of "
            f"{data['budget']:,}"
        )
        for p in data["projects"]:
            mark = "funded" if p["selected"] else f"not funded: {p['reason']['en']}"
            typer.echo(f"  {p['id']:<10}{p['cost']:>12,}{p['votes']:>8} votes  {mark}")

    @app.command("export")
    def export(
        round_id: str = typer.Argument(..., metavar="ID"),
        out: Path = typer.Option(None, "--out", help="Write the .pb file here (default: stdout)."),
    ) -> None:
        """The closed round as a Pabulib .pb file (voters under random ids)."""
        text: str = rt.run(lambda services: services.rounds.export(round_id))
        if out is None:
            typer.echo(text, nl=False)
            return
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise rt.fail(f"{out}: cannot write it ({exc.strerror or exc})") from None
        typer.echo(f"wrote {out}")

    @app.command("import")
    def import_(
        file: Path = typer.Argument(..., help="A Pabulib .pb file."),
        round_id: str = typer.Option(
            None, "--id", help="The round's id (default: from the file name)."
        ),
        rule: str = typer.Option(
            None, "--rule", help="Tally with this rule (default: the file's rule)."
        ),
    ) -> None:
        """Make a closed round from a Pabulib file; prints its id as the last word."""
        try:
            text = read_pabulib_text(file)
        except PabulibError as exc:
            raise rt.fail(f"{file}: {exc}") from None

        async def work(services: AppServices) -> Imported:
            return await services.rounds.import_file(
                text, source=file.name, actor=rt.actor(), round_id=round_id, rule=rule
            )

        imported = rt.run(work)
        for note in imported.notes:
            typer.echo(f"note: {note}")
        results = imported.round.results or {}
        typer.echo(
            f"{results.get('voters', 0)} voter(s), {len(results.get('projects', []))} "
            f"project(s), tallied with {imported.round.rule}; imported as PB round "
            f"{imported.round.id}"
        )

    return app


def proposals_command(rt: Runtime) -> Any:
    def proposals(
        args: list[str] = typer.Argument(
            ...,
            metavar="ROUND | accept ROUND PROPOSAL",
            help="A round's id to list its ideas; or accept ROUND PROPOSAL.",
        ),
        as_json: bool = typer.Option(False, "--json", help="List the ideas as JSON."),
        cost: int = typer.Option(None, "--cost", help="accept: the project's cost."),
        project_id: str = typer.Option(None, "--id", help="accept: the project's id."),
        title_cy: str = typer.Option(None, "--title-cy", help="accept: a Welsh title."),
    ) -> None:
        """Residents' ideas for a round; `accept ROUND PROPOSAL --cost N --id PROJECT` puts
        one on the ballot (before voting opens) and tells the resident."""
        if args[0] == "accept":
            if len(args) != 3:
                raise rt.fail(
                    "usage: civicbot pb proposals accept ROUND PROPOSAL --cost N --id PROJECT"
                )
            if cost is None or project_id is None:
                raise rt.fail("accept needs --cost N and --id PROJECT")
            try:
                proposal_id = int(args[2])
            except ValueError:
                raise rt.fail(f"PROPOSAL is an idea's number, not {args[2]!r}") from None
            round_id = args[1]

            async def accept(services: AppServices) -> PbProject:
                return await services.rounds.accept_proposal(
                    round_id,
                    proposal_id,
                    cost=cost,
                    project_id=project_id,
                    actor=rt.actor(),
                    title_cy=title_cy,
                )

            project = rt.run(accept)
            typer.echo(
                f"idea {proposal_id} is project {project.id} of round {round_id}, "
                f"costing {project.cost:,}"
            )
            return
        if len(args) != 1:
            raise rt.fail("usage: civicbot pb proposals ROUND [--json]")
        round_id = args[0]
        rows: list[PbProposal] = rt.run(lambda services: services.rounds.proposals(round_id))
        data = [
            {
                "id": p.id,
                "status": p.status,
                "title": p.title,
                "content": p.content,
                "ward": p.ward_code,
                "project": p.project_id,
                "created_at": p.created_at.isoformat(),
            }
            for p in rows
        ]
        if as_json:
            typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
            return
        if not data:
            typer.echo(f"no ideas for {round_id} yet")
        for item in data:
            extra = f" -> project {item['project']}" if item["project"] else ""
            typer.echo(
                f"{item['id']:>5}  {item['status']:<9}{item['ward'] or '-':<16}"
                f"{item['title']}{extra}"
            )
            if item["content"]:
                typer.echo(f"       {item['content']}")

    return proposals


def build_project(rt: Runtime) -> typer.Typer:
    app = typer.Typer(help="A round's projects: delivery updates.", no_args_is_help=True)

    @app.command("update")
    def update(
        round_id: str = typer.Argument(..., metavar="ROUND"),
        project_id: str = typer.Argument(..., metavar="PROJECT"),
        text_en: str = typer.Option(..., "--text-en", help="The update, in English."),
        text_cy: str = typer.Option(None, "--text-cy", help="The update, in Welsh."),
    ) -> None:
        """Tell the voters who backed PROJECT (opted in) and its ward's groups how its
        delivery is going, through the broadcast path."""

        async def work(services: AppServices) -> tuple[int, int]:
            return await services.rounds.project_update(
                round_id, project_id, text_en=text_en, text_cy=text_cy, actor=rt.actor()
            )

        queued, backers = rt.run(work)
        typer.echo(
            f"update on {project_id}: {backers} voter(s) backed it; {queued} message(s) "
            "queued (groups included)"
        )

    return app
