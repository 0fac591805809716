"""Needs assessments: their definitions, the census they are weighed against, residents'
responses, and what residents said "about you" (special-category data). Repositories take a
session and never commit; the caller owns the transaction.

What FORGET does here (registered below):

- ``needs_profiles`` and ``needs_profile_answers`` (the person's consent to the "about you"
  questions and their answers) are deleted;
- ``needs_responses`` stay counted (the ranked picks and the ward), detached: the contact,
  the random respondent id, the free text and the demographics snapshot are blanked.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint, delete, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from storage.erasure import Rule, not_personal, register, table_of
from storage.models import Ward
from storage.types import UTCDateTime

PREFER_NOT = "prefer_not_to_say"
"""The stored answer for "prefer not to say" (an answer, unlike a question never asked)."""


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class NeedsAssessment(SQLModel, table=True):
    """A needs assessment as defined in its YAML file (``civicbot needs open``). ``wards``
    None means every ward. It takes answers from ``opens_at`` until ``closes_at`` (or until
    ``closed_at``, when closed early); ``opened_at`` records that the scheduler has opened it
    (and sent the invitation, with ``announce``)."""

    __tablename__ = "needs_assessments"

    id: str = Field(primary_key=True, max_length=64)
    title: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    wards: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    opens_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    closes_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    picks: int = Field(default=3)
    ask_free_text: bool = Field(default=False)
    about_you: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # [{"id", "en", "cy"}], in the file's order (the order residents see).
    categories: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    announce: bool = Field(default=False)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    opened_at: datetime | None = _ts()
    closed_at: datetime | None = _ts()

    def is_open(self, now: datetime) -> bool:
        return self.opens_at <= now < self.closes_at and self.closed_at is None

    def has_closed(self, now: datetime) -> bool:
        return self.closed_at is not None or now >= self.closes_at

    def covers(self, ward_code: str | None) -> bool:
        if ward_code is None:
            return False
        return self.wards is None or ward_code in self.wards


class CensusPopulation(SQLModel, table=True):
    """One census count: residents of a ward in one group of one dimension (``age_band``
    ``25-44``). Loaded whole by ``civicbot census load``; ``position`` keeps the file's order
    of groups (the order residents are offered them)."""

    __tablename__ = "census_populations"

    ward_code: str = Field(foreign_key="wards.code", primary_key=True, max_length=32)
    dimension: str = Field(primary_key=True, max_length=64)
    group_name: str = Field(primary_key=True, max_length=100)
    group_cy: str | None = Field(default=None, max_length=100)
    population: int
    position: int = Field(default=0)


class NeedsResponse(SQLModel, table=True):
    """A resident's answer to an assessment: one row per (assessment, contact), replaced when
    they answer again (the latest answer counts). ``ward_code`` and ``demographics`` are as
    they were when the person answered; a later change to their "about you" answers does not
    rewrite them. ``demographics`` maps dimension -> group (or :data:`PREFER_NOT`); a
    dimension the person was not asked, or skipped, is absent."""

    __tablename__ = "needs_responses"
    __table_args__ = (
        UniqueConstraint("assessment_id", "contact_id", name="uq_needs_response_contact"),
    )

    id: int | None = Field(default=None, primary_key=True)
    assessment_id: str = Field(foreign_key="needs_assessments.id", index=True, max_length=64)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    respondent_key: str | None = Field(default=None, max_length=32)  # random, for exports
    ward_code: str | None = Field(default=None, max_length=32)
    picks: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    free_text: str | None = Field(default=None, max_length=500)
    demographics: dict[str, str] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class NeedsProfile(SQLModel, table=True):
    """A contact's explicit consent to (or refusal of) the "about you" questions."""

    __tablename__ = "needs_profiles"

    contact_id: int = Field(foreign_key="contacts.id", primary_key=True)
    consent_at: datetime | None = _ts()
    declined_at: datetime | None = _ts()
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class NeedsProfileAnswer(SQLModel, table=True):
    """A contact's current answer to one "about you" question (asked once per contact)."""

    __tablename__ = "needs_profile_answers"
    __table_args__ = (
        UniqueConstraint("contact_id", "dimension", name="uq_needs_profile_dimension"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    dimension: str = Field(max_length=64)
    group_name: str = Field(max_length=100)
    answered_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# ---- what FORGET does (storage/erasure.py) ----------------------------------------------------
register(Rule(table_of(NeedsProfileAnswer), delete=True, order=40))
register(Rule(table_of(NeedsProfile), delete=True, order=41))
register(
    Rule(
        table_of(NeedsResponse),
        blank={
            "contact_id": None,
            "respondent_key": None,
            "free_text": None,
            "demographics": None,
        },
        keeps={},
    )
)
not_personal(
    table_of(CensusPopulation),
    "published census counts per ward and group: public statistics about no one in particular",
)


# ---- assessments ------------------------------------------------------------------------------


async def get_assessment(session: AsyncSession, assessment_id: str) -> NeedsAssessment | None:
    return await session.get(NeedsAssessment, assessment_id, populate_existing=True)


async def list_assessments(session: AsyncSession) -> list[NeedsAssessment]:
    query = select(NeedsAssessment).order_by(col(NeedsAssessment.opens_at))
    return list((await session.execute(query)).scalars())


async def open_assessments(session: AsyncSession, *, now: datetime) -> list[NeedsAssessment]:
    """Assessments taking answers now, the most recently opened first."""
    query = (
        select(NeedsAssessment)
        .where(
            col(NeedsAssessment.opens_at) <= now,
            col(NeedsAssessment.closes_at) > now,
            col(NeedsAssessment.closed_at).is_(None),
        )
        .order_by(col(NeedsAssessment.opens_at).desc(), col(NeedsAssessment.id))
    )
    return list((await session.execute(query)).scalars())


async def latest_started(session: AsyncSession, *, now: datetime) -> list[NeedsAssessment]:
    """Assessments that have opened (open or closed since), the most recent first."""
    query = (
        select(NeedsAssessment)
        .where(col(NeedsAssessment.opens_at) <= now)
        .order_by(col(NeedsAssessment.opens_at).desc(), col(NeedsAssessment.id))
    )
    return list((await session.execute(query)).scalars())


async def due_to_open(session: AsyncSession, *, now: datetime) -> list[NeedsAssessment]:
    query = select(NeedsAssessment).where(
        col(NeedsAssessment.opens_at) <= now,
        col(NeedsAssessment.opened_at).is_(None),
        col(NeedsAssessment.closed_at).is_(None),
        col(NeedsAssessment.closes_at) > now,
    )
    return list((await session.execute(query)).scalars())


async def due_to_close(session: AsyncSession, *, now: datetime) -> list[NeedsAssessment]:
    query = select(NeedsAssessment).where(
        col(NeedsAssessment.closes_at) <= now, col(NeedsAssessment.closed_at).is_(None)
    )
    return list((await session.execute(query)).scalars())


async def ward_codes(session: AsyncSession) -> dict[str, Ward]:
    return {w.code: w for w in (await session.execute(select(Ward))).scalars()}


# ---- census ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CensusRow:
    ward_code: str
    dimension: str
    group: str
    population: int
    group_cy: str | None = None


async def replace_census(session: AsyncSession, *, rows: Sequence[CensusRow]) -> None:
    """Replace every dimension named in ``rows`` with ``rows`` (others stay as they are)."""
    dimensions = sorted({r.dimension for r in rows})
    await session.execute(
        delete(CensusPopulation).where(col(CensusPopulation.dimension).in_(dimensions))
    )
    order: dict[tuple[str, str], int] = {}
    for row in rows:
        order.setdefault((row.dimension, row.group), len(order))
    session.add_all(
        CensusPopulation(
            ward_code=r.ward_code,
            dimension=r.dimension,
            group_name=r.group,
            group_cy=r.group_cy,
            population=r.population,
            position=order[(r.dimension, r.group)],
        )
        for r in rows
    )
    await session.flush()


async def census_rows(
    session: AsyncSession, *, dimensions: Iterable[str] | None = None
) -> list[CensusRow]:
    query = select(CensusPopulation).order_by(
        col(CensusPopulation.dimension), col(CensusPopulation.position)
    )
    if dimensions is not None:
        query = query.where(col(CensusPopulation.dimension).in_(list(dimensions)))
    return [
        CensusRow(r.ward_code, r.dimension, r.group_name, r.population, r.group_cy)
        for r in (await session.execute(query)).scalars()
    ]


async def census_groups(session: AsyncSession) -> dict[str, list[tuple[str, str | None]]]:
    """Each loaded dimension's groups (name, Welsh name), in the file's order."""
    query = (
        select(
            col(CensusPopulation.dimension),
            col(CensusPopulation.group_name),
            func.max(col(CensusPopulation.group_cy)),
            func.min(col(CensusPopulation.position)),
        )
        .group_by(col(CensusPopulation.dimension), col(CensusPopulation.group_name))
        .order_by(col(CensusPopulation.dimension), func.min(col(CensusPopulation.position)))
    )
    groups: dict[str, list[tuple[str, str | None]]] = {}
    for dimension, group, group_cy, _ in (await session.execute(query)).all():
        groups.setdefault(str(dimension), []).append((str(group), group_cy))
    return groups


# ---- responses -------------------------------------------------------------------------------


async def save_response(
    session: AsyncSession,
    *,
    assessment_id: str,
    contact_id: int,
    ward_code: str | None,
    picks: Sequence[str],
    free_text: str | None,
    demographics: dict[str, str],
    now: datetime,
) -> NeedsResponse:
    """The person's answer; an earlier one to the same assessment is replaced (the respondent
    id stays, so an export shows one respondent)."""
    query = select(NeedsResponse).where(
        col(NeedsResponse.assessment_id) == assessment_id,
        col(NeedsResponse.contact_id) == contact_id,
    )
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        row = NeedsResponse(
            assessment_id=assessment_id,
            contact_id=contact_id,
            respondent_key=secrets.token_hex(8),
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    row.ward_code = ward_code
    row.picks = list(picks)
    row.free_text = free_text
    row.demographics = dict(demographics) or None
    row.updated_at = now
    await session.flush()
    return row


async def response_of(
    session: AsyncSession, *, assessment_id: str, contact_id: int
) -> NeedsResponse | None:
    query = select(NeedsResponse).where(
        col(NeedsResponse.assessment_id) == assessment_id,
        col(NeedsResponse.contact_id) == contact_id,
    )
    return (await session.execute(query)).scalar_one_or_none()


async def response_rows(
    session: AsyncSession, *, assessment_id: str
) -> list[tuple[str | None, list[str], dict[str, str] | None]]:
    """(ward, picks, demographics) of every response, for the report. The JSON columns are
    read as text and decoded in one call: per-row decoding is most of the time a report of
    100,000 responses takes."""
    query = (
        select(
            col(NeedsResponse.ward_code),
            type_coerce(col(NeedsResponse.picks), Text),
            type_coerce(col(NeedsResponse.demographics), Text),
        )
        .where(col(NeedsResponse.assessment_id) == assessment_id)
        .order_by(col(NeedsResponse.id))
    )
    rows = (await session.execute(query)).all()
    picks = _decode([p for _, p, _ in rows])
    demographics = _decode([d for _, _, d in rows])
    return [
        (w, list(p or []), d or None)
        for (w, _, _), p, d in zip(rows, picks, demographics, strict=True)
    ]


def _decode(values: Sequence[Any]) -> list[Any]:
    """JSON texts (or values a driver already decoded, or NULLs) as Python values."""
    if all(isinstance(v, str) or v is None for v in values):
        return list(json.loads("[" + ",".join("null" if v is None else v for v in values) + "]"))
    return [json.loads(v) if isinstance(v, str) else v for v in values]


async def export_rows(session: AsyncSession, *, assessment_id: str) -> list[NeedsResponse]:
    query = (
        select(NeedsResponse)
        .where(col(NeedsResponse.assessment_id) == assessment_id)
        .order_by(col(NeedsResponse.id))
    )
    return list((await session.execute(query)).scalars())


# ---- "about you" -----------------------------------------------------------------------------


async def profile(session: AsyncSession, *, contact_id: int) -> NeedsProfile | None:
    return await session.get(NeedsProfile, contact_id)


async def set_consent(
    session: AsyncSession, *, contact_id: int, consent: bool, now: datetime
) -> NeedsProfile:
    row = await session.get(NeedsProfile, contact_id)
    if row is None:
        row = NeedsProfile(contact_id=contact_id, updated_at=now)
        session.add(row)
    if consent:
        row.consent_at, row.declined_at = now, None
    else:  # a refusal also withdraws earlier answers: nothing is kept without consent
        row.consent_at, row.declined_at = None, now
        await session.execute(
            delete(NeedsProfileAnswer).where(col(NeedsProfileAnswer.contact_id) == contact_id)
        )
    row.updated_at = now
    await session.flush()
    return row


async def profile_answers(session: AsyncSession, *, contact_id: int) -> dict[str, str]:
    query = select(NeedsProfileAnswer).where(col(NeedsProfileAnswer.contact_id) == contact_id)
    return {a.dimension: a.group_name for a in (await session.execute(query)).scalars()}


async def set_profile_answer(
    session: AsyncSession, *, contact_id: int, dimension: str, group: str, now: datetime
) -> None:
    query = select(NeedsProfileAnswer).where(
        col(NeedsProfileAnswer.contact_id) == contact_id,
        col(NeedsProfileAnswer.dimension) == dimension,
    )
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        row = NeedsProfileAnswer(
            contact_id=contact_id, dimension=dimension, group_name=group, answered_at=now
        )
        session.add(row)
    row.group_name = group
    row.answered_at = now
    await session.flush()
