"""The incremental Add1 machinery against plain from-scratch MES runs (no pabutools needed).

`mes-add1` reuses the rounds of the previous run that are still valid at the next budget
(`_MesRun.resumed`) and evaluates reused payments lazily (`_Round.at_x`); these tests check
that this gives exactly what a fresh exact MES run gives at every budget the search visits,
and at budgets it skips.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.pb.model import Election, tie_key
from flows.pb.pabulib import parse_pabulib, read_pabulib
from flows.pb.rules import _mes_result, _MesRun, _Prepared, tally
from tests.pb import DATA_DIR


def _instance(seed: int, n: int) -> Election:
    rng = random.Random(seed)
    m = rng.randint(3, 9)
    costs = [rng.choice([10, 20, 30, 45, 60, 75]) for _ in range(m)]
    budget = rng.randint(40, 200)
    lines = ["META", "key;value", f"num_projects;{m}", f"num_votes;{n}", f"budget;{budget}"]
    lines += ["vote_type;approval", "PROJECTS", "project_id;cost"]
    lines += [f"p{j};{c}" for j, c in enumerate(costs)]
    lines += ["VOTES", "voter_id;vote"]
    for v in range(n):
        k = rng.randint(1, min(4, m))
        lines.append(f"{v};" + ",".join(f"p{j}" for j in sorted(rng.sample(range(m), k))))
    return parse_pabulib("\n".join(lines) + "\n")


def _check_chain(election: Election, steps: int) -> None:
    """Walk the Add1 search for `steps` visits; compare each run and each skipped budget."""
    prep = _Prepared(election)
    key = tie_key(election, "cost-votes")
    base = election.budget / election.num_voters
    run = _MesRun(prep, base, key, events=True)
    k = 0
    for _ in range(steps):
        rem = run.remaining()
        if rem == math.inf or k > math.floor(election.budget):
            return
        step = max(1, math.ceil(rem))
        # the skipped budgets give the same outcome
        for skipped in range(k + 1, min(k + step, k + 4)):
            fresh = _MesRun(prep, base + skipped, key, events=False)
            assert fresh.selected == run.selected
        k += step
        run = run.resumed(base + k)
        fresh = _MesRun(prep, base + k, key, events=True)
        assert run.selected == fresh.selected
        ours = _mes_result(election, prep, run, "mes-add1", "cost-votes", 0)
        theirs = _mes_result(election, prep, fresh, "mes-add1", "cost-votes", 0)
        assert ours.funded == theirs.funded  # same payments, evaluated lazily
        assert ours.unfunded == theirs.unfunded  # same money left


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(5, 80))
def test_resumed_runs_equal_fresh_runs(seed: int, n: int) -> None:
    _check_chain(_instance(seed, n), steps=25)


def test_resumed_runs_equal_fresh_runs_on_assen() -> None:
    path = DATA_DIR / "Netherlands_Assen_2024.pb"
    if not path.is_file():
        pytest.skip(f"shared Pabulib data not found at {path}")
    _check_chain(read_pabulib(path), steps=60)


def test_add1_result_equals_fresh_run_at_its_budget() -> None:
    for seed in range(30):
        election = _instance(seed, 40)
        result = tally(election, "mes-add1")
        assert result.voter_budget is not None
        prep = _Prepared(election)
        fresh = _MesRun(prep, result.voter_budget, tie_key(election, "cost-votes"), events=False)
        expected = _mes_result(election, prep, fresh, "mes-add1", "cost-votes", result.add1_runs)
        assert result == expected
        assert isinstance(result.voter_budget, Fraction)
