"""The C kernel is optional (issue #9): without it every tally is the exact engine's, with the
same result; the CLI says once that it is slower. CI must build it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from admin.pb_cli import app
from flows.pb.pabulib import read_pabulib
from flows.pb.rules import Rule, kernel_available, tally
from tests.pb import DATA_DIR

CASES = Path(__file__).resolve().parent / "cases"
REPO = Path(__file__).resolve().parents[2]


def test_ci_builds_the_kernel() -> None:
    # the extension is optional at install, so a failed build would only show as slowness
    if not os.environ.get("CI"):
        pytest.skip("checked in CI")
    assert kernel_available(), "flows.pb._mes was not built: is a C compiler installed?"


def _files() -> list[Path]:
    shared = [
        DATA_DIR / f"{n}.pb"
        for n in ("Netherlands_Assen_2024", "US_Stanford_Dataset_PB_Cambridge_2019_vote_approvals")
    ]
    return sorted(CASES.glob("*.pb")) + [p for p in shared if p.is_file()]


@pytest.mark.skipif(not kernel_available(), reason="the kernel was not built: nothing to compare")
@pytest.mark.parametrize("rule", ["mes", "mes-add1"])
@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_the_exact_engine_alone_gives_the_same_result(path: Path, rule: Rule) -> None:
    election = read_pabulib(path)
    if election.vote_type != "approval" and rule == "mes-add1":
        pytest.skip("mes-add1 needs approval ballots")
    # everything: selection, order, payments, money left, the Add1 budgets and runs
    assert tally(election, rule, kernel=False) == tally(election, rule)


def test_cli_no_kernel_switch_gives_the_same_json() -> None:
    path = CASES / "free_removed_by_city.pb"
    runner = CliRunner()
    args = ["tally", str(path), "--json", "--explain"]
    with_kernel = runner.invoke(app, args)
    without = runner.invoke(app, [*args, "--no-kernel"])
    assert without.exit_code == 0, without.output
    assert json.loads(without.stdout) == json.loads(with_kernel.stdout)
    assert "warning" not in without.stderr  # asked for, so nothing to warn about


# A Python started with the compiled module made unimportable, as on a machine where it was
# never built (no C compiler): the real CLI, in a child process.
_WITHOUT_KERNEL = """
import sys
class NoKernel:
    def find_spec(self, name, path=None, target=None):
        if name == "flows.pb._mes":
            raise ImportError("not built")
        return None
sys.meta_path.insert(0, NoKernel())
from bot.cli import main
sys.argv = ["civicbot", *sys.argv[1:]]
main()
"""


def test_without_the_kernel_the_cli_warns_once_and_gives_the_same_result() -> None:
    path = CASES / "free_removed_by_city.pb"
    args = ["pb", "tally", str(path), "--rule", "mes-add1", "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", _WITHOUT_KERNEL, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    warnings = [line for line in child.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "was not built" in warnings[0] and "slowly" in warnings[0]
    normal = CliRunner().invoke(app, args[1:])
    assert json.loads(child.stdout) == json.loads(normal.stdout)
