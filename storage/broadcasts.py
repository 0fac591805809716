"""Broadcasts: one row per broadcast, one row per recipient, so that a broadcast reaches each
contact (or group) at most once however often it is sent. Repositories take a session and
never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from storage.erasure import Rule, register, table_of
from storage.models import OutboundMessage
from storage.types import UTCDateTime


class BroadcastStatus:
    SCHEDULED = "scheduled"  # waits for send_at
    SENDING = "sending"  # recipients being queued
    QUEUED = "queued"  # every recipient's message is in the outbox
    CANCELLED = "cancelled"


class Broadcast(SQLModel, table=True):
    """A message, or a flow started, for a segment of contacts and/or Telegram groups."""

    __tablename__ = "broadcasts"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)  # same key: the same broadcast
    label: str = Field(default="", max_length=200)
    kind: str = Field(max_length=16)  # message | flow
    texts: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    flow_id: str | None = Field(default=None, max_length=64)
    variables: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    audience: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    actor: str = Field(max_length=200)
    status: str = Field(default=BroadcastStatus.SENDING, max_length=16)
    recipients: int = Field(default=0)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    send_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True, index=True)
    )
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )


class BroadcastRecipient(SQLModel, table=True):
    """Who a broadcast has reached: a contact or a group, once each."""

    __tablename__ = "broadcast_recipients"
    __table_args__ = (
        UniqueConstraint("broadcast_id", "contact_id", name="uq_broadcast_contact"),
        UniqueConstraint("broadcast_id", "group_chat_id", name="uq_broadcast_group"),
    )

    id: int | None = Field(default=None, primary_key=True)
    broadcast_id: int = Field(foreign_key="broadcasts.id", index=True)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    group_chat_id: str | None = Field(default=None, max_length=32)
    channel: str = Field(max_length=32)
    outbound_id: int | None = Field(default=None, foreign_key="outbound_messages.id", index=True)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# Who was sent what is about the person: gone with FORGET (before their messages, which
# these rows point at).
register(Rule(table_of(BroadcastRecipient), delete=True, order=5))


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


async def get_or_create(session: AsyncSession, broadcast: Broadcast) -> tuple[Broadcast, bool]:
    """The broadcast with ``broadcast.key``, created from ``broadcast`` if there is none yet;
    True when it was created. Two concurrent calls with one key make one broadcast."""
    values = broadcast.model_dump(exclude={"id"})
    created = await session.execute(
        _insert(session, Broadcast)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(col(Broadcast.id))
    )
    new_id = created.scalar_one_or_none()
    query = (
        select(Broadcast)
        .where(col(Broadcast.key) == broadcast.key)
        .execution_options(populate_existing=True)
    )
    row = (await session.execute(query)).scalar_one()
    return row, new_id is not None


async def claim_contacts(
    session: AsyncSession,
    *,
    broadcast_id: int,
    recipients: Sequence[tuple[int, str]],
    now: datetime,
) -> set[int]:
    """Record (contact id, channel) pairs as recipients; the contact ids that were new (the
    others had this broadcast already)."""
    if not recipients:
        return set()
    result = await session.execute(
        _insert(session, BroadcastRecipient)
        .values(
            [
                {
                    "broadcast_id": broadcast_id,
                    "contact_id": contact_id,
                    "channel": channel,
                    "created_at": now,
                }
                for contact_id, channel in recipients
            ]
        )
        .on_conflict_do_nothing(index_elements=["broadcast_id", "contact_id"])
        .returning(col(BroadcastRecipient.contact_id))
    )
    return {int(c) for c in result.scalars()}


async def claim_group(
    session: AsyncSession, *, broadcast_id: int, chat_id: str, channel: str, now: datetime
) -> bool:
    """Record a group as a recipient; False when it had this broadcast already."""
    result = await session.execute(
        _insert(session, BroadcastRecipient)
        .values(broadcast_id=broadcast_id, group_chat_id=chat_id, channel=channel, created_at=now)
        .on_conflict_do_nothing(index_elements=["broadcast_id", "group_chat_id"])
        .returning(col(BroadcastRecipient.id))
    )
    return result.first() is not None


async def link_outbound(
    session: AsyncSession,
    *,
    broadcast_id: int,
    contact_id: int | None = None,
    group_chat_id: str | None = None,
    outbound_id: int,
) -> None:
    query = select(BroadcastRecipient).where(col(BroadcastRecipient.broadcast_id) == broadcast_id)
    if contact_id is not None:
        query = query.where(col(BroadcastRecipient.contact_id) == contact_id)
    else:
        query = query.where(col(BroadcastRecipient.group_chat_id) == group_chat_id)
    row = (await session.execute(query)).scalar_one()
    row.outbound_id = outbound_id


async def progress(session: AsyncSession, *, broadcast_id: int) -> dict[str, int]:
    """How the broadcast's messages stand: recipients per outbox status."""
    query = (
        select(col(OutboundMessage.status), func.count())
        .select_from(BroadcastRecipient)
        .join(OutboundMessage, col(OutboundMessage.id) == col(BroadcastRecipient.outbound_id))
        .where(col(BroadcastRecipient.broadcast_id) == broadcast_id)
        .group_by(col(OutboundMessage.status))
    )
    return {str(status): int(n) for status, n in (await session.execute(query)).all()}


async def due_scheduled(session: AsyncSession, *, now: datetime) -> list[Broadcast]:
    query = (
        select(Broadcast)
        .where(
            col(Broadcast.status) == BroadcastStatus.SCHEDULED,
            col(Broadcast.send_at) <= now,
        )
        .order_by(col(Broadcast.send_at))
    )
    return list((await session.execute(query)).scalars())
