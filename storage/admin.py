"""The admin web app's tables: staff accounts, their server-side sessions, and the login
throttle; plus the indexes the admin pages need on the platform's tables. Repositories take a
session and never commit.

Staff accounts are not residents: FORGET never touches them (``not_personal``). A session row
holds only a digest of the cookie's token, so a copy of the database does not give anyone a
live session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from sqlalchemy import Column, Index, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from storage.broadcasts import BroadcastRecipient
from storage.erasure import not_personal, table_of
from storage.models import AuditLog, ChannelIdentity, Contact, InboundMessage, OutboundMessage
from storage.types import UTCDateTime

EMAIL_MAX = 190  # "admin:<email>" is the audit log's actor (200 characters)


class Role(StrEnum):
    """What a staff account may do. Each role may do what the ones before it may."""

    VIEWER = "viewer"  # reads every page
    FACILITATOR = "facilitator"  # also broadcasts, runs polls, rounds and assessments
    ADMIN = "admin"  # also manages accounts

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class AdminUser(SQLModel, table=True):
    """A member of council or CSO staff who signs in to the admin web app."""

    __tablename__ = "admin_users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=EMAIL_MAX, unique=True)  # stored lower case
    password_hash: str = Field(max_length=255)
    role: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    password_changed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    disabled_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )

    @property
    def role_enum(self) -> Role:
        return Role(self.role)


class AdminSession(SQLModel, table=True):
    """A signed-in browser. ``id`` is a digest of the cookie's random token; ``expires_at``
    moves forward with use (the idle timeout)."""

    __tablename__ = "admin_sessions"

    id: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="admin_users.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_seen_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


class LoginThrottle(SQLModel, table=True):
    """Failed sign-ins per account (``account:<email>``, whether or not it exists) and per
    address (``address:<ip>``); from the fifth, each failure makes the next try wait longer."""

    __tablename__ = "admin_login_throttle"

    key: str = Field(primary_key=True, max_length=255)
    failures: int = Field(default=0)
    last_failure_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    locked_until: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )


class DailyCount(SQLModel, table=True):
    """A finished UK day's count of one dashboard figure (``joined``, ``opted_out``,
    ``received``, ``sent``), kept so the dashboard never recounts a month of messages. Counted
    once, the first time a dashboard shows the day after it ended; anonymous totals (what
    FORGET erases later stays counted, as the design keeps anonymous aggregates)."""

    __tablename__ = "admin_daily_counts"

    day: date = Field(primary_key=True)
    metric: str = Field(primary_key=True, max_length=16)
    count: int = Field(default=0)
    counted_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


not_personal(
    table_of(AdminUser),
    "staff accounts of the council or CSO (email, password hash, role), not residents; "
    "`civicbot admin disable` ends an account",
)
not_personal(
    table_of(AdminSession),
    "signed-in staff browsers (user_id is a staff account, not a resident's Telegram id)",
)

# ---- indexes the admin pages need on the platform's tables ------------------------------------
# Per-day charts read only the index (time, then what is grouped by); the contact page reads a
# person's messages newest first; the dashboard's last provider errors read a short index.
Index(
    "ix_outbound_created_channel_status",
    col(OutboundMessage.created_at),
    col(OutboundMessage.channel),
    col(OutboundMessage.status),
)
Index("ix_outbound_contact_id_id", col(OutboundMessage.contact_id), col(OutboundMessage.id))
Index("ix_outbound_status_created", col(OutboundMessage.status), col(OutboundMessage.created_at))
Index(
    "ix_outbound_errors_updated",
    col(OutboundMessage.updated_at),
    postgresql_where=col(OutboundMessage.error).is_not(None),
    sqlite_where=col(OutboundMessage.error).is_not(None),
)
Index("ix_inbound_received_channel", col(InboundMessage.received_at), col(InboundMessage.channel))
Index("ix_inbound_contact_id_id", col(InboundMessage.contact_id), col(InboundMessage.id))
Index("ix_contacts_created_at", col(Contact.created_at))
Index("ix_contacts_consent_at", col(Contact.consent_at))
Index("ix_contacts_opted_out_at", col(Contact.opted_out_at))
Index(
    "ix_contacts_ward_language",
    col(Contact.ward_code),
    col(Contact.language),
    col(Contact.erased_at),
)
Index(
    "ix_identities_channel_contact", col(ChannelIdentity.channel), col(ChannelIdentity.contact_id)
)
Index("ix_identities_address_channel", col(ChannelIdentity.address), col(ChannelIdentity.channel))
Index(
    "ix_broadcast_recipients_broadcast_outbound",
    col(BroadcastRecipient.broadcast_id),
    col(BroadcastRecipient.outbound_id),
)
Index("ix_outbound_id_status", col(OutboundMessage.id), col(OutboundMessage.status))
Index("ix_audit_log_action_at", col(AuditLog.action), col(AuditLog.at))
Index("ix_audit_log_actor_at", col(AuditLog.actor), col(AuditLog.at))


def normalise_email(email: str) -> str:
    return email.strip().lower()


def token_digest(token: str) -> str:
    """What is stored of a session cookie's token."""
    return hashlib.sha256(token.encode()).hexdigest()


# ---- accounts ---------------------------------------------------------------------------------


async def user_by_email(session: AsyncSession, *, email: str) -> AdminUser | None:
    query = select(AdminUser).where(col(AdminUser.email) == normalise_email(email))
    return (await session.execute(query)).scalar_one_or_none()


async def list_users(session: AsyncSession) -> list[AdminUser]:
    return list((await session.execute(select(AdminUser).order_by(col(AdminUser.email)))).scalars())


async def count_users(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(AdminUser))).scalar_one())


