"""Tender alerts: OCDS releases and the contracting processes compiled from them, community
organisations and their subscriptions, the alerts sent, interest marked in a tender, partner
introductions, and where each live feed has got to. Repositories take a session and never
commit; the caller owns the transaction.

What FORGET does: an organisation belongs to the contact who registered it, so its row, its
subscriptions, the alerts sent for them, the interest it marked and the introductions it
asked for or was asked about are deleted with the person. Releases and processes are public
notices, about no one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Float, Text, UniqueConstraint, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from storage.erasure import Rule, Via, not_personal, register, table_of
from storage.types import UTCDateTime


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class TenderRelease(SQLModel, table=True):
    """One OCDS release, stored once by (ocid, release id) however often it is imported."""

    __tablename__ = "tender_releases"
    __table_args__ = (UniqueConstraint("ocid", "release_id", name="uq_tender_release"),)

    id: int | None = Field(default=None, primary_key=True)
    ocid: str = Field(max_length=200, index=True)
    release_id: str = Field(max_length=200)
    date: str = Field(default="", max_length=40)  # as published (ISO 8601); ocdsmerge sorts on it
    source: str = Field(default="", max_length=300)  # the file or feed it came from
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    imported_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class TenderProcess(SQLModel, table=True):
    """A contracting process (one ocid): its compiled release and the normalised fields the
    alerts match on. ``id`` is the short number people reply with (INTERESTED 12).
    ``revision`` counts the changes that alert subscribers again (deadline, value, status);
    ``alerted`` is what those fields were at that revision, ``changes`` what changed."""

    __tablename__ = "tender_processes"

    id: int | None = Field(default=None, primary_key=True)
    ocid: str = Field(max_length=200, unique=True)
    title: str = Field(default="", max_length=500)
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    buyer: str = Field(default="", max_length=300)
    status: str = Field(default="", max_length=32, index=True)
    deadline: datetime | None = _ts(index=True)
    value_amount: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    value_min: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    value_max: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    currency: str = Field(default="", max_length=8)
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cpv: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    regions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    sme: bool | None = None
    vcse: bool | None = None
    reserved: bool = False
    framework: bool = False
    dps: bool = False
    social_value: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    procurement_method: str = Field(default="", max_length=200)
    url: str = Field(default="", max_length=500)
    lots: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    compiled: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    release_count: int = 0
    revision: int = 0
    alerted: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    changes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cancel_told: bool = False  # those who marked interest have been told it was cancelled
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class TenderOrg(SQLModel, table=True):
    """A community organisation, registered by chat by one contact. ``listed``: other
    organisations interested in the same tender may see its name, type, categories and
    regions (never ``contact_details``, which pass only when both sides agree)."""

    __tablename__ = "tender_orgs"

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id", unique=True)
    name: str = Field(max_length=120)
    kind: str = Field(max_length=32)
    number: str | None = Field(default=None, max_length=20)
    contact_details: str = Field(default="", max_length=300)
    listed: bool = False
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class TenderSubscription(SQLModel, table=True):
    """What an organisation wants to hear about, and how often. Empty ``regions``: all of
    the UK. ``next_digest_at``: when a daily or weekly digest is next due."""

    __tablename__ = "tender_subscriptions"

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="tender_orgs.id", index=True)
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cpv: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    regions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    min_value: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    max_value: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    vcse_only: bool = False
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    frequency: str = Field(default="instant", max_length=16)  # instant | daily | weekly
    paused: bool = False
    next_digest_at: datetime | None = _ts(index=True)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class TenderAlert(SQLModel, table=True):
    """A notice matched to a subscription at one revision: sent at once (instant), or
    waiting for the next digest (``sent_at`` empty). Unique per (subscription, process,
    revision): nobody is alerted twice about the same thing."""

    __tablename__ = "tender_alerts"
    __table_args__ = (
        UniqueConstraint("subscription_id", "process_id", "revision", name="uq_tender_alert"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="tender_subscriptions.id", index=True)
    process_id: int = Field(foreign_key="tender_processes.id", index=True)
    revision: int = 0
    kind: str = Field(default="new", max_length=16)  # new | amended | cancelled
    broadcast_id: int | None = Field(default=None, foreign_key="broadcasts.id")
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = _ts(index=True)


class TenderInterest(SQLModel, table=True):
    """An organisation marked interest in a tender (INTERESTED 12)."""

    __tablename__ = "tender_interests"
    __table_args__ = (UniqueConstraint("org_id", "process_id", name="uq_tender_interest"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="tender_orgs.id", index=True)
    process_id: int = Field(foreign_key="tender_processes.id", index=True)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class IntroductionStatus:
    ASKED = "asked"  # the asker said yes by asking; the other side has not answered
    ACCEPTED = "accepted"  # both said yes: contact details were exchanged
    DECLINED = "declined"


class TenderIntroduction(SQLModel, table=True):
    """INTRODUCE: one organisation asks to exchange contact details with another interested
    in the same tender. Details pass only once both have said yes."""

    __tablename__ = "tender_introductions"
    __table_args__ = (
        UniqueConstraint("process_id", "from_org_id", "to_org_id", name="uq_tender_intro"),
    )

    id: int | None = Field(default=None, primary_key=True)
    process_id: int = Field(foreign_key="tender_processes.id", index=True)
    from_org_id: int = Field(foreign_key="tender_orgs.id", index=True)
    to_org_id: int = Field(foreign_key="tender_orgs.id", index=True)
    status: str = Field(default=IntroductionStatus.ASKED, max_length=16)
    asked_sent: bool = False  # the other side has been asked (through the broadcast path)
    result_sent: bool = False  # the asker has been told the answer (and, if yes, details)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    answered_at: datetime | None = _ts()


class TenderFeedState(SQLModel, table=True):
    """Where a live feed's paging has got to: the next page to ask for (path and query, on
    the configured base URL), so a restarted fetch resumes there."""

    __tablename__ = "tender_feed_state"

    source: str = Field(primary_key=True, max_length=32)
    next_page: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    since: str | None = Field(default=None, max_length=40)
    pages: int = 0
    releases: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# ---- what FORGET does (storage/erasure.py) --------------------------------------------------
_ORGS = table_of(TenderOrg)
_SUBS = table_of(TenderSubscription)
register(Rule(table_of(TenderIntroduction), via=Via("from_org_id", _ORGS), delete=True, order=30))
register(Rule(table_of(TenderIntroduction), via=Via("to_org_id", _ORGS), delete=True, order=30))
register(Rule(table_of(TenderInterest), via=Via("org_id", _ORGS), delete=True, order=31))
register(Rule(table_of(TenderAlert), via=Via("subscription_id", _SUBS), delete=True, order=32))
register(Rule(_SUBS, delete=True, order=33))
register(Rule(_ORGS, delete=True, order=34))
not_personal(
    table_of(TenderRelease),
    "public procurement notices as published (OCDS): about buyers and suppliers, no resident",
)


# ---- repositories ---------------------------------------------------------------------------


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


async def add_releases(
    session: AsyncSession, *, rows: Sequence[dict[str, Any]]
) -> set[tuple[str, str]]:
    """Store releases not stored yet; the (ocid, release id) pairs that were new."""
    new: set[tuple[str, str]] = set()
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        result = await session.execute(
            _insert(session, TenderRelease)
            .values(list(chunk))
            .on_conflict_do_nothing(index_elements=["ocid", "release_id"])
            .returning(col(TenderRelease.ocid), col(TenderRelease.release_id))
        )
        new.update((str(o), str(r)) for o, r in result.all())
    return new


async def releases_of(session: AsyncSession, *, ocid: str) -> list[TenderRelease]:
    query = (
        select(TenderRelease)
        .where(col(TenderRelease.ocid) == ocid)
        .order_by(col(TenderRelease.date), col(TenderRelease.id))
    )
    return list((await session.execute(query)).scalars())


async def process_by_ocid(session: AsyncSession, *, ocid: str) -> TenderProcess | None:
    query = select(TenderProcess).where(col(TenderProcess.ocid) == ocid)
    return (await session.execute(query)).scalar_one_or_none()


async def processes(
    session: AsyncSession, *, open_at: datetime | None = None, ids: Sequence[int] | None = None
) -> list[TenderProcess]:
    """Every process (by reference number); with ``open_at``, only those open then."""
    query = select(TenderProcess).order_by(col(TenderProcess.id))
    if open_at is not None:
        query = query.where(
            col(TenderProcess.status) == "active", col(TenderProcess.deadline) > open_at
        )
    if ids is not None:
        query = query.where(col(TenderProcess.id).in_(list(ids)))
    return list((await session.execute(query)).scalars())


async def org_of_contact(session: AsyncSession, *, contact_id: int) -> TenderOrg | None:
    query = select(TenderOrg).where(col(TenderOrg.contact_id) == contact_id)
    return (await session.execute(query)).scalar_one_or_none()


async def orgs(session: AsyncSession) -> list[TenderOrg]:
    return list((await session.execute(select(TenderOrg).order_by(col(TenderOrg.id)))).scalars())


async def subscriptions_of(session: AsyncSession, *, org_id: int) -> list[TenderSubscription]:
    query = (
        select(TenderSubscription)
        .where(col(TenderSubscription.org_id) == org_id)
        .order_by(col(TenderSubscription.id))
    )
    return list((await session.execute(query)).scalars())


async def active_subscriptions(session: AsyncSession) -> list[TenderSubscription]:
    """Subscriptions that are not paused, of contacts who may be messaged."""
    from storage.models import Contact

    query = (
        select(TenderSubscription)
        .join(Contact, col(Contact.id) == col(TenderSubscription.contact_id))
        .where(
            col(TenderSubscription.paused).is_(False),
            col(Contact.opted_out_at).is_(None),
            col(Contact.erased_at).is_(None),
            col(Contact.consent_at).is_not(None),
        )
        .order_by(col(TenderSubscription.id))
    )
    return list((await session.execute(query)).scalars())


async def claim_alerts(
    session: AsyncSession, *, rows: Sequence[dict[str, Any]]
) -> set[int]:
    """Record alerts not recorded yet; the subscription ids that were new for their
    (process, revision). All rows are for one process and revision."""
    if not rows:
        return set()
    result = await session.execute(
        _insert(session, TenderAlert)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=["subscription_id", "process_id", "revision"])
        .returning(col(TenderAlert.subscription_id))
    )
    return {int(s) for s in result.scalars()}


async def alerted_processes(session: AsyncSession, *, subscription_ids: Sequence[int]) -> set[int]:
    """Processes any of these subscriptions has been alerted about (any revision)."""
    if not subscription_ids:
        return set()
    query = select(col(TenderAlert.process_id)).where(
        col(TenderAlert.subscription_id).in_(list(subscription_ids))
    )
    return {int(p) for p in (await session.execute(query)).scalars()}


async def interested_orgs(session: AsyncSession, *, process_id: int) -> list[TenderOrg]:
    query = (
        select(TenderOrg)
        .join(TenderInterest, col(TenderInterest.org_id) == col(TenderOrg.id))
        .where(col(TenderInterest.process_id) == process_id)
        .order_by(col(TenderOrg.id))
    )
    return list((await session.execute(query)).scalars())


async def add_interest(
    session: AsyncSession, *, org_id: int, process_id: int, now: datetime
) -> bool:
    """Mark interest; False when it was marked already."""
    result = await session.execute(
        _insert(session, TenderInterest)
        .values(org_id=org_id, process_id=process_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["org_id", "process_id"])
        .returning(col(TenderInterest.id))
    )
    return result.first() is not None


async def count_rows(session: AsyncSession, model: type[SQLModel]) -> int:
    return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def feed_state(session: AsyncSession, *, source: str) -> TenderFeedState | None:
    return await session.get(TenderFeedState, source, with_for_update=True)
