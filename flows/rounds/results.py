"""A round's stored projects and ballots as a Pabulib `Election` (what the tally reads and what
an export writes: the same object, so `pb round results` equals `pb tally` on the export), and
the tally as the round's results JSON with a reason per project in English and Welsh.

Pure functions: no I/O. Ballot types map to Pabulib's as Pabulib records them: approval and
knapsack are approval ballots, cumulative is cumulative (points), ranked is ordinal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from flows.catalogue import LANGUAGES, Catalogue
from flows.pb.model import BallotGroup, Election, Project, VoteType
from flows.pb.pabulib import _cell
from flows.pb.rules import TallyResult, selected_ids

VOTE_TYPES: dict[str, VoteType] = {
    "approval": "approval",
    "knapsack": "approval",
    "cumulative": "cumulative",
    "ranked": "ordinal",
}
# Pabulib's names for our rules (META `rule`); phragmen has none, so it is written as ours
PABULIB_RULE = {"greedy": "greedy", "mes": "equalshares", "mes-add1": "equalshares/add1"}
PROJECT_COLUMNS = ("project_id", "cost", "votes", "name", "selected", "category")
COUNTRY = "United Kingdom"
# Where a reason's text is in the catalogue, by `flows.pb.rules.UnfundedReason`
REASON_KEYS = {
    "funded": "pb_reason_funded",
    "no-supporters": "pb_reason_no_votes",
    "not-enough-money": "pb_reason_mes",
    "no-longer-fit": "pb_reason_greedy",
    "count-stopped": "pb_reason_phragmen",
    "free-no-weight": "pb_reason_free",
}


@dataclass(frozen=True)
class StoredProject:
    id: str
    cost: int
    title: str
    category: str | None
    extra: Mapping[str, str] | None


@dataclass(frozen=True)
class StoredBallot:
    """A ballot, or (``count`` > 1, ``voter_key`` empty) that many identical ballots whose
    voters are numbered in order (for a tally, which needs no voter ids)."""

    voter_key: str
    vote: Sequence[str]
    points: Sequence[int] | None
    extra: Mapping[str, str] | None
    count: int = 1


@dataclass(frozen=True)
class StoredRound:
    id: str
    title: str
    budget: int
    currency: str
    ballot: Mapping[str, Any]
    rule: str
    date_begin: str  # dd.mm.yyyy
    date_end: str
    imported: bool
    meta: Mapping[str, str] | None  # an imported file's META
    columns: Mapping[str, Sequence[str]] | None  # an imported file's column order


def meta_of(r: StoredRound, projects: int, voters: int) -> dict[str, str]:
    """The META section: an imported file's own keys, or the keys the format defines for a
    round run here."""
    if r.imported and r.meta is not None:
        return dict(r.meta)
    kind = str(r.ballot["type"])
    meta = {
        "description": r.title,
        "country": COUNTRY,
        "unit": r.title,
        "instance": r.id,
        "num_projects": str(projects),
        "num_votes": str(voters),
        "budget": str(r.budget),
        "vote_type": VOTE_TYPES[kind],
        "rule": PABULIB_RULE.get(r.rule, r.rule),
        "date_begin": r.date_begin,
        "date_end": r.date_end,
    }
    if kind == "approval":
        meta["min_length"] = str(r.ballot.get("min", 1))
        meta["max_length"] = str(r.ballot.get("max", projects))
    elif kind == "knapsack":
        meta["min_length"] = "1"
        meta["max_sum_cost"] = str(r.budget)
    elif kind == "cumulative":
        meta["min_length"] = "1"
        meta["min_sum_points"] = "1"
        meta["max_sum_points"] = str(r.ballot["points"])
    else:  # ranked
        meta["min_length"] = "1"
        meta["max_length"] = str(r.ballot["top"])
    meta["language"] = "en"
    meta["currency"] = r.currency
    return meta


def election_of(
    r: StoredRound,
    projects: Sequence[StoredProject],
    ballots: Sequence[StoredBallot],
    results: Mapping[str, Any] | None = None,
) -> Election:
    """The round as an `Election`. With `results` (the stored results JSON) the PROJECTS
    section of a round run here says how many votes each project got and whether it was
    selected; an imported round keeps its file's own cells."""
    vote_type = VOTE_TYPES[str(r.ballot["type"])]
    index = {p.id: j for j, p in enumerate(projects)}
    by_id = {p["id"]: p for p in (results or {}).get("projects", [])}
    out_projects = []
    for p in projects:
        if r.imported and p.extra is not None:
            fields = dict(p.extra)
        else:
            fields = {"project_id": p.id, "cost": str(p.cost), "name": p.title}
            if p.id in by_id:
                fields["votes"] = str(by_id[p.id]["votes"])
                fields["selected"] = "1" if by_id[p.id]["selected"] else "0"
            fields["category"] = p.category or ""
        out_projects.append(Project(p.id, Fraction(p.cost), fields.get("name", ""), fields))
    grouped: dict[tuple[tuple[int, ...], tuple[Fraction, ...] | None], list[str]] = {}
    lines: list[str] = []
    vote_columns: tuple[str, ...] = ()
    if r.imported and r.columns is not None:
        vote_columns = tuple(r.columns.get("votes", ()))
    numbered = 0
    for b in ballots:
        picked = [index[v] for v in b.vote if v in index]
        points: tuple[Fraction, ...] | None = None
        if vote_type == "cumulative":
            pairs = sorted(zip(picked, b.points or (), strict=False))
            key_projects = tuple(j for j, _ in pairs)
            points = tuple(Fraction(x) for _, x in pairs)
        elif vote_type == "ordinal":
            key_projects = tuple(picked)
        else:
            key_projects = tuple(sorted(picked))
        if b.voter_key:
            grouped.setdefault((key_projects, points), []).append(b.voter_key)
        else:
            grouped.setdefault((key_projects, points), []).extend(
                map(str, range(numbered + 1, numbered + b.count + 1))
            )
            numbered += b.count
        if vote_columns:
            cells = dict(b.extra or {})
            cells["voter_id"] = b.voter_key
            lines.append(";".join(_cell(cells.get(c, "")) for c in vote_columns))
    groups = tuple(BallotGroup(k, pts, tuple(v)) for (k, pts), v in grouped.items())
    voters = sum(len(g.voters) for g in groups)
    if r.imported and r.columns is not None:
        project_columns = tuple(r.columns.get("projects", PROJECT_COLUMNS))
    else:
        project_columns = PROJECT_COLUMNS if results is not None else ("project_id", "cost", "name")
    return Election(
        meta=meta_of(r, len(projects), voters),
        projects=tuple(out_projects),
        vote_type=vote_type,
        budget=Fraction(r.budget),
        groups=groups,
        num_voters=voters,
        project_columns=project_columns,
        vote_columns=vote_columns if lines else (),
        vote_lines=tuple(lines),
    )


def _number(x: Fraction) -> int | float:
    return x.numerator if x.denominator == 1 else float(x)


def results_of(
    round_id: str, election: Election, result: TallyResult, catalogue: Catalogue
) -> dict[str, Any]:
    """The results JSON: `{"round", "rule", "budget", "voters", "selected", "cost",
    "projects": [{"id", "cost", "votes", "selected", "reason"}]}`, projects in ballot order,
    each reason as `{"en": ..., "cy": ...}` (why it was funded or not, from the rule)."""
    votes = election.votes()
    chosen = set(result.selected)
    why = {u.project: u.reason for u in result.unfunded}
    projects = []
    for j, p in enumerate(election.projects):
        code = "funded" if j in chosen else why.get(j, "no-supporters")
        key = REASON_KEYS[code]
        projects.append(
            {
                "id": p.id,
                "cost": _number(p.cost),
                "votes": votes[j],
                "selected": j in chosen,
                "reason": {lang: catalogue.text(key, lang) for lang in LANGUAGES},
            }
        )
    return {
        "round": round_id,
        "rule": result.rule,
        "budget": _number(result.budget),
        "voters": result.voters,
        "selected": selected_ids(election, result),
        "cost": _number(result.cost),
        "projects": projects,
    }
