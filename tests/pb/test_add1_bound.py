"""mes-add1 never hangs a worker: provable jumps over long stretches, and a bound on the work.

Issue #17 item 3: three voters, two projects of cost 10^12 approved by voters 1 and 2, one of
cost 3 approved by voter 3, budget 10^12 * 2 - 1. Step by step, Add1 would walk about
3.3 * 10^11 steps before the second big project becomes affordable.
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from admin.pb_cli import app
from flows.pb.model import Election, TieBreak, tie_key
from flows.pb.pabulib import parse_pabulib, read_pabulib
from flows.pb.rules import TallyTooLong, _MesRun, _Prepared, _Stretch, selected_ids, tally
from tests.pb import pabutools_mes_at_step

HUGE = Path(__file__).resolve().parent / "cases" / "add1_huge_walk.pb"


def _huge(big: int) -> str:
    text = HUGE.read_text(encoding="utf-8")
    return text.replace("1000000000000", str(big)).replace("1999999999999", str(2 * big - 1))


@pytest.mark.parametrize("tie_break", ["cost-votes", "lexico"])
@pytest.mark.parametrize("big", [10**6, 10**12])
def test_the_huge_walk_is_one_jump(big: int, tie_break: TieBreak, tmp_path: Path) -> None:
    path = tmp_path / "huge.pb"
    path.write_text(_huge(big), encoding="utf-8")
    election = read_pabulib(path)
    result = tally(election, "mes-add1", tie_break)
    assert selected_ids(election, result) == ["a", "c"]
    assert result.add1_runs < 40  # instead of ~big/3 steps
    # the last budget at which b is not yet affordable: voters 1 and 2 pay big/2 for a, and
    # b needs 2 * (x - big/2) >= big, i.e. x >= big
    assert result.voter_budget is not None and result.voter_budget < big <= result.voter_budget + 1
    assert result.add1_next_budget == result.voter_budget + 1
    assert result.add1_next_cost == 2 * big + 3
    # pabutools cannot walk there, but agrees at both ends of our last step
    k = result.voter_budget - election.budget / 3
    assert k.denominator == 1
    assert pabutools_mes_at_step(path, int(k), tie_break) == ["a", "c"]
    assert pabutools_mes_at_step(path, int(k) + 1, tie_break) == ["a", "b", "c"]


def test_the_work_is_bounded_with_a_typed_error() -> None:
    election = parse_pabulib(_huge(10**12))
    with pytest.raises(TallyTooLong) as info:
        tally(election, "mes-add1", max_runs=5)  # fewer than the jump needs
    err = info.value
    assert (err.rule, err.runs, err.max_runs) == ("mes-add1", 5, 5)
    assert err.start == election.budget / 3 and err.voter_budget == err.start + 5
    assert "stopped after 5 MES runs" in str(err)


def test_cli_says_which_file_and_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["tally", str(HUGE), "--rule", "mes-add1", "--max-runs", "5"])
    assert result.exit_code == 2
    assert str(HUGE) in result.output and "--max-runs" in result.output
    assert "Traceback" not in result.output
    ok = CliRunner().invoke(app, ["tally", str(HUGE), "--rule", "mes-add1", "--json"])
    assert ok.exit_code == 0 and '"selected": ["a", "c"]' in ok.stdout


# ------------------------------------------------ _Stretch: the interval must be right


def _random_election(rng: random.Random) -> Election:
    m = rng.randint(2, 6)
    n = rng.randint(1, 9)
    costs = [rng.choice([0, 5, 10, 20, 30, 45, 200]) for _ in range(m)]
    lines = ["META", "key;value", f"budget;{rng.randint(20, 150)}", "vote_type;approval"]
    lines += ["PROJECTS", "project_id;cost"] + [f"p{j};{c}" for j, c in enumerate(costs)]
    lines += ["VOTES", "voter_id;vote"]
    for v in range(n):
        chosen = sorted(rng.sample(range(m), rng.randint(0, m)))
        lines.append(f"{v};" + ",".join(f"p{j}" for j in chosen))
    return parse_pabulib("\n".join(lines) + "\n")


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    step=st.sampled_from([Fraction(1), Fraction(1, 3), Fraction(7, 2)]),
    tie_break=st.sampled_from(["cost-votes", "lexico"]),
)
def test_stretch_interval_holds_the_same_outcome(
    seed: int, step: Fraction, tie_break: TieBreak
) -> None:
    rng = random.Random(seed)
    election = _random_election(rng)
    prep = _Prepared(election)
    key = tie_key(election, tie_break)
    x = Fraction(rng.randint(0, 400), rng.choice([1, 2, 3, 7]))
    stretch = _Stretch(prep, x, key)
    assert stretch.selected == _MesRun(prep, x, key).selected
    # every budget in the interval (sampled, ends included) gives the same funding order
    hi = stretch.hi if stretch.hi is not None else x + 50
    y = x
    while y <= hi:
        if stretch.hi_open and y == stretch.hi:
            break
        assert _MesRun(prep, y, key).selected == stretch.selected, (y, stretch.hi)
        y += step
    if stretch.hi is not None and not stretch.hi_open:
        assert _MesRun(prep, stretch.hi, key).selected == stretch.selected


def _long_walk(seed: int) -> Election:
    """Elections where one dear project keeps Add1 walking with the same outcome."""
    rng = random.Random(seed)
    m, n = rng.randint(3, 6), rng.randint(3, 12)
    costs = [rng.choice([10, 20, 30]) for _ in range(m - 1)] + [rng.choice([300, 450, 900])]
    lines = ["META", "key;value", f"budget;{rng.randint(200, 700)}", "vote_type;approval"]
    lines += ["PROJECTS", "project_id;cost"] + [f"p{j};{c}" for j, c in enumerate(costs)]
    lines += ["VOTES", "voter_id;vote"]
    for v in range(n):
        chosen = sorted(rng.sample(range(m - 1), rng.randint(1, min(3, m - 1))))
        if v < 2:
            chosen.append(m - 1)  # the dear project has one or two supporters
        lines.append(f"{v};" + ",".join(f"p{j}" for j in chosen))
    return parse_pabulib("\n".join(lines) + "\n")


@pytest.mark.parametrize("seed", range(16))
def test_mes_add1_with_jumps_equals_the_plain_exact_definition(seed: int) -> None:
    from tests.pb.test_mes_kernel import _exact_add1

    election = _long_walk(seed)
    for tie_break in ("cost-votes", "lexico"):
        result = tally(election, "mes-add1", tie_break)  # type: ignore[arg-type]
        selected, x = _exact_add1(election, tie_break)  # type: ignore[arg-type]
        assert (list(result.selected), result.voter_budget) == (selected, x)
