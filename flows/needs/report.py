"""The "who has been heard" report, computed from responses and the census (pure: no I/O).

- ``wards``: responses per ward against its population (``per_1000``), and the ward's share
  of respondents against its share of the population.
- ``groups``: for each "about you" dimension asked, each census group's ``share`` among the
  respondents who answered that dimension (not "prefer not to say"), against its
  ``population_share`` over the assessment's wards; ``under_represented`` when ``ratio`` =
  share / population_share is below the threshold.
- ``needs``: a Borda count of the ranked picks (with k picks, a first choice scores k, the
  next k-1, ...) and the same with raking weights (:mod:`flows.needs.raking`) that make the
  respondents match the census margins of ward and of each asked dimension. ``rank`` 1 is
  the highest score; ties share a rank.

A ward's population is the largest total over the census tables loaded for it (each table
has its own total after disclosure control; the largest is the one that lost least).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flows.needs.raking import Margin, Raked, rake, weighted_shares
from storage.needs import PREFER_NOT, CensusRow

WARD = "ward"


@dataclass(frozen=True)
class Scope:
    """What the report needs to know of the assessment."""

    id: str
    wards: tuple[str, ...]  # resolved: every ward when the assessment says ``all``
    picks: int
    about_you: tuple[str, ...]
    categories: tuple[str, ...]  # ids, in the file's order


@dataclass(frozen=True)
class Responses:
    """Every response, as columns."""

    wards: list[str | None]
    picks: list[list[str]]
    demographics: list[Mapping[str, str] | None]

    def __len__(self) -> int:
        return len(self.wards)


@dataclass(frozen=True)
class PollResult:
    poll_id: int
    chat_id: str
    question: str
    options: list[str]
    counts: list[int]
    voters: int
    closed: bool


@dataclass
class Computed:
    report: dict[str, Any]
    weights: NDArray[np.float64]
    extra: dict[str, Any] = field(default_factory=dict)


def competition_ranks(values: Sequence[float]) -> list[int]:
    """1 for the highest; equal values share a rank, and the next rank skips (1, 2, 2, 4)."""
    rounded = [round(v, 9) for v in values]
    return [1 + sum(1 for other in rounded if other > v) for v in rounded]


def _ratio(share: float | None, population_share: float | None) -> float | None:
    if share is None or not population_share:
        return None
    return share / population_share


def build_report(
    scope: Scope,
    responses: Responses,
    census: Sequence[CensusRow],
    ward_names: Mapping[str, str],
    *,
    threshold: float,
    polls: Sequence[PollResult] = (),
    cap: float = 5.0,
) -> Computed:
    n = len(responses)
    in_scope = set(scope.wards)
    census = [row for row in census if row.ward_code in in_scope]

    # ---- the census over the assessment's wards --------------------------------------------
    totals: dict[tuple[str, str], int] = {}  # (ward, dimension) -> total
    groups_of: dict[str, list[str]] = {}
    by_group: dict[tuple[str, str], int] = {}  # (dimension, group) -> population
    by_ward_group: dict[tuple[str, str, str], int] = {}
    for row in census:
        totals[(row.ward_code, row.dimension)] = (
            totals.get((row.ward_code, row.dimension), 0) + row.population
        )
        if row.group not in groups_of.setdefault(row.dimension, []):
            groups_of[row.dimension].append(row.group)
        by_group[(row.dimension, row.group)] = (
            by_group.get((row.dimension, row.group), 0) + row.population
        )
        by_ward_group[(row.ward_code, row.dimension, row.group)] = row.population
    population: dict[str, int] = {}
    for (ward, _), total in totals.items():
        population[ward] = max(population.get(ward, 0), total)

    # ---- margins and weights ----------------------------------------------------------------
    ward_index = {code: i for i, code in enumerate(scope.wards)}
    ward_codes = np.array([ward_index.get(w or "", -1) for w in responses.wards], dtype=np.int64)
    margins: list[Margin] = []
    left_out: list[dict[str, str]] = []
    known = sum(population.get(w, 0) for w in scope.wards)
    answered_wards = {w for w in responses.wards if w}
    no_population = sorted(w for w in answered_wards if not population.get(w))
    if no_population or known == 0:
        left_out.append(
            {
                "dimension": WARD,
                "reason": "no census population for ward(s) "
                + (", ".join(no_population) if no_population else ", ".join(scope.wards)),
            }
        )
    else:
        margins.append(
            Margin(
                WARD,
                ward_codes,
                np.array([population.get(w, 0) / known for w in scope.wards], dtype=np.float64),
            )
        )
    dimension_codes: dict[str, NDArray[np.int64]] = {}
    for dimension in scope.about_you:
        names = groups_of.get(dimension)
        if names:
            index = {g: i for i, g in enumerate(names)}
        else:
            seen: list[str] = []
            for demo in responses.demographics:
                group = (demo or {}).get(dimension)
                if group and group != PREFER_NOT and group not in seen:
                    seen.append(group)
            index = {g: i for i, g in enumerate(seen)}
        codes = np.array(
            [index.get((demo or {}).get(dimension, ""), -1) for demo in responses.demographics],
            dtype=np.int64,
        )
        dimension_codes[dimension] = codes
        if not names:
            left_out.append({"dimension": dimension, "reason": "no census loaded for it"})
            continue
        whole = sum(by_group.get((dimension, g), 0) for g in names)
        if whole <= 0:
            left_out.append({"dimension": dimension, "reason": "its census counts are all zero"})
            continue
        margins.append(
            Margin(
                dimension,
                codes,
                np.array([by_group.get((dimension, g), 0) / whole for g in names]),
            )
        )
    raked: Raked = rake(margins, n, cap=cap)
    weights = raked.weights

    # ---- wards --------------------------------------------------------------------------------
    ward_counts = np.bincount(ward_codes[ward_codes >= 0], minlength=len(scope.wards))
    ward_weights = np.bincount(
        ward_codes[ward_codes >= 0], weights=weights[ward_codes >= 0], minlength=len(scope.wards)
    )
    wards_out = []
    for i, code in enumerate(scope.wards):
        pop = population.get(code)
        count = int(ward_counts[i]) if len(ward_counts) else 0
        share = count / n if n else None
        pop_share = pop / known if pop and known else None
        ratio = _ratio(share, pop_share)
        wards_out.append(
            {
                "ward_code": code,
                "ward_name": ward_names.get(code, code),
                "population": pop,
                "responses": count,
                "per_1000": round(1000 * count / pop, 3) if pop else None,
                "share": share,
                "population_share": pop_share,
                "ratio": ratio,
                "under_represented": ratio is not None and ratio < threshold,
                "weighted_share": float(ward_weights[i] / n) if n else None,
            }
        )

    # ---- groups ------------------------------------------------------------------------------
    groups_out: list[dict[str, Any]] = []
    dimensions_out: list[dict[str, Any]] = []
    ward_groups: list[dict[str, Any]] = []
    weighted_names = [m.name for m in margins]
    for dimension in scope.about_you:
        codes = dimension_codes[dimension]
        names = groups_of.get(dimension) or _names_from(responses, dimension)
        given = codes >= 0
        answered = int(given.sum())
        prefer = sum(1 for d in responses.demographics if (d or {}).get(dimension) == PREFER_NOT)
        counts = np.bincount(codes[given], minlength=len(names))
        margin = next((m for m in margins if m.name == dimension), None)
        w_shares = weighted_shares(margin, weights) if margin is not None else None
        whole = sum(by_group.get((dimension, g), 0) for g in names)
        dimensions_out.append(
            {
                "dimension": dimension,
                "census": dimension in groups_of,
                "weighted": dimension in weighted_names,
                "answered": answered,
                "prefer_not_to_say": prefer,
                "not_answered": n - answered - prefer,
            }
        )
        for i, group in enumerate(names):
            count = int(counts[i]) if i < len(counts) else 0
            share = count / answered if answered else 0.0
            pop_share = by_group.get((dimension, group), 0) / whole if whole else None
            ratio = _ratio(share, pop_share)
            groups_out.append(
                {
                    "dimension": dimension,
                    "group": group,
                    "responses": count,
                    "share": share,
                    "population_share": pop_share,
                    "ratio": ratio,
                    "under_represented": ratio is not None and ratio < threshold,
                    "weighted_share": None if w_shares is None else float(w_shares[i]),
                }
            )
        for w_i, ward in enumerate(scope.wards):
            in_ward = ward_codes == w_i
            ward_answered = int((given & in_ward).sum())
            ward_whole = sum(by_ward_group.get((ward, dimension, g), 0) for g in names)
            ward_counts_d = np.bincount(codes[given & in_ward], minlength=len(names))
            for i, group in enumerate(names):
                count = int(ward_counts_d[i]) if i < len(ward_counts_d) else 0
                share = count / ward_answered if ward_answered else 0.0
                pop = by_ward_group.get((ward, dimension, group))
                pop_share = pop / ward_whole if pop is not None and ward_whole else None
                ratio = _ratio(share, pop_share)
                ward_groups.append(
                    {
                        "ward_code": ward,
                        "dimension": dimension,
                        "group": group,
                        "responses": count,
                        "share": share,
                        "population_share": pop_share,
                        "ratio": ratio,
                        "under_represented": ratio is not None and ratio < threshold,
                    }
                )

    # ---- needs: Borda counts ----------------------------------------------------------------
    k = scope.picks
    category_index = {c: i for i, c in enumerate(scope.categories)}
    matrix = np.full((n, k), -1, dtype=np.int64)
    for r, picks in enumerate(responses.picks):
        position = 0
        seen_picks: set[int] = set()
        for pick in picks:
            found = category_index.get(pick)
            if found is None or found in seen_picks:
                continue  # a repeat of the same pick counts once
            seen_picks.add(found)
            matrix[r, position] = found
            position += 1
            if position == k:
                break
    points = np.broadcast_to(np.arange(k, 0, -1, dtype=np.float64), (n, k))
    chosen = matrix >= 0
    flat = matrix[chosen]
    size = len(scope.categories)
    picked = np.bincount(flat, minlength=size)
    score = np.bincount(flat, weights=points[chosen], minlength=size)
    weighted = np.bincount(
        flat, weights=(points * weights[:, None])[chosen] if n else points[chosen], minlength=size
    )
    ranks = competition_ranks([float(s) for s in score])
    weighted_ranks = competition_ranks([float(s) for s in weighted])
    needs_out = [
        {
            "category": category,
            "responses": int(picked[i]),
            "score": int(score[i]),
            "weighted_score": round(float(weighted[i]), 6),
            "rank": ranks[i],
            "weighted_rank": weighted_ranks[i],
        }
        for i, category in enumerate(scope.categories)
    ]
    needs_out.sort(key=lambda item: (item["rank"], scope.categories.index(item["category"])))

    report: dict[str, Any] = {
        "needs_assessment": scope.id,
        "responses": n,
        "weights": {
            "method": "raking",
            "dimensions": weighted_names,
            "converged": raked.converged,
            "max_margin_error": raked.max_margin_error,
            "efficiency": raked.efficiency,
            "max_weight": raked.max_weight,
            "cap": cap,
            "rounds": raked.rounds,
            "left_out": left_out,
        },
        "wards": wards_out,
        "groups": groups_out,
        "needs": needs_out,
        "sources": {"residents": n, "group_polls": len(polls)},
        "dimensions": dimensions_out,
        "ward_groups": ward_groups,
        "group_polls": [
            {
                "poll_id": p.poll_id,
                "chat_id": p.chat_id,
                "question": p.question,
                "options": [
                    {"option": o, "votes": c} for o, c in zip(p.options, p.counts, strict=True)
                ],
                "voters": p.voters,
                "closed": p.closed,
            }
            for p in polls
        ],
        "under_represented_ratio": threshold,
    }
    return Computed(report=report, weights=weights)


def _names_from(responses: Responses, dimension: str) -> list[str]:
    names: list[str] = []
    for demo in responses.demographics:
        group = (demo or {}).get(dimension)
        if group and group != PREFER_NOT and group not in names:
            names.append(group)
    return names
