"""Raking (iterative proportional fitting) of respondent weights to census margins, in numpy.

Each margin is one dimension (ward, age band, ...): a group code per respondent (-1 when the
respondent did not give one: "prefer not to say", or not asked) and the census share of
each group. One raking step on a dimension adjusts only the respondents who gave it, so that
their weighted shares match the census among them; their total weight stays as it was, and
everyone else's weight is unchanged in that step. Steps go round the dimensions until every
margin matches. Weights are kept at a mean of 1 and capped at ``cap`` times the mean (the
cap is applied after each round, and the rounds go on until margins and cap both hold, or
``max_rounds``).

A group with census population but no respondents can't be matched: the other groups of
that dimension share its target in proportion, and the margin error reported shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

CONVERGED_ERROR = 1e-6  # the largest margin error that counts as matched
MAX_ROUNDS = 200


@dataclass(frozen=True)
class Margin:
    name: str
    codes: NDArray[np.int64]  # group index per respondent, -1 when not given
    targets: NDArray[np.float64]  # census share per group (sums to 1)


@dataclass(frozen=True)
class Raked:
    weights: NDArray[np.float64]  # one per respondent, mean 1
    converged: bool
    rounds: int
    max_margin_error: float
    efficiency: float  # Kish: (sum w)^2 / (n sum w^2)
    max_weight: float  # the largest weight (the mean is 1)


def weighted_shares(margin: Margin, weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each group's share of the weight of the respondents who gave this dimension."""
    given = margin.codes >= 0
    totals = np.bincount(
        margin.codes[given], weights=weights[given], minlength=len(margin.targets)
    )
    whole = totals.sum()
    return totals / whole if whole > 0 else np.zeros(len(margin.targets))


def margin_error(margins: Sequence[Margin], weights: NDArray[np.float64]) -> float:
    errors = [
        float(np.abs(weighted_shares(m, weights) - m.targets).max())
        for m in margins
        if (m.codes >= 0).any() and len(m.targets)
    ]
    return max(errors, default=0.0)


def _step(margin: Margin, weights: NDArray[np.float64]) -> None:
    given = margin.codes >= 0
    if not given.any():
        return
    codes = margin.codes[given]
    totals = np.bincount(codes, weights=weights[given], minlength=len(margin.targets))
    present = totals > 0
    targets = np.where(present, margin.targets, 0.0)
    if targets.sum() <= 0:
        return
    targets = targets / targets.sum() * totals.sum()  # keep their total weight
    factors = np.divide(targets, totals, out=np.ones_like(totals), where=present)
    weights[given] *= factors[codes]


def trim(weights: NDArray[np.float64], cap: float) -> NDArray[np.float64]:
    """Weights scaled to a mean of 1 with none above ``cap``: capped weights are set to the
    cap and the rest scaled up to keep the mean, until none is over (the excess of one
    trim can push another weight over the cap)."""
    n = len(weights)
    weights = weights * (n / weights.sum())
    if cap * n <= n:  # a cap of 1 or less leaves only equal weights
        return np.ones(n)
    capped = np.zeros(n, dtype=bool)
    for _ in range(n):
        over = (weights > cap) & ~capped
        if not over.any():
            break
        capped |= over
        free = ~capped
        weights[capped] = cap
        weights[free] *= (n - cap * capped.sum()) / weights[free].sum()
    return weights


def rake(
    margins: Sequence[Margin], n: int, *, cap: float = 5.0, max_rounds: int = MAX_ROUNDS
) -> Raked:
    """Weights for ``n`` respondents matching ``margins``."""
    if n == 0:
        return Raked(np.zeros(0), False, 0, 0.0, 0.0, 0.0)
    weights = np.ones(n)
    rounds = 0
    error = margin_error(margins, weights)
    while rounds < max_rounds and margins:
        rounds += 1
        before = weights.copy()
        for margin in margins:
            _step(margin, weights)
        weights = trim(weights, cap)
        error = margin_error(margins, weights)
        if error <= CONVERGED_ERROR and weights.max() <= cap * (1 + 1e-9):
            break
        if np.abs(weights - before).max() < 1e-12:  # no longer moving: as close as it gets
            break
    efficiency = float(weights.sum() ** 2 / (n * (weights**2).sum()))
    return Raked(
        weights=weights,
        converged=error <= CONVERGED_ERROR,
        rounds=rounds,
        max_margin_error=error,
        efficiency=efficiency,
        max_weight=float(weights.max()),
    )
