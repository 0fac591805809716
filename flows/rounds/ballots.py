"""Checking and casting PB ballots.

The checks are pure functions over a round's ballot rules and its projects in ballot order
(the numbers residents see, from 1). Each bad input gets a :class:`Problem` with a code and
the values its message needs; the message itself is in the catalogue
(``pb_problem_<code>``), so the person reads it in their language.

What each ballot type takes (typed on SMS, or as the typed alternative on Telegram):

- ``approval``: numbers, "2 5 9" (commas, "and" also separate them), between ``min`` and
  ``max`` of them; kept in ballot order, as the storage contract has it (so are knapsack
  and cumulative ballots);
- ``knapsack``: the same, with the costs adding up to no more than the budget;
- ``ranked``: numbers best first, "5 2 9", up to ``top`` of them;
- ``cumulative``: points per project as NUMBERxPOINTS, "2x3 5x7" (project 2 gets 3 points,
  project 5 gets 7; "2:3" works too), at most ``points`` in all.

:func:`cast_ballot` stores the one ballot per (round, contact): it inserts, or replaces the
stored ballot in one statement (``INSERT ... ON CONFLICT (round_id, contact_id) DO UPDATE``),
so two casts for one person at once leave one ballot, the later one. It first takes a shared
lock on the round row (``FOR SHARE`` on PostgreSQL; SQLite has one writer at a time): a
close, which updates that row, waits for casts in progress, and a cast that starts after
the close sees the round closed. Casts do not block one another.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from flows.commands import YES_WORDS, normalise
from storage.erasure import table_of
from storage.models import Contact
from storage.pb_rounds import PbBallot, PbProject, PbRound, RoundStatus

RECEIPT_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
RECEIPT_LENGTH = 6
BALLOT_TYPES = ("approval", "knapsack", "cumulative", "ranked")

_SPLIT = re.compile(r"\s*(?:,|;|&|\+|/|\band\b|\ba\b|\bac\b|\s)\s*", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]{1,4}")  # ASCII digits only
_POINTS = re.compile(r"([0-9]{1,4})\s*[xX×:*]\s*([0-9]{1,4})")


class Code(StrEnum):
    EMPTY = "empty"  # nothing sent
    NOTHING_CHOSEN = "nothing_chosen"  # YES (or a word like it) before choosing anything
    NOT_ON_LIST = "not_on_list"  # a number outside 1..count
    REPEATED = "repeated"  # the same number twice
    NOT_NUMBERS = "not_numbers"  # words mixed with the numbers
    TOO_FEW = "too_few"
    TOO_MANY = "too_many"
    OVER_BUDGET = "over_budget"
    POINTS_FORM = "points_form"  # cumulative: a piece not in the NUMBERxPOINTS form
    POINTS_ZERO = "points_zero"  # cumulative: a project given no points
    POINTS_OVER = "points_over"  # cumulative: more points than the round gives


@dataclass(frozen=True)
class Problem:
    """Why a ballot can't stand: ``code`` and the values its message uses."""

    code: Code
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The catalogue key of its message."""
        return f"pb_problem_{self.code.value}"


@dataclass(frozen=True)
class Rules:
    """A round's ballot rules: ``kind`` (approval, knapsack, cumulative, ranked), the number
    of projects to choose (``least``..``most``; ``most`` None: any number), the ``budget``
    that a knapsack ballot's costs must fit, and a cumulative ballot's ``points``."""

    kind: str
    least: int = 1
    most: int | None = None
    budget: int | None = None
    points: int | None = None

    @classmethod
    def of(cls, round_: PbRound) -> Rules:
        ballot = round_.ballot or {}
        kind = str(ballot.get("type", "approval"))
        if kind not in BALLOT_TYPES:
            raise ValueError(f"unknown ballot type {kind!r}")
        least = _int(ballot.get("min"), 1)
        most = _int(ballot.get("max"), None)
        if kind == "ranked":
            most = _int(ballot.get("top"), most)
        points = _int(ballot.get("points"), None) if kind == "cumulative" else None
        budget = round_.budget if kind == "knapsack" else None
        return cls(kind=kind, least=max(1, least or 1), most=most, budget=budget, points=points)


def _int(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool) or value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class Ballot:
    """A checked ballot: ``positions`` on the ballot (from 1), in the order given, and for a
    cumulative ballot the ``points`` of each."""

    positions: tuple[int, ...]
    points: tuple[int, ...] | None = None

    def vote(self, projects: Sequence[PbProject]) -> list[str]:
        return [projects[p - 1].id for p in self.positions]

    def cost(self, projects: Sequence[PbProject]) -> int:
        return sum(projects[p - 1].cost for p in self.positions)


def parse_ballot(text: str, rules: Rules, projects: Sequence[PbProject]) -> Ballot | Problem:
    """A typed ballot (see the module docstring for each type's form), checked."""
    if rules.kind == "cumulative":
        return _parse_points(text, rules, projects)
    words = text.strip()
    if not words:
        return Problem(Code.EMPTY)
    if normalise(words) in YES_WORDS:
        return Problem(Code.NOTHING_CHOSEN)
    positions: list[int] = []
    for piece in (p for p in _SPLIT.split(words) if p):
        if not _NUMBER.fullmatch(piece):
            return Problem(Code.NOT_NUMBERS, {"item": piece[:40]})
        positions.append(int(piece))
    return check_positions(positions, rules, projects)


def check_positions(
    positions: Sequence[int], rules: Rules, projects: Sequence[PbProject]
) -> Ballot | Problem:
    """Numbers on the ballot (from 1), checked: on the list, each once, how many, budget."""
    count = len(projects)
    seen: set[int] = set()
    for position in positions:
        if not 1 <= position <= count:
            return Problem(Code.NOT_ON_LIST, {"item": position, "count": count})
        if position in seen:
            return Problem(Code.REPEATED, {"item": position})
        seen.add(position)
    if not positions:
        return Problem(Code.NOTHING_CHOSEN)
    if rules.most is not None and len(positions) > rules.most:
        return Problem(Code.TOO_MANY, {"max": rules.most})
    if len(positions) < rules.least:
        return Problem(Code.TOO_FEW, {"min": rules.least})
    # approval and knapsack ballots are kept in ballot order (the shared storage contract);
    # a ranking keeps the order given
    ballot = Ballot(tuple(positions) if rules.kind == "ranked" else tuple(sorted(positions)))
    if rules.budget is not None:
        total = ballot.cost(projects)
        if total > rules.budget:
            return Problem(
                Code.OVER_BUDGET,
                {"total": total, "budget": rules.budget, "over": total - rules.budget},
            )
    return ballot


def _parse_points(text: str, rules: Rules, projects: Sequence[PbProject]) -> Ballot | Problem:
    words = text.strip()
    if not words:
        return Problem(Code.EMPTY)
    if normalise(words) in YES_WORDS:
        return Problem(Code.NOTHING_CHOSEN)
    # "2 x 3" with spaces is one piece: join the sign to its numbers before splitting
    compact = re.sub(r"\s*([xX×:*])\s*", r"\1", words)
    positions: list[int] = []
    points: list[int] = []
    for piece in (p for p in re.split(r"[\s,;&+/]+", compact) if p):
        found = _POINTS.fullmatch(piece)
        if found is None:
            if _NUMBER.fullmatch(piece) or re.fullmatch(r"[0-9xX×:*]+", piece):
                return Problem(Code.POINTS_FORM, {"item": piece[:40]})
            return Problem(Code.NOT_NUMBERS, {"item": piece[:40]})
        positions.append(int(found.group(1)))
        points.append(int(found.group(2)))
    checked = check_positions(positions, rules, projects)
    if isinstance(checked, Problem):
        return checked
    for position, given in zip(positions, points, strict=True):
        if given == 0:
            return Problem(Code.POINTS_ZERO, {"item": position})
    total = sum(points)
    if rules.points is not None and total > rules.points:
        return Problem(Code.POINTS_OVER, {"total": total, "points": rules.points})
    per_project = dict(zip(positions, points, strict=True))
    return Ballot(checked.positions, tuple(per_project[p] for p in checked.positions))


def check_ids(ids: Sequence[str], rules: Rules, projects: Sequence[PbProject]) -> Ballot | Problem:
    """A selection made by project ids (buttons on Telegram, a pick-several answer),
    checked like typed numbers."""
    where = {p.id: k for k, p in enumerate(projects, start=1)}
    positions: list[int] = []
    for project_id in ids:
        if project_id not in where:
            return Problem(Code.NOT_ON_LIST, {"item": project_id, "count": len(projects)})
        positions.append(where[project_id])
    return check_positions(positions, rules, projects)


# ---- casting -------------------------------------------------------------------------------


class RoundClosed(Exception):
    """The round is not taking ballots (not open yet, or closed)."""


@dataclass(frozen=True)
class Cast:
    receipt: str
    replaced: bool  # the person had a ballot in this round, now replaced
    voter_key: str


def new_receipt() -> str:
    return "".join(secrets.choice(RECEIPT_ALPHABET) for _ in range(RECEIPT_LENGTH))


def taking_ballots(round_: PbRound, now: datetime) -> bool:
    return round_.status == RoundStatus.VOTING and round_.voting_open <= now < round_.voting_close


async def cast_ballot(
    session: AsyncSession,
    *,
    round: PbRound | str,  # noqa: A002 - the contract's name
    contact: Contact,
    vote: Sequence[str],
    points: Sequence[int] | None,
    channel: str | None,
    now: datetime,
) -> Cast:
    """Store ``contact``'s ballot in ``round``, replacing any earlier one (its voter key
    kept, a new receipt made). Raises :class:`RoundClosed` when the round is not taking
    ballots. Does not commit: the caller owns the transaction."""
    assert contact.id is not None
    round_id = round if isinstance(round, str) else round.id
    locked = (
        await session.execute(
            select(PbRound)
            .where(PbRound.id == round_id)  # type: ignore[arg-type]
            .with_for_update(read=True)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if locked is None or not taking_ballots(locked, now):
        raise RoundClosed(round_id)
    key = secrets.token_hex(8)
    receipt = new_receipt()
    table = table_of(PbBallot)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = {
        "vote": list(vote),
        "points": None if points is None else list(points),
        "ward_code": contact.ward_code,
        "channel": channel,
        "receipt": receipt,
        "cast_at": now,
        "updated_at": now,
    }
    statement = (
        insert(table)
        .values(round_id=round_id, contact_id=contact.id, voter_key=key, **values)
        .on_conflict_do_update(index_elements=["round_id", "contact_id"], set_=values)
        .returning(table.c.voter_key)
    )
    stored = (await session.execute(statement)).scalar_one()
    return Cast(receipt=receipt, replaced=stored != key, voter_key=stored)


async def ballot_of(session: AsyncSession, *, round_id: str, contact_id: int) -> PbBallot | None:
    found = await session.execute(
        select(PbBallot).where(
            PbBallot.round_id == round_id,  # type: ignore[arg-type]
            PbBallot.contact_id == contact_id,  # type: ignore[arg-type]
        )
    )
    return found.scalar_one_or_none()
