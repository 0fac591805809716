"""The participatory-budgeting data model: projects, grouped ballots, an election.

Everything here is immutable and pure (numpy only to count votes quickly). Amounts (costs,
the budget, points) are exact `fractions.Fraction` values, as written in the Pabulib file.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

VoteType = Literal["approval", "cumulative", "scoring", "ordinal"]
TieBreak = Literal["cost-votes", "lexico"]
Severity = Literal["error", "warning"]

TIE_BREAKS: tuple[TieBreak, ...] = ("cost-votes", "lexico")


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem found in a Pabulib file; `line` is 1-based (None: the whole file)."""

    line: int | None
    severity: Severity
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.severity}: {self.message}"


@dataclass(frozen=True, slots=True)
class Project:
    """One project of a PB round."""

    id: str
    cost: Fraction
    name: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    line: int = 0


class BallotGroup(NamedTuple):
    """Identical ballots cast by one or more voters.

    `projects` holds indices into `Election.projects` (ballot order for ordinal ballots,
    ascending otherwise); `points` is parallel to it for cumulative and scoring ballots.
    (A named tuple: large files have tens of thousands of groups, built in a blink.)
    """

    projects: tuple[int, ...]
    points: tuple[Fraction, ...] | None
    voters: tuple[str, ...]

    @property
    def weight(self) -> int:
        return len(self.voters)


@dataclass(frozen=True, slots=True)
class Election:
    """A PB instance together with its (grouped) profile."""

    meta: Mapping[str, str]
    projects: tuple[Project, ...]
    vote_type: VoteType
    budget: Fraction
    groups: tuple[BallotGroup, ...]
    num_voters: int
    # Project columns of the original file, kept so that writing it back keeps them.
    project_columns: tuple[str, ...] = ("project_id", "cost", "name")
    # What the reader had to assume to read an incomplete file (a missing num_votes, a
    # num_votes that does not match, a short row...), one warning per line it concerns.
    warnings: tuple[Issue, ...] = ()
    # VOTES columns of the original file and the lines of the votes read, in file order, so
    # that writing it back keeps every column (age, district...). Empty for an election
    # built in code.
    vote_columns: tuple[str, ...] = ()
    vote_lines: tuple[str, ...] = ()

    def index_of(self, project_id: str) -> int:
        for i, p in enumerate(self.projects):
            if p.id == project_id:
                return i
        raise KeyError(project_id)

    def votes(self) -> list[int]:
        """Number of voters whose ballot names each project (the "votes" used in tie-breaking)."""
        return votes_of(self, self.flat())

    def flat(self) -> Flat:
        """The ballots as arrays (see `Flat`)."""
        G = len(self.groups)
        # C-level maps over the groups (tuples): a generator of attribute reads is slower
        of_projects, of_voters = operator.itemgetter(0), operator.itemgetter(2)
        lens = np.fromiter(map(len, map(of_projects, self.groups)), np.int64, G)
        sizes = np.fromiter(map(len, map(of_voters, self.groups)), np.int64, G)
        projects = np.fromiter(
            itertools.chain.from_iterable(map(of_projects, self.groups)),
            np.int64,
            int(lens.sum()),
        )
        return Flat(projects, lens, sizes)


    def utilities(self) -> list[dict[int, Fraction]]:
        """Per group, the natural satisfaction from each project on the ballot.

        approval: 1 (the rules multiply by the cost where they use cost-satisfaction);
        cumulative/scoring: the points; ordinal: Borda, `len(ballot) - position - 1`
        (as pabutools' `Additive_Borda_Sat`, so the last-ranked project scores 0).
        """
        out: list[dict[int, Fraction]] = []
        for g in self.groups:
            if self.vote_type == "approval":
                out.append({j: Fraction(1) for j in g.projects})
            elif self.vote_type == "ordinal":
                n = len(g.projects)
                out.append({j: Fraction(n - pos - 1) for pos, j in enumerate(g.projects)})
            else:
                assert g.points is not None
                out.append(dict(zip(g.projects, g.points, strict=True)))
        return out


class Flat(NamedTuple):
    """Every ballot group's projects one after the other (`projects`), how many each group
    names (`lens`) and how many voters cast it (`sizes`)."""

    projects: npt.NDArray[np.int64]
    lens: npt.NDArray[np.int64]
    sizes: npt.NDArray[np.int64]


def votes_of(election: Election, flat: Flat) -> list[int]:
    """Number of voters whose ballot names each project."""
    weights = np.repeat(flat.sizes, flat.lens)
    counts = np.bincount(flat.projects, weights=weights, minlength=len(election.projects))
    return [int(c) for c in counts.tolist()]


TieKey = Callable[[int], tuple[object, ...]]


def tie_key(
    election: Election, tie_break: TieBreak, votes: Sequence[int] | None = None
) -> TieKey:
    """Key giving the preferred project the smallest value.

    `cost-votes`: lower cost, then more votes, then project id compared as a string.
    `lexico`: project id compared as a string (pabutools' default).
    Project ids are unique, so either key is a total order.
    """
    projects = election.projects
    if tie_break == "lexico":
        return lambda j: (projects[j].id,)
    if votes is None:
        votes = election.votes()
    return lambda j: (projects[j].cost, -votes[j], projects[j].id)


_CHUNKS = re.compile(r"\d+|\D+")


def natural_key(project_id: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key for project ids that orders numbers as numbers: "2" < "11", "p2" < "p10"."""
    return tuple(
        (0, int(t), t) if t.isdigit() else (1, 0, t) for t in _CHUNKS.findall(project_id)
    )
