"""The certified float MES kernel (flows/pb/_mes.c) against the exact engine; no pabutools.

`mes-add1` runs MES at every per-voter budget B/n + k through the kernel (`_FloatMes`). Where
the kernel answers, its answer must be the exact engine's, funding order included; where it
cannot prove a decision it must give up (None) rather than guess, and `mes-add1` then uses
the exact engine for that budget.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import platform
import random
from dataclasses import replace
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.pb.model import Election, TieBreak, tie_key
from flows.pb.pabulib import parse_pabulib, read_pabulib
from flows.pb.rules import (
    _FloatMes,
    _kernel,
    _mes_result,
    _MesRun,
    _Prepared,
    _wsum,
    tally,
)
from tests.pb import DATA_DIR

# The kernel is an optional extension (test_kernel_optional.py: CI must have built it).
_mes: Any = _kernel()
pytestmark = pytest.mark.skipif(_mes is None, reason="the C kernel flows.pb._mes was not built")


def _instance(seed: int, n: int, costs: list[int], budget: int) -> Election:
    rng = random.Random(seed)
    m = rng.randint(3, 9)
    lines = ["META", "key;value", f"num_projects;{m}", f"num_votes;{n}", f"budget;{budget}"]
    lines += ["vote_type;approval", "PROJECTS", "project_id;cost"]
    lines += [f"p{j};{rng.choice(costs)}" for j in range(m)]
    lines += ["VOTES", "voter_id;vote"]
    for v in range(n):
        k = rng.randint(1, min(4, m))
        lines.append(f"{v};" + ",".join(f"p{j}" for j in sorted(rng.sample(range(m), k))))
    return parse_pabulib("\n".join(lines) + "\n")


def _compare(election: Election, budgets: list[Fraction], tie_break: TieBreak) -> int:
    """Check the kernel against the exact engine at each budget; return how often it gave up."""
    prep = _Prepared(election)
    key = tie_key(election, tie_break)
    kernel = _FloatMes(prep, key)
    gave_up = 0
    for x in budgets:
        got = kernel.run(x)
        if got is None:
            gave_up += 1
        else:
            assert got == _MesRun(prep, x, key).selected, (x, tie_break)
    return gave_up


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(1, 60),
    costs=st.sampled_from([[10, 20, 30], [10, 20, 30, 45, 60, 75], [7, 13, 101], [3, 3, 3]]),
    budget=st.integers(10, 200),
    tie_break=st.sampled_from(["cost-votes", "lexico"]),
)
def test_kernel_equals_exact_engine_or_gives_up(
    seed: int, n: int, costs: list[int], budget: int, tie_break: TieBreak
) -> None:
    election = _instance(seed, n, costs, budget)
    base = election.budget / n
    budgets = [base + k for k in range(25)] + [base + Fraction(k, 7) for k in range(1, 8)]
    _compare(election, budgets, tie_break)


def test_kernel_proves_structural_ties_with_the_tie_break() -> None:
    # every project has two supporters, so in round one every rho is exactly 1/2: the kernel
    # must prove the tie and let the tie-break choose, and the two tie-breaks choose apart
    text = "\n".join(
        ["META", "key;value", "num_projects;3", "num_votes;6", "budget;60"]
        + ["vote_type;approval", "PROJECTS", "project_id;cost", "c;20", "b;30", "a;40"]
        + ["VOTES", "voter_id;vote", "1;a", "2;a", "3;b", "4;b", "5;c", "6;c"]
    )
    election = parse_pabulib(text + "\n")
    prep = _Prepared(election)
    for tie_break, first in (("cost-votes", "c"), ("lexico", "a")):
        key = tie_key(election, tie_break)  # type: ignore[arg-type]
        got = _FloatMes(prep, key).run(Fraction(30))
        assert got is not None
        assert got == _MesRun(prep, Fraction(30), key).selected
        assert election.projects[got[0]].id == first


def test_kernel_gives_up_where_money_exactly_meets_the_cost() -> None:
    # two voters with 50 each and a project costing 100: affordable only with exact equality,
    # which floats cannot prove; the exact engine funds it
    text = "\n".join(
        ["META", "key;value", "num_projects;1", "num_votes;2", "budget;100"]
        + ["vote_type;approval", "PROJECTS", "project_id;cost", "p;100"]
        + ["VOTES", "voter_id;vote", "1;p", "2;p"]
    )
    election = parse_pabulib(text + "\n")
    prep = _Prepared(election)
    key = tie_key(election, "cost-votes")
    assert _FloatMes(prep, key).run(Fraction(50)) is None
    assert _MesRun(prep, Fraction(50), key).selected == [0]
    assert tally(election, "mes-add1").selected == (0,)


def _exact_add1(election: Election, tie_break: TieBreak) -> tuple[list[int], Fraction]:
    """mes-add1 by its definition, with the exact engine at every step."""
    prep = _Prepared(election)
    key = tie_key(election, tie_break)
    base = election.budget / election.num_voters
    k = 0
    kept = _MesRun(prep, base, key)
    while k + 1 <= math.floor(election.budget):
        nxt = _MesRun(prep, base + k + 1, key)
        if sum((prep.costs[p] for p in nxt.selected), Fraction(0)) > election.budget:
            break
        k, kept = k + 1, nxt
    return kept.selected, base + k


@pytest.mark.parametrize("seed", range(12))
def test_mes_add1_equals_the_plain_exact_definition(seed: int) -> None:
    rng = random.Random(seed)
    election = _instance(seed, rng.randint(5, 40), [10, 20, 30, 45, 60, 75], rng.randint(40, 120))
    for tie_break in ("cost-votes", "lexico"):
        result = tally(election, "mes-add1", tie_break)  # type: ignore[arg-type]
        selected, x = _exact_add1(election, tie_break)  # type: ignore[arg-type]
        assert list(result.selected) == selected
        assert result.voter_budget == x
        # and its payments are those of a fresh exact run at that budget
        prep = _Prepared(election)
        fresh = _MesRun(prep, x, tie_key(election, tie_break))  # type: ignore[arg-type]
        expected = _mes_result(election, prep, fresh, "mes-add1", tie_break, result.add1_runs)  # type: ignore[arg-type]
        assert result.add1_start == election.budget / election.num_voters
        plain = replace(result, add1_start=None, add1_next_budget=None, add1_next_cost=None)
        assert plain == expected


@pytest.mark.parametrize(
    ("name", "every"),
    [("Netherlands_Assen_2024", 1), ("Poland_Wieliczka_2023_Green_Budget", 4)],
)
def test_kernel_equals_exact_engine_on_shared_files(name: str, every: int) -> None:
    path = DATA_DIR / f"{name}.pb"
    if not path.is_file():
        pytest.skip(f"shared Pabulib data not found at {path}")
    election = read_pabulib(path)
    result = tally(election, "mes-add1")
    assert result.voter_budget is not None
    base = election.budget / election.num_voters
    last = int(result.voter_budget - base) + 1  # up to the first budget that does not fit
    budgets = [base + k for k in range(0, last + 1, every)]
    assert _compare(election, budgets, "cost-votes") == 0  # no give-ups on real data


def test_kernel_rejects_malformed_arrays() -> None:
    text = "\n".join(
        ["META", "key;value", "num_projects;1", "num_votes;2", "budget;100"]
        + ["vote_type;approval", "PROJECTS", "project_id;cost", "p;100"]
        + ["VOTES", "voter_id;vote", "1;p", "2;p"]
    )
    prep = _Prepared(parse_pabulib(text + "\n"))
    k = _FloatMes(prep, tie_key(prep.election, "cost-votes"))
    args = [k.ptr, k.idx, k.rank, k.w, k.clo, k.chi, k.wtot, k.alive, 60.0, 60.0, k.lo, k.hi, k.sel]
    assert _mes.run(*args) == 1  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ptr"):
        _mes.run(k.ptr.astype(np.float64), *args[1:])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lengths"):
        _mes.run(*args[:3], np.zeros(5), *args[4:])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        _mes.run(k.ptr, np.array([7], dtype=np.int64), *args[2:])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="w: expected"):  # big-endian, read as native otherwise
        _mes.run(*args[:3], k.w.astype(">f8"), *args[4:])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rank: expected"):  # unsigned would reorder ties
        _mes.run(*args[:2], k.rank.astype(np.uint64), *args[3:])  # type: ignore[arg-type]
    for x_lo, x_hi in ((math.nan, 60.0), (-1.0, 60.0), (61.0, 60.0), (60.0, math.inf)):
        with pytest.raises(ValueError, match="x_lo"):
            _mes.run(*args[:8], x_lo, x_hi, *args[10:])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clo"):
        _mes.run(*args[:4], k.chi + 1, *args[5:])  # type: ignore[arg-type]
    assert _mes.run(*args) == 1  # and nothing above changed its state


def test_kernel_gives_up_under_another_rounding_mode() -> None:
    # a library in the process could switch the FPU's rounding; the kernel's proof needs
    # round-to-nearest, so it must then leave every run to the exact engine
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("FE_UPWARD's value is x86-64's")
    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    fe_upward = 0x800  # x86-64 glibc's FE_UPWARD
    election = _instance(1, 30, [10, 20, 30], 100)
    prep = _Prepared(election)
    kernel = _FloatMes(prep, tie_key(election, "cost-votes"))
    x = election.budget / 30 + 3
    assert kernel.run(x) is not None
    if libm.fesetround(fe_upward) != 0:
        pytest.skip("cannot switch the rounding mode here")
    try:
        assert kernel.run(x) is None
    finally:
        libm.fesetround(0)
    assert kernel.run(x) == _MesRun(prep, x, tie_key(election, "cost-votes")).selected


def _election(costs: dict[str, int], ballots: list[str], budget: int) -> Election:
    lines = ["META", "key;value", f"num_projects;{len(costs)}", f"num_votes;{len(ballots)}"]
    lines += [f"budget;{budget}", "vote_type;approval", "PROJECTS", "project_id;cost"]
    lines += [f"{p};{c}" for p, c in costs.items()]
    lines += ["VOTES", "voter_id;vote"] + [f"{v};{b}" for v, b in enumerate(ballots)]
    return parse_pabulib("\n".join(lines) + "\n")


def test_mes_add1_when_everything_fits_keeps_the_last_step_without_walking() -> None:
    election = _election({"a": 20, "b": 15, "c": 10}, ["a,b", "a", "c", "b,c"], 5000)
    result = tally(election, "mes-add1")
    selected, x = _exact_add1(election, "cost-votes")
    assert (list(result.selected), result.voter_budget) == (selected, x)
    assert x == Fraction(5000, 4) + 5000 and result.add1_runs == 1  # one exact run, no walk


def test_mes_add1_jumps_while_the_outcome_provably_stays_the_same() -> None:
    # 'big' has one supporter and costs 1000: only at a per-voter budget of 1000 can it be
    # afforded; until then the outcome is {a, b} once any voter can pay for both alone
    election = _election(
        {"a": 10, "b": 10, "big": 1000},
        ["a", "a,b", "a,b", "b", "a,b", "b,big"],
        100,
    )
    result = tally(election, "mes-add1")
    selected, x = _exact_add1(election, "cost-votes")
    assert (list(result.selected), result.voter_budget) == (selected, x)
    assert result.add1_runs < 10  # instead of the ~980 steps the exact walk took


# ------------------------------------------------------------------ plain mes via the kernel


def _exact_mes(election: Election, tie_break: TieBreak) -> object:
    """Plain MES by the exact engine alone (it searches every round), as a TallyResult."""
    prep = _Prepared(election)
    x = election.budget / election.num_voters
    run = _MesRun(prep, x, tie_key(election, tie_break))
    return _mes_result(election, prep, run, "mes", tie_break, 0)


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(1, 60),
    costs=st.sampled_from([[10, 20, 30], [10, 20, 30, 45, 60, 75], [7, 13, 101], [3, 3, 3]]),
    budget=st.integers(10, 200),
    tie_break=st.sampled_from(["cost-votes", "lexico"]),
)
def test_plain_mes_through_the_kernel_equals_the_exact_engine(
    seed: int, n: int, costs: list[int], budget: int, tie_break: TieBreak
) -> None:
    # selection, funding order, every payment and every unfunded project's money left
    election = _instance(seed, n, costs, budget)
    assert tally(election, "mes", tie_break) == _exact_mes(election, tie_break)


def test_plain_mes_where_the_kernel_gives_up_uses_the_exact_engine() -> None:
    text = "\n".join(
        ["META", "key;value", "num_projects;1", "num_votes;2", "budget;100"]
        + ["vote_type;approval", "PROJECTS", "project_id;cost", "p;100"]
        + ["VOTES", "voter_id;vote", "1;p", "2;p"]
    )
    election = parse_pabulib(text + "\n")
    assert tally(election, "mes") == _exact_mes(election, "cost-votes")
    assert tally(election, "mes").selected == (0,)


APPROVAL_FILES = [
    "France_Toulouse_2024",
    "Netherlands_Assen_2024",
    "Poland_Swiecie_2023",
    "Poland_Warszawa_2020_Bielany",
    "Poland_Warszawa_2026",
    "Poland_Wieliczka_2023_Green_Budget",
    "US_Stanford_Dataset_PB_Cambridge_2019_vote_approvals",
    "US_Stanford_Dataset_PB_Chicago_39th_Ward_2021_vote_knapsacks",
]


@pytest.mark.parametrize("name", APPROVAL_FILES)
def test_plain_mes_through_the_kernel_equals_the_exact_engine_on_shared_files(name: str) -> None:
    path = DATA_DIR / f"{name}.pb"
    if not path.is_file():
        pytest.skip(f"shared Pabulib data not found at {path}")
    election = read_pabulib(path)
    assert tally(election, "mes") == _exact_mes(election, "cost-votes")


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(1, 40),
    steps=st.lists(st.integers(0, 30), min_size=1, max_size=6),
    tie_break=st.sampled_from(["cost-votes", "lexico"]),
)
def test_replaying_the_kernels_order_gives_the_exact_runs_payments(
    seed: int, n: int, steps: list[int], tie_break: TieBreak
) -> None:
    election = _instance(seed, n, [10, 20, 30, 45, 60, 75], 120)
    prep = _Prepared(election)
    key = tie_key(election, tie_break)
    kernel = _FloatMes(prep, key)
    for k in steps:
        x = election.budget / n + k
        order = kernel.run(x)
        if order is None:
            continue
        replay, search = _MesRun(prep, x, key, order), _MesRun(prep, x, key)
        assert replay.selected == search.selected
        def rounds(run: _MesRun) -> list[object]:
            return [(r.project, r.t, r.paid, r.groups.tolist(), r.inv.tolist()) for r in run.rounds]

        assert rounds(replay) == rounds(search)
        assert replay.classes.values() == search.classes.values()


@pytest.mark.parametrize(
    "x",
    [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.0, -1.0, 0.1, 1e300, -1e300,
     1.7976931348623157e308, -1.7976931348623157e308, math.inf, -math.inf, 123456.789],
)
def test_the_kernels_rounding_steps_are_nextafter(x: float) -> None:
    # the proof rounds every bound outwards with these; they are inlined in C for speed
    down, up = _mes.neighbours(x)
    assert (down, up) == (math.nextafter(x, -math.inf), math.nextafter(x, math.inf))
    assert math.copysign(1.0, down) == math.copysign(1.0, math.nextafter(x, -math.inf))
    assert math.copysign(1.0, up) == math.copysign(1.0, math.nextafter(x, math.inf))


@settings(max_examples=300, deadline=None)
@given(x=st.floats(allow_nan=False))
def test_the_kernels_rounding_steps_are_nextafter_everywhere(x: float) -> None:
    assert _mes.neighbours(x) == (math.nextafter(x, -math.inf), math.nextafter(x, math.inf))


@settings(max_examples=200, deadline=None)
@given(
    terms=st.lists(
        st.tuples(st.integers(1, 10**6), st.fractions(min_value=0, max_denominator=10**9)),
        max_size=40,
    )
)
def test_exact_weighted_sums(terms: list[tuple[int, Fraction]]) -> None:
    weights, values = [w for w, _ in terms], [v for _, v in terms]
    assert _wsum(weights, values) == sum((w * v for w, v in terms), Fraction(0))


def _money_left_from_payments(election: Election, rule: str) -> None:
    """Each unfunded project's money left is what its supporters had (the per-voter budget)
    less what they paid: an account kept apart from the engine's budget classes."""
    result = tally(election, rule)  # type: ignore[arg-type]
    assert result.voter_budget is not None
    paid = [Fraction(0)] * len(election.groups)
    for f in result.funded:
        for pay in f.payments:
            for g in pay.groups:
                paid[g] += pay.amount
    for u in result.unfunded:
        if u.reason != "not-enough-money":
            continue
        backers = [g for g, group in enumerate(election.groups) if u.project in group.projects]
        left = sum(
            (election.groups[g].weight * (result.voter_budget - paid[g]) for g in backers),
            Fraction(0),
        )
        assert u.money_left == left


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(1, 60),
    costs=st.sampled_from([[10, 20, 30], [10, 20, 30, 45, 60, 75], [7, 13, 101]]),
    budget=st.integers(10, 200),
    rule=st.sampled_from(["mes", "mes-add1"]),
)
def test_money_left_is_the_budget_less_the_payments(
    seed: int, n: int, costs: list[int], budget: int, rule: str
) -> None:
    _money_left_from_payments(_instance(seed, n, costs, budget), rule)


@pytest.mark.parametrize(
    "name",
    ["Poland_Wieliczka_2023_Green_Budget", "US_Stanford_Dataset_PB_Cambridge_2019_vote_approvals"],
)
def test_money_left_is_the_budget_less_the_payments_on_shared_files(name: str) -> None:
    path = DATA_DIR / f"{name}.pb"
    if not path.is_file():
        pytest.skip(f"shared Pabulib data not found at {path}")
    _money_left_from_payments(read_pabulib(path), "mes-add1")
