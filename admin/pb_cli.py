"""`civicbot pb`: tally and check Pabulib `.pb` files.

    civicbot pb tally FILE.pb [--rule mes-add1] [--tie-break cost-votes|lexico] [--json]
                              [--explain] [--max-runs N] [--fund-free-projects]
    civicbot pb check FILE.pb

Problems with the file are reported as one line on stderr with exit status 2.
"""

from __future__ import annotations

import json
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
from flows.pb.report import Money, decimal_amount, explain_lines, plural, result_json
from flows.pb.rules import (
    DEFAULT_MAX_RUNS,
    RuleNotApplicable,
    TallyResult,
    TallyTooLong,
    kernel_available,
    parse_rule,
    tally,
)

app = typer.Typer(
    help="Participatory budgeting: tally and check Pabulib (.pb) vote files.",
    no_args_is_help=True,
)

_BIG_FILE_LINES = 20_000

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


@app.command("tally")
def tally_command(
    file: Path = typer.Argument(..., help="Pabulib .pb file"),
    rule: str = typer.Option(
        "mes-add1",
        "--rule",
        help="greedy, mes, mes-add1 or phragmen; Pabulib's names (equalshares, "
        "equalshares/add1) too",
    ),
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
    no_kernel: bool = typer.Option(
        False,
        "--no-kernel",
        help="take every decision with the exact engine alone (slower; what happens anyway "
        "when the C kernel was not built)",
    ),
    fund_free: bool = typer.Option(
        False,
        "--fund-free-projects",
        help="MES rules: fund every free project named on a ballot outside the vote (by "
        "default MES with cost satisfaction gives free projects no weight, as pabutools does)",
    ),
) -> None:
    """Compute which projects are funded."""
    try:
        chosen = parse_rule(rule)
    except ValueError as e:
        raise _fail(str(e)) from e
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
    if not no_kernel and not kernel_available() and _uses_kernel(chosen, election):
        Console(stderr=True, soft_wrap=True).print(
            "warning: the PB tally's C kernel (flows/pb/_mes.c) was not built (no C compiler "
            "when civicbot was installed?): the exact engine tallies alone, with the same "
            "result, more slowly (mes-add1 on a large file: minutes rather than seconds)",
            markup=False,
            highlight=False,
        )
    try:
        result = tally(
            election,
            chosen,
            _as_tie_break(tie_break),
            fund_free=fund_free,
            max_runs=max_runs,
            kernel=not no_kernel,
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
        typer.echo(json.dumps(result_json(election, result, explain), ensure_ascii=False))
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


def _uses_kernel(rule: str, election: Election) -> bool:
    return rule in ("mes", "mes-add1") and election.vote_type == "approval"


def _as_tie_break(tb: str) -> TieBreak:
    return "lexico" if tb == "lexico" else "cost-votes"


def _print_table(election: Election, result: TallyResult, explain: bool) -> None:
    console = Console(soft_wrap=True)
    money = Money(election)
    title = (
        f"{result.rule}: {len(result.selected)} of {result.projects} projects funded, "
        f"{money(result.cost)} of {money(result.budget)} ({plural(result.voters, 'voter')})"
    )
    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("project")
    table.add_column("name")
    table.add_column(f"cost ({money.currency})" if money.currency else "cost", justify="right")
    table.add_column("votes", justify="right")
    for f in result.funded:
        p = election.projects[f.project]
        cost = f"{decimal_amount(p.cost):,}"
        table.add_row(str(f.step), p.id, p.name[:60], cost, f"{f.supporters:,}")
    console.print(table)
    if explain:
        console.print("\n".join(explain_lines(election, result)), markup=False, highlight=False)


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