async def create_user(
    session: AsyncSession, *, email: str, password_hash: str, role: Role, now: datetime
) -> AdminUser:
    """A new account. Raises ValueError when the email is taken."""
    email = normalise_email(email)
    if await user_by_email(session, email=email) is not None:
        raise ValueError(f"there is already an account for {email}")
    user = AdminUser(
        email=email,
        password_hash=password_hash,
        role=role.value,
        created_at=now,
        updated_at=now,
        password_changed_at=now,
    )
    session.add(user)
    await session.flush()
    return user


async def end_sessions(session: AsyncSession, *, user_id: int) -> None:
    """Sign the account out everywhere (a new password, a disabled account, a role change)."""
    await session.execute(delete(AdminSession).where(col(AdminSession.user_id) == user_id))


# ---- sessions ---------------------------------------------------------------------------------


async def start_session(
    session: AsyncSession,
    *,
    token: str,
    csrf_token: str,
    user_id: int,
    now: datetime,
    idle: timedelta,
) -> AdminSession:
    row = AdminSession(
        id=token_digest(token),
        user_id=user_id,
        csrf_token=csrf_token,
        created_at=now,
        last_seen_at=now,
        expires_at=now + idle,
    )
    session.add(row)
    await session.flush()
    return row


@dataclass(frozen=True)
class SignedIn:
    session_id: str
    csrf_token: str
    user_id: int
    email: str
    role: Role


SLIDE_EVERY = timedelta(seconds=60)  # how stale last_seen_at may get before it is written


async def touch_session(
    session: AsyncSession, *, token: str, now: datetime, idle: timedelta
) -> SignedIn | None:
    """The signed-in account for a cookie's token, its idle time renewed; None when the
    session is unknown, has been idle too long, or its account is disabled."""
    digest = token_digest(token)
    query = (
        select(AdminSession, AdminUser)
        .join(AdminUser, col(AdminUser.id) == col(AdminSession.user_id))
        .where(col(AdminSession.id) == digest)
    )
    found = (await session.execute(query)).first()
    if found is None:
        return None
    row, user = found
    if row.expires_at <= now or user.disabled_at is not None:
        await session.execute(delete(AdminSession).where(col(AdminSession.id) == digest))
        return None
    if now - row.last_seen_at >= SLIDE_EVERY:
        await session.execute(
            update(AdminSession)
            .where(col(AdminSession.id) == digest)
            .values(last_seen_at=now, expires_at=now + idle)
        )
    assert user.id is not None
    return SignedIn(digest, row.csrf_token, user.id, user.email, Role(user.role))


async def end_session(session: AsyncSession, *, token: str) -> None:
    await session.execute(delete(AdminSession).where(col(AdminSession.id) == token_digest(token)))


async def purge_sessions(session: AsyncSession, *, now: datetime) -> int:
    result = await session.execute(delete(AdminSession).where(col(AdminSession.expires_at) <= now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---- the login throttle -----------------------------------------------------------------------

FREE_FAILURES = 5  # failures before any wait
FIRST_WAIT = timedelta(seconds=30)  # after the fifth failure; doubles with each one after
LONGEST_WAIT = timedelta(hours=1)
FORGIVEN_AFTER = timedelta(days=1)  # a key with no failure for this long starts again


def wait_after(failures: int) -> timedelta | None:
    """How long a key waits after its ``failures``-th failure in a row (None: no wait)."""
    if failures < FREE_FAILURES:
        return None
    doubling = min(failures - FREE_FAILURES, 20)
    wait: timedelta = FIRST_WAIT * (2**doubling)
    return min(wait, LONGEST_WAIT)


async def locked_until(session: AsyncSession, *, keys: list[str], now: datetime) -> datetime | None:
    """The latest time any of ``keys`` must wait until, if one is waiting now."""
    query = select(func.max(col(LoginThrottle.locked_until))).where(
        col(LoginThrottle.key).in_(keys), col(LoginThrottle.locked_until) > now
    )
    return (await session.execute(query)).scalar_one_or_none()


async def record_failure(session: AsyncSession, *, keys: list[str], now: datetime) -> None:
    for key in keys:
        row = await session.get(LoginThrottle, key, with_for_update=True)
        if row is None:
            row = LoginThrottle(key=key, failures=0, last_failure_at=now)
            session.add(row)
        elif now - row.last_failure_at >= FORGIVEN_AFTER:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        wait = wait_after(row.failures)
        row.locked_until = None if wait is None else now + wait
    await session.flush()


async def purge_failures(session: AsyncSession, *, now: datetime) -> int:
    """Forget keys whose last failure is long past and that wait for nothing."""
    result = await session.execute(
        delete(LoginThrottle).where(
            col(LoginThrottle.last_failure_at) < now - FORGIVEN_AFTER,
            or_(col(LoginThrottle.locked_until).is_(None), col(LoginThrottle.locked_until) <= now),
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def clear_failures(session: AsyncSession, *, key: str) -> None:
    await session.execute(delete(LoginThrottle).where(col(LoginThrottle.key) == key))


# ---- dashboard day counts ---------------------------------------------------------------------


async def daily_counts(
    session: AsyncSession, *, first: date, last: date
) -> dict[tuple[date, str], int]:
    query = select(DailyCount).where(col(DailyCount.day) >= first, col(DailyCount.day) <= last)
    return {(row.day, row.metric): row.count for row in (await session.execute(query)).scalars()}


async def save_daily_counts(
    session: AsyncSession, *, counts: dict[tuple[date, str], int], now: datetime
) -> None:
    """Keep finished days' counts (a day another request saved first is left as it is)."""
    if not counts:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert(DailyCount)
        .values(
            [
                {"day": day, "metric": metric, "count": n, "counted_at": now}
                for (day, metric), n in counts.items()
            ]
        )
        .on_conflict_do_nothing(index_elements=["day", "metric"])
    )
