"""`civicbot pb`: tally and check Pabulib `.pb` files.

    civicbot pb tally FILE.pb --rule mes-add1 [--tie-break cost-votes|lexico] [--json] [--explain]
    civicbot pb check FILE.pb

Problems with the file are reported as one line on stderr with exit status 2.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.pb.model import Election, TieBreak
from flows.pb.pabulib import (
    PabulibError,
    ProgressFn,
    check_pabulib,
    parse_pabulib,
    read_text,
)
from flows.pb.rules import (
    DEFAULT_MAX_RUNS,
    Funded,
    Rule,
    RuleNotApplicable,
    TallyResult,
    TallyTooLong,
    payments_by_voter,
    selected_ids,
    tally,
)

app = typer.Typer(
    help="Participatory budgeting: tally and check Pabulib (.pb) vote files.",
    no_args_is_help=True,
)

_BIG_FILE_LINES = 20_000

# What happened to a free project that voters named but MES did not fund (see docs/pb.md).
_FREE_FUND = "fund it outside the vote (or tally with --fund-free-projects)"
FREE_NO_WEIGHT = {
    "approval": "costs nothing; MES with cost satisfaction gives it no weight, so the vote "
    f"cannot fund it: {_FREE_FUND}",
    "ordinal": "costs nothing and every voter who named it ranked it last (a Borda score of 0), "
    f"so MES gives it no weight: {_FREE_FUND}",
    "cumulative": f"costs nothing and got no points, so MES gives it no weight: {_FREE_FUND}",
    "scoring": f"costs nothing and got no points, so MES gives it no weight: {_FREE_FUND}",
}


def _fail(message: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(2)


def _load_text(path: Path) -> str:
    try:
        return read_text(path)
    except PabulibError as e:
        raise _fail(f"{path}: {e}") from e


def _with_progress(text: str, work: str, fn: Any) -> Any:
    """Call fn(progress) with a progress bar on stderr when the file is large."""
    lines = text.count("\n") + 1
    if lines < _BIG_FILE_LINES:
        return fn(None)
    console = Console(stderr=True, soft_wrap=True)
    with Progress(
        TextColumn(work),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} lines"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(work, total=lines)  # the columns format the total: never None

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        cb: ProgressFn = progress
        return fn(cb)


def _num(x: Fraction) -> int | float:
    return x.numerator if x.denominator == 1 else float(x)


def _money(x: Fraction) -> str:
    return f"{float(x):,.2f}"


@app.command("tally")
def tally_command(
    file: Path = typer.Argument(..., help="Pabulib .pb file"),
    rule: str = typer.Option("mes-add1", "--rule", help="greedy, mes, mes-add1 or phragmen"),
    tie_break: str = typer.Option(
        "cost-votes",
        "--tie-break",
        help="cost-votes (lower cost, then more votes, then id) or lexico (id)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    explain: bool = typer.Option(False, "--explain", help="say why each project was funded or not"),
    max_runs: int = typer.Option(
        DEFAULT_MAX_RUNS,
        "--max-runs",
        min=1,
        help="mes-add1: give up after this many MES runs rather than run for hours",
    ),
    fund_free: bool = typer.Option(
        False,
        "--fund-free-projects",
        help="MES rules: fund every free project named on a ballot outside the vote (by "
        "default MES with cost satisfaction gives free projects no weight, as pabutools does)",
    ),
) -> None:
    """Compute which projects are funded."""
    if rule not in ("greedy", "mes", "mes-add1", "phragmen"):
        raise _fail(f"unknown rule '{rule}' (expected greedy, mes, mes-add1 or phragmen)")
    if tie_break not in ("cost-votes", "lexico"):
        raise _fail(f"unknown tie-break '{tie_break}' (expected cost-votes or lexico)")
    text = _load_text(file)
    try:
        election: Election = _with_progress(
            text, "reading votes", lambda cb: parse_pabulib(text, progress=cb)
        )
    except PabulibError as e:
        raise _fail(f"{file}: {e}") from e
    _print_warnings(file, election)
    try:
        result = tally(
            election,
            _as_rule(rule),
            _as_tie_break(tie_break),
            fund_free=fund_free,
            max_runs=max_runs,
        )
    except RuleNotApplicable as e:
        raise _fail(str(e)) from e
    except TallyTooLong as e:
        raise _fail(
            f"{file}: {e}. If you can wait, rerun with --max-runs {e.max_runs * 10:,} "
            "(each run takes about as long as one --rule mes tally of this file); or tally it "
            "with --rule mes, which needs one run"
        ) from e
    if as_json:
        typer.echo(json.dumps(_json(election, result, explain), ensure_ascii=False))
        return
    _print_table(election, result, explain)


_MAX_WARNINGS_SHOWN = 10


def _print_warnings(file: Path, election: Election) -> None:
    """What reading an incomplete file assumed, on stderr (`pb check` lists everything)."""
    if not election.warnings:
        return
    err = Console(stderr=True, soft_wrap=True)
    for w in election.warnings[:_MAX_WARNINGS_SHOWN]:
        err.print(f"warning: {file}:{w.line}: {w.message}", markup=False, highlight=False)
    more = len(election.warnings) - _MAX_WARNINGS_SHOWN
    if more > 0:
        err.print(f"warning: ... and {more:,} more (pb check {file} lists them)", markup=False)


def _as_rule(rule: str) -> Rule:
    for r in ("greedy", "mes", "mes-add1", "phragmen"):
        if r == rule:
            return r
    raise AssertionError(rule)


def _as_tie_break(tb: str) -> TieBreak:
    return "lexico" if tb == "lexico" else "cost-votes"


def _reasons(election: Election, result: TallyResult) -> dict[int, str]:
    out: dict[int, str] = {}
    for u in result.unfunded:
        cost = election.projects[u.project].cost
        if u.reason == "no-supporters":
            out[u.project] = "nobody voted for it"
        elif u.reason == "free-no-weight":
            out[u.project] = FREE_NO_WEIGHT[election.vote_type]
        elif u.reason == "not-enough-money":
            assert u.money_left is not None
            out[u.project] = (
                f"not enough supporters' money left: its {u.supporters} supporters had "
                f"{_money(u.money_left)} left, it costs {_money(cost)}"
            )
        elif u.reason == "no-longer-fit":
            assert u.budget_left is not None
            out[u.project] = (
                f"it no longer fit: {_money(u.budget_left)} of the budget was left, "
                f"it costs {_money(cost)}"
            )
        else:
            out[u.project] = (
                "the count stopped first (Phragmén stops at the first project that does not fit)"
            )
    return out


def _funded_note(election: Election, result: TallyResult, f: Funded) -> str | None:
    """What to say about a funded project that costs nothing (None for the others)."""
    if election.projects[f.project].cost:
        return None
    if result.rule in ("mes", "mes-add1"):
        if result.fund_free:
            return "costs nothing: funded outside the vote (--fund-free-projects); nobody paid"
        return "costs nothing: funded before the count, as its supporters value it; nobody paid"
    if result.rule == "phragmen":
        return "costs nothing: funded first, as it adds no load to its supporters"
    return "costs nothing: it always fits what is left of the budget"


def _json(election: Election, result: TallyResult, explain: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rule": result.rule,
        "selected": selected_ids(election, result),
        "cost": _num(result.cost),
        "budget": _num(result.budget),
        "voters": result.voters,
        "projects": result.projects,
    }
    if not explain:
        return out
    reasons = _reasons(election, result)
    out["funded"] = [
        {
            "project": election.projects[f.project].id,
            "step": f.step,
            "supporters": f.supporters,
            "payments": [
                {"voter": v, "paid": str(a)} for v, a in payments_by_voter(election, f.payments)
            ],
            **({"note": note} if (note := _funded_note(election, result, f)) else {}),
        }
        for f in result.funded
    ]
    out["unfunded"] = [
        {"project": election.projects[u.project].id, "reason": u.reason, "why": reasons[u.project]}
        for u in result.unfunded
    ]
    if result.voter_budget is not None:
        out["voter_budget"] = str(result.voter_budget)
        out["fund_free_projects"] = result.fund_free
    return out


def _print_table(election: Election, result: TallyResult, explain: bool) -> None:
    console = Console(soft_wrap=True)
    title = (
        f"{result.rule}: {len(result.selected)} of {result.projects} projects funded, "
        f"{_money(result.cost)} of {_money(result.budget)} ({result.voters:,} voters)"
    )
    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("project")
    table.add_column("name")
    table.add_column("cost", justify="right")
    table.add_column("votes", justify="right")
    for f in result.funded:
        p = election.projects[f.project]
        table.add_row(str(f.step), p.id, p.name[:60], _money(p.cost), f"{f.supporters:,}")
    console.print(table)
    if not explain:
        return
    if result.voter_budget is not None:
        console.print(f"Each voter started with {_money(result.voter_budget)}.", markup=False)
    for f in result.funded:
        p = election.projects[f.project]
        console.print(f"\nFunded {p.id} ({p.name}) at step {f.step}:", markup=False)
        note = _funded_note(election, result, f)
        if note:
            console.print(f"  {note}", markup=False)
        if not f.payments:
            if p.cost:
                console.print(f"  {f.supporters:,} supporters; paid from the common budget.")
            continue
        for pay in f.payments:
            voters = [v for g in pay.groups for v in election.groups[g].voters]
            shown = ", ".join(voters[:5])
            if len(voters) > 5:
                shown += f" and {len(voters) - 5:,} more"
            console.print(
                f"  {len(voters):,} voters paid {_money(pay.amount)} each: {shown}", markup=False
            )
    reasons = _reasons(election, result)
    if result.unfunded:
        console.print("\nNot funded:")
    for u in result.unfunded:
        p = election.projects[u.project]
        console.print(f"  {p.id} ({p.name}): {reasons[u.project]}", markup=False)


@app.command("check")
def check_command(file: Path = typer.Argument(..., help="Pabulib .pb file")) -> None:
    """Validate a .pb file and list its problems with line numbers (exit 2 if any error)."""
    text = _load_text(file)
    issues = _with_progress(text, "checking", lambda cb: check_pabulib(text, progress=cb))
    console = Console(soft_wrap=True)
    for issue in issues:
        console.print(f"{file}:{issue}", markup=False, highlight=False)
    errors = sum(1 for i in issues if i.severity == "error")
    warnings = len(issues) - errors
    if errors:
        Console(stderr=True, soft_wrap=True).print(
            f"error: {file}: {errors} error(s), {warnings} warning(s)", markup=False
        )
        raise typer.Exit(2)
    console.print(f"{file}: OK ({warnings} warning(s))", markup=False, highlight=False)
