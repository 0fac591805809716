"""Raking (flows/needs/raking.py) against independent answers: weightipy (a maintained RIM
weighting library, a test-only dependency) on complete data, and exact solutions worked
out by hand for small cases, including respondents who preferred not to say and the cap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flows.needs.raking import Margin, rake
from flows.needs.report import Responses, Scope, build_report, competition_ranks
from storage.needs import PREFER_NOT, CensusRow


def margin(name: str, codes: list[int], targets: list[float]) -> Margin:
    return Margin(name, np.array(codes, dtype=np.int64), np.array(targets, dtype=np.float64))


def test_one_dimension_leaves_those_who_did_not_say_unchanged() -> None:
    # Four gave a group (three in A, one in B, targets 50/50); one preferred not to say.
    # Their total weight (4) is shared 2/2: A's three get 2/3 each, B's one gets 2; the
    # fifth keeps 1. The mean is already 1.
    raked = rake([margin("age", [0, 0, 0, 1, -1], [0.5, 0.5])], 5)
    assert np.allclose(raked.weights, [2 / 3, 2 / 3, 2 / 3, 2, 1], atol=1e-12)
    assert raked.converged and raked.max_margin_error < 1e-12
    assert math.isclose(raked.efficiency, 25 / (5 * (3 * 4 / 9 + 4 + 1)))
    assert math.isclose(raked.max_weight, 2)


def test_two_by_two_matches_the_exact_solution() -> None:
    # Cells (ward, age) with counts n; targets for rows and columns. Raking keeps the odds
    # ratio of the table, so the fitted count t of cell (0, 0) solves
    # t (R1 - C0 + t) = theta (R0 - t) (C0 - t): a quadratic.
    counts = {(0, 0): 30, (0, 1): 10, (1, 0): 20, (1, 1): 40}
    n = sum(counts.values())
    rows, cols = [0.3, 0.7], [0.6, 0.4]
    r0, r1, c0 = rows[0] * n, rows[1] * n, cols[0] * n
    theta = counts[0, 0] * counts[1, 1] / (counts[0, 1] * counts[1, 0])
    a, b, c = 1 - theta, r1 - c0 + theta * (r0 + c0), -theta * r0 * c0
    roots = [(-b + s * math.sqrt(b * b - 4 * a * c)) / (2 * a) for s in (1, -1)]
    t = next(x for x in roots if 0 < x < min(r0, c0))
    fitted = {(0, 0): t, (0, 1): r0 - t, (1, 0): c0 - t, (1, 1): r1 - c0 + t}
    ward, age, expected = [], [], []
    for (i, j), k in counts.items():
        ward += [i] * k
        age += [j] * k
        expected += [fitted[i, j] / k] * k
    raked = rake([margin("ward", ward, rows), margin("age", age, cols)], n, cap=100)
    assert raked.converged
    assert np.allclose(raked.weights, expected, atol=1e-8)


def test_the_cap_holds_even_when_the_margins_cannot() -> None:
    # One respondent of ten in a group that is half the population needs a weight of 5.
    raked = rake([margin("age", [0] * 9 + [1], [0.5, 0.5])], 10, cap=5)
    assert raked.converged and math.isclose(raked.max_weight, 5, rel_tol=1e-9)
    capped = rake([margin("age", [0] * 9 + [1], [0.5, 0.5])], 10, cap=4)
    assert not capped.converged
    assert capped.max_weight <= 4 * (1 + 1e-9)
    assert capped.max_margin_error > 0.01


def test_a_group_nobody_is_in_is_reported_not_hidden() -> None:
    raked = rake([margin("age", [0, 0, 1, 1], [0.4, 0.4, 0.2])], 4)
    assert not raked.converged
    assert math.isclose(raked.max_margin_error, 0.2)
    assert np.allclose(raked.weights, 1)  # the others share the missing group's target


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_agrees_with_weightipy_on_complete_data() -> None:
    pd = pytest.importorskip("pandas")
    wp = pytest.importorskip("weightipy")
    rng = np.random.default_rng(2027)
    n = 2000
    sizes = {"ward": 6, "age": 4, "ethnic": 5}
    codes = {name: rng.integers(0, k, n) for name, k in sizes.items()}
    codes["age"] = np.where(rng.random(n) < 0.3, 0, codes["age"])  # skewed, like real replies
    targets = {name: rng.dirichlet(np.ones(k) * 5) for name, k in sizes.items()}
    frame = pd.DataFrame(codes)
    scheme = wp.scheme_from_dict(
        {name: {g: float(100 * s) for g, s in enumerate(targets[name])} for name in sizes},
        rim_params={"convcrit": 1e-10, "max_iterations": 10_000},
    )
    theirs = wp.weight_dataframe(frame, scheme, weight_column="w")["w"].to_numpy()
    ours = rake([Margin(name, codes[name], targets[name]) for name in sizes], n, cap=1000)
    assert ours.converged
    assert np.abs(ours.weights - theirs).max() < 1e-4


def test_ranks_share_ties_and_skip() -> None:
    assert competition_ranks([5, 9, 5, 1]) == [2, 1, 2, 4]
    assert competition_ranks([0.1 + 0.2, 0.3]) == [1, 1]


def test_borda_counts_a_repeated_pick_once_and_leaves_out_a_dimension_without_census() -> None:
    scope = Scope("s", ("W1", "W2"), 3, ("age_band", "tenure"), ("a", "b", "c", "d"))
    responses = Responses(
        wards=["W1", "W1", "W2"],
        picks=[["a", "a", "b"], ["c"], ["b", "c", "a", "d"]],
        demographics=[{"age_band": "young", "tenure": "rent"}, {"age_band": PREFER_NOT}, None],
    )
    census = [
        CensusRow("W1", "age_band", "young", 100),
        CensusRow("W1", "age_band", "old", 100),
        CensusRow("W2", "age_band", "young", 50),
        CensusRow("W2", "age_band", "old", 250),
    ]
    report = build_report(scope, responses, census, {"W1": "One"}, threshold=0.8).report
    scores = {n["category"]: (n["score"], n["responses"], n["rank"]) for n in report["needs"]}
    # a a b -> a 3, b 2; c -> c 3; b c a (d past the 3 picks) -> b 3, c 2, a 1
    assert scores == {"a": (4, 2, 3), "b": (5, 2, 1), "c": (5, 2, 1), "d": (0, 0, 4)}
    assert report["weights"]["dimensions"] == ["ward", "age_band"]
    assert report["weights"]["left_out"] == [
        {"dimension": "tenure", "reason": "no census loaded for it"}
    ]
    tenure = [g for g in report["groups"] if g["dimension"] == "tenure"]
    assert tenure == [
        {
            "dimension": "tenure",
            "group": "rent",
            "responses": 1,
            "share": 1.0,
            "population_share": None,
            "ratio": None,
            "under_represented": False,
            "weighted_share": None,
        }
    ]
    age = {g["group"]: g for g in report["groups"] if g["dimension"] == "age_band"}
    assert age["young"]["responses"] == 1 and age["young"]["share"] == 1.0
    assert math.isclose(age["old"]["population_share"], 350 / 500)
    assert age["old"]["under_represented"] and not age["young"]["under_represented"]
    assert report["dimensions"][0] == {
        "dimension": "age_band",
        "census": True,
        "weighted": True,
        "answered": 1,
        "prefer_not_to_say": 1,
        "not_answered": 1,
    }
