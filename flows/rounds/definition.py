"""A PB round's YAML file, read and checked whole: every problem is reported with its line
number, and nothing is returned unless the file is right (issue #14 gives the shape).

```yaml
id: riverside-2027
title: {en: "Riverside neighbourhood fund", cy: "Cronfa cymdogaeth Glan-yr-afon"}
wards: all                  # or [W05000870]
budget: 100000
currency: GBP
ballot: {type: approval, min: 1, max: 3}   # knapsack | cumulative (points: 10) | ranked (top: 3)
rule: mes
verification: none          # or phone
phases: {voting_open: "2027-05-01T09:00:00Z", voting_close: "2027-05-31T21:00:00Z"}
projects:
  - {id: "1", title: {en: "Benches", cy: "Meinciau"}, cost: 9000,
     summary: {en: "Six benches", cy: "Chwe mainc"}}
```

Ballots: ``approval`` (pick ``min`` to ``max`` projects), ``knapsack`` (pick projects whose
costs fit the budget), ``cumulative`` (share ``points`` between projects), ``ranked`` (rank
up to ``top`` projects, best first). Rules: ``greedy`` and ``mes`` fit every ballot;
``mes-add1`` and ``phragmen`` need approval ballots (approval or knapsack).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

from flows.needs.definition import (
    ID_PATTERN,
    DefinitionError,
    _show,
    _texts,
    _when,
    parse_wards,
    read_mapping,
)
from flows.pb.rules import APPROVAL_ONLY, RULES

__all__ = ["DefinitionError", "Project", "RoundDefinition", "parse_round"]

MAX_PROJECTS = 200
MAX_AMOUNT = 10**12
MAX_POINTS = 1000
MAX_TITLE, MAX_PROJECT_TITLE, MAX_SUMMARY, MAX_CATEGORY = 200, 120, 300, 100
PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
CURRENCY = re.compile(r"[A-Z]{3}")
FIELDS = (
    "id",
    "title",
    "wards",
    "budget",
    "currency",
    "ballot",
    "rule",
    "verification",
    "phases",
    "projects",
)
REQUIRED = ("id", "title", "wards", "budget", "ballot", "rule", "phases", "projects")
BALLOT_TYPES = ("approval", "knapsack", "cumulative", "ranked")
BALLOT_KEYS = {
    "approval": ("type", "min", "max"),
    "knapsack": ("type",),
    "cumulative": ("type", "points"),
    "ranked": ("type", "top"),
}
VERIFICATIONS = ("none", "phone")
PHASES = ("proposals_open", "proposals_close", "voting_open", "voting_close")
PROJECT_FIELDS = ("id", "title", "cost", "summary", "ward", "category")


@dataclass(frozen=True)
class Project:
    id: str
    title: dict[str, str]
    cost: int
    summary: dict[str, str]
    ward: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class RoundDefinition:
    id: str
    title: dict[str, str]
    wards: tuple[str, ...] | None  # None: every ward
    budget: int
    currency: str
    ballot: dict[str, Any]  # {"type": "approval", "min": 1, "max": 3}, ...
    rule: str
    verification: str
    proposals_open: datetime | None
    proposals_close: datetime | None
    voting_open: datetime
    voting_close: datetime
    projects: tuple[Project, ...]


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_round(
    text: str, *, known_wards: Collection[str] | None = None, now: datetime | None = None
) -> RoundDefinition:
    """The round in ``text``; raises :class:`DefinitionError` with every problem found.
    ``known_wards`` (when given) are what ``wards`` and a project's ``ward`` may name; with
    ``now``, a ``voting_close`` already past is refused."""
    data, lines = read_mapping(text, "id, title, budget, ballot, ...")
    problems: list[tuple[int, str]] = [(n, f"{k!r} is given twice") for n, k in lines.duplicates]

    def problem(message: str, *path: Any) -> None:
        problems.append((lines.of(*path), message))

    for key in data:
        if key not in FIELDS:
            problem(f"unknown field {key!r} (fields: {', '.join(FIELDS)})", str(key), "#key")
    for key in REQUIRED:
        if key not in data:
            problem(f"{key} is missing")

    ident = data.get("id")
    if "id" in data and not (isinstance(ident, str) and ID_PATTERN.fullmatch(ident)):
        problem("id: use 1-64 lower-case letters, digits, - and _ (like riverside-2027)", "id")

    title: dict[str, str] = {}
    if "title" in data:
        title = _texts(data.get("title"), MAX_TITLE, "title", ("title",), problem)

    wards = parse_wards(data, known_wards, problem)

    budget = data.get("budget")
    if "budget" in data and not (_whole(budget) and 0 < budget <= MAX_AMOUNT):
        problem(f"budget: a whole number of pounds from 1 to {MAX_AMOUNT:,}", "budget")
        budget = None

    currency = data.get("currency", "GBP")
    if not (isinstance(currency, str) and CURRENCY.fullmatch(currency)):
        problem("currency: a three-letter code like GBP", "currency")
        currency = "GBP"

    verification = data.get("verification", "none")
    if verification not in VERIFICATIONS:
        problem("verification: none or phone", "verification")
        verification = "none"

    phases = _phases(data, problem, now)
    projects = _projects(data, wards, known_wards, budget, problem)
    ballot = _ballot(data, len(projects), problem)

    rule = data.get("rule")
    if "rule" in data:
        if rule not in RULES:
            problem(f"rule: one of {', '.join(RULES)}", "rule")
        elif ballot and rule in APPROVAL_ONLY and ballot["type"] not in ("approval", "knapsack"):
            problem(
                f"rule: {rule} needs approval ballots (approval or knapsack), not "
                f"{ballot['type']}; use greedy or mes",
                "rule",
            )

    if problems:
        raise DefinitionError([f"line {n}: {m}" for n, m in sorted(problems, key=lambda p: p[0])])
    assert isinstance(ident, str) and isinstance(budget, int) and isinstance(rule, str)
    assert ballot is not None and phases is not None
    return RoundDefinition(
        id=ident,
        title=title,
        wards=wards,
        budget=budget,
        currency=currency,
        ballot=ballot,
        rule=rule,
        verification=verification,
        proposals_open=phases.get("proposals_open"),
        proposals_close=phases.get("proposals_close"),
        voting_open=phases["voting_open"],
        voting_close=phases["voting_close"],
        projects=tuple(projects),
    )


def _phases(data: dict[str, Any], problem: Any, now: datetime | None) -> dict[str, datetime] | None:
    raw = data.get("phases")
    if "phases" not in data:
        return None
    if not isinstance(raw, dict):
        problem("phases: give {voting_open: ..., voting_close: ...}", "phases")
        return None
    for key in raw:
        if key not in PHASES:
            problem(
                f"phases: unknown phase {key!r} (phases: {', '.join(PHASES)})",
                "phases",
                str(key),
                "#key",
            )
    out: dict[str, datetime] = {}
    for key in PHASES:
        if key in raw:
            when = _when(raw[key], key, lambda m, *_, k=key: problem(f"phases: {m}", "phases", k))
            if when is not None:
                out[key] = when
        elif key.startswith("voting"):
            problem(f"phases: {key} is missing (the voting pair is required)", "phases")
    if ("proposals_open" in raw) != ("proposals_close" in raw):
        problem("phases: give proposals_open and proposals_close together", "phases")
    order = [k for k in PHASES if k in out]
    for first, second in zip(order, order[1:], strict=False):
        if (
            out[second] < out[first]
            or (first, second)
            in (("voting_open", "voting_close"), ("proposals_open", "proposals_close"))
            and out[second] == out[first]
        ):
            problem(f"phases: {second} must be after {first}", "phases", second)
    if "voting_close" in out and now is not None and out["voting_close"] <= now:
        problem("phases: voting_close is in the past", "phases", "voting_close")
    if "voting_open" not in out or "voting_close" not in out:
        return None
    return out


def _projects(
    data: dict[str, Any],
    wards: tuple[str, ...] | None,
    known: Collection[str] | None,
    budget: Any,
    problem: Any,
) -> list[Project]:
    raw = data.get("projects")
    if "projects" not in data:
        return []
    if not isinstance(raw, list) or not raw:
        problem("projects: a list of {id, title, cost, summary}", "projects")
        return []
    if len(raw) > MAX_PROJECTS:
        problem(f"projects: at most {MAX_PROJECTS} (there are {len(raw)})", "projects")
    out: list[Project] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = ("projects", i)
        if not isinstance(item, dict):
            problem("projects: each is {id: ..., title: ..., cost: ..., summary: ...}", *where)
            continue
        for key in item:
            if key not in PROJECT_FIELDS:
                problem(
                    f"projects: unknown field {key!r} (fields: {', '.join(PROJECT_FIELDS)})",
                    *where,
                    str(key),
                    "#key",
                )
        for key in ("id", "title", "cost", "summary"):
            if key not in item:
                problem(f"projects: {key} is missing", *where)
        pid = item.get("id")
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = str(pid)
        if not (isinstance(pid, str) and PROJECT_ID.fullmatch(pid)):
            if "id" in item:
                problem("projects: id is 1-32 letters, digits, '.', '-' or '_'", *where, "id")
            continue
        if pid in seen:
            problem(f"projects: id {pid!r} is used twice", *where, "id")
        seen.add(pid)
        what = f"project {pid}"
        title = (
            _texts(
                item.get("title"), MAX_PROJECT_TITLE, f"{what} title", (*where, "title"), problem
            )
            if "title" in item
            else {}
        )
        summary = (
            _texts(
                item.get("summary"), MAX_SUMMARY, f"{what} summary", (*where, "summary"), problem
            )
            if "summary" in item
            else {}
        )
        cost = item.get("cost")
        ok_cost = _whole(cost) and 0 < cost <= MAX_AMOUNT
        if "cost" in item and not ok_cost:
            problem(f"{what}: cost is a whole number above 0", *where, "cost")
        elif _whole(cost) and ok_cost and _whole(budget) and cost > budget:
            problem(f"{what}: costs {cost:,}, more than the budget {budget:,}", *where, "cost")
        ward = item.get("ward")
        if ward is not None:
            if not isinstance(ward, str) or not ward.strip():
                problem(f"{what}: ward is a ward code", *where, "ward")
                ward = None
            elif wards is not None and ward not in wards:
                problem(
                    f"{what}: ward {_show(ward)} is not one of the round's wards", *where, "ward"
                )
            elif known is not None and ward not in known:
                problem(f"{what}: unknown ward {_show(ward)}", *where, "ward")
        category = item.get("category")
        if category is not None and not (
            isinstance(category, str)
            and category.strip()
            and len(category) <= MAX_CATEGORY
            and "\n" not in category
        ):
            problem(
                f"{what}: category is one line of at most {MAX_CATEGORY} characters",
                *where,
                "category",
            )
            category = None
        if len(title) == 2 and len(summary) == 2 and ok_cost:
            assert isinstance(cost, int)
            out.append(Project(pid, title, cost, summary, ward, category))
    return out


def _ballot(data: dict[str, Any], count: int, problem: Any) -> dict[str, Any] | None:
    raw = data.get("ballot")
    if "ballot" not in data:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in BALLOT_TYPES:
        problem(f"ballot: give {{type: ...}} with type {', '.join(BALLOT_TYPES)}", "ballot")
        return None
    kind = raw["type"]
    bad = False
    for key in raw:
        if key not in BALLOT_KEYS[kind]:
            problem(
                f"ballot: {key!r} does not go with type {kind} "
                f"(it takes {', '.join(BALLOT_KEYS[kind])})",
                "ballot",
                str(key),
                "#key",
            )
            bad = True
    out: dict[str, Any] = {"type": kind}
    if kind == "approval":
        low, high = raw.get("min", 1), raw.get("max", max(count, 1))
        if not (_whole(low) and low >= 1):
            problem("ballot: min is a whole number, at least 1", "ballot", "min")
            bad = True
        elif not (_whole(high) and high >= low):
            problem("ballot: max is a whole number, at least min", "ballot", "max")
            bad = True
        elif count and low > count:
            problem(f"ballot: min {low} is more than the {count} projects", "ballot", "min")
            bad = True
        out.update(min=low, max=high)
    elif kind == "cumulative":
        points = raw.get("points")
        if not (_whole(points) and 1 <= points <= MAX_POINTS):
            problem(
                f"ballot: cumulative needs points, a whole number from 1 to {MAX_POINTS}",
                "ballot",
                "points",
            )
            bad = True
        out["points"] = points
    elif kind == "ranked":
        top = raw.get("top")
        if not (_whole(top) and top >= 1):
            problem("ballot: ranked needs top, a whole number, at least 1", "ballot", "top")
            bad = True
        out["top"] = top
    return None if bad else out
