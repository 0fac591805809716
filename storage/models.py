"""civicbot's tables. Schema changes go through Alembic (``storage/migrations``) only.

All timestamps are timezone-aware UTC (:class:`storage.types.UTCDateTime`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, ColumnElement, Index, UniqueConstraint, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from storage.erasure import ERASED_AT, Rule, Via, not_personal, register, table_of
from storage.types import UTCDateTime


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class Ward(SQLModel, table=True):
    __tablename__ = "wards"

    code: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    name_cy: str | None = Field(default=None, max_length=200)


class PostcodeWard(SQLModel, table=True):
    """Postcode (normalised: upper case, no spaces) to ward."""

    __tablename__ = "postcode_wards"

    postcode: str = Field(primary_key=True, max_length=8)
    ward_code: str = Field(foreign_key="wards.code", index=True, max_length=32)


class Contact(SQLModel, table=True):
    """A person, whichever channels they use. FORGET blanks the personal fields."""

    __tablename__ = "contacts"

    id: int | None = Field(default=None, primary_key=True)
    language: str = Field(default="en", max_length=8)
    postcode: str | None = Field(default=None, max_length=8)
    ward_code: str | None = Field(default=None, foreign_key="wards.code", max_length=32)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    consent_at: datetime | None = _ts()
    opted_out_at: datetime | None = _ts()
    erased_at: datetime | None = _ts()


class ChannelIdentity(SQLModel, table=True):
    """An address on one channel (a phone number, a Telegram chat id) belonging to a contact."""

    __tablename__ = "channel_identities"
    __table_args__ = (UniqueConstraint("channel", "address", name="uq_identity_channel_address"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    address: str = Field(max_length=64)
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # The person's name as the channel gives it (Telegram: first and last name, @username),
    # for staff looking someone up; gone with the identity on FORGET.
    display_name: str | None = Field(default=None, max_length=128)


class Conversation(SQLModel, table=True):
    """Where one identity is in a flow. Read and written only under that identity's lock."""

    __tablename__ = "conversations"

    id: int | None = Field(default=None, primary_key=True)
    identity_id: int = Field(foreign_key="channel_identities.id", unique=True)
    flow_id: str | None = Field(default=None, max_length=64)
    node_id: str | None = Field(default=None, max_length=64)
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    expires_at: datetime | None = _ts(index=True)
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class InboundMessage(SQLModel, table=True):
    __tablename__ = "inbound_messages"
    __table_args__ = (UniqueConstraint("channel", "provider_id", name="uq_inbound_provider_id"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    provider_id: str = Field(max_length=128)
    address: str | None = Field(default=None, max_length=64)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    text: str | None = None
    raw: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class OutboxStatus(StrEnum):
    QUEUED = "queued"  # waiting for the dispatcher (new, or a retry)
    SENDING = "sending"  # claimed by a dispatcher; lease ends at next_attempt_at
    SENT = "sent"  # accepted by the provider
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"  # permanent failure or attempts exhausted
    CANCELLED = "cancelled"  # recipient opted out before it went


class Priority:
    """Lower goes first: replies to a person before bulk messages."""

    REPLY = 0
    BULK = 10


class OutboundMessage(SQLModel, table=True):
    """The outbox: every message is a row here before any send."""

    __tablename__ = "outbound_messages"
    __table_args__ = (Index("ix_outbox_due", "status", "priority", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    address: str | None = Field(default=None, max_length=64)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    inbound_id: int | None = Field(default=None, foreign_key="inbound_messages.id", index=True)
    content: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    priority: int = Field(default=Priority.REPLY)
    ignore_opt_out: bool = Field(default=False)
    status: str = Field(default=OutboxStatus.QUEUED, max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    provider_id: str | None = Field(default=None, max_length=128, index=True)
    error: str | None = Field(default=None, max_length=500)
    segments: int | None = None
    # The current send attempt (see bot/dispatcher.py): its id (Twilio echoes it in the status
    # callback URL), which dispatcher claimed it, and when a send that may have reached the
    # provider began (set just before sending, cleared once the outcome is known).
    attempt_id: str | None = Field(default=None, max_length=32, index=True)
    claimed_by: str | None = Field(default=None, max_length=128)
    in_flight_since: datetime | None = _ts()
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = _ts()
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class HeldDeliveryReport(SQLModel, table=True):
    """A delivery report that arrived before the send it is about was recorded.

    Twilio may call back (queued, sent, even failed) before its REST reply with the message
    SID reaches the dispatcher. Such a report waits here and is applied, then deleted, when
    the dispatcher records that SID; one never matched is purged after a day.
    """

    __tablename__ = "held_delivery_reports"

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    provider_id: str = Field(max_length=128, index=True)
    status: str = Field(max_length=16)
    provider_status: str = Field(max_length=32)
    error: str | None = Field(default=None, max_length=500)
    opted_out: bool = Field(default=False)
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


class ForgottenProviderId(SQLModel, table=True):
    """A digest of the provider id of a message erased by FORGET (see
    ``repositories.forgotten_id``): a delivery report that comes for it later is recognised
    and dropped instead of being held with the id (which the provider maps to a phone
    number). Purged after a week."""

    __tablename__ = "forgotten_provider_ids"

    digest: str = Field(primary_key=True, max_length=80)
    forgotten_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


class Answer(SQLModel, table=True):
    """An answer given in a flow. FORGET detaches it from the contact but keeps it counted,
    or deletes it when it is ``personal``."""

    __tablename__ = "answers"

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    flow_id: str = Field(max_length=64)
    node_id: str = Field(max_length=64)
    key: str = Field(max_length=64)
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Personal in itself (free text, a date of birth): FORGET deletes it rather than
    # detaching it (flows mark such questions ``personal: true``).
    personal: bool = Field(default=False)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    actor: str = Field(max_length=200)  # as broadcasts.actor: "admin:<email>", "cli:<user>"
    action: str = Field(max_length=64)
    subject: str | None = Field(default=None, max_length=200)
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class TelegramGroup(SQLModel, table=True):
    """A Telegram group the bot was added to; an admin assigns it to a ward."""

    __tablename__ = "telegram_groups"

    chat_id: str = Field(primary_key=True, max_length=32)
    title: str = Field(default="", max_length=255)
    kind: str = Field(default="group", max_length=16)  # group | supergroup
    ward_code: str | None = Field(default=None, foreign_key="wards.code", max_length=32)
    active: bool = Field(default=True)  # False once the bot is removed
    added_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# ---- what FORGET does to these tables (storage/erasure.py) -------------------------------------
# Messages are deleted outright: their text, their addresses and provider ids (a Twilio SID or
# a Telegram chat:message id leads back to the person), and even their times would link what
# is kept to the person. Answers stay counted, detached, unless they are personal in
# themselves. The contact row stays, blank, so that ids in the audit log stay meaningless.
async def _remember_provider_ids(
    session: AsyncSession, mine: ColumnElement[bool], now: datetime
) -> None:
    """Keep digests of the person's messages' provider ids, so late delivery reports for
    them are dropped rather than held (with the id) for a day."""
    table = table_of(OutboundMessage)
    query = select(table.c.channel, table.c.provider_id).where(
        mine, table.c.provider_id.is_not(None)
    )
    for channel, provider_id in (await session.execute(query)).all():
        digest = forgotten_digest(channel, str(provider_id))
        if await session.get(ForgottenProviderId, digest) is None:
            session.add(ForgottenProviderId(digest=digest, forgotten_at=now))
    await session.flush()


def forgotten_digest(channel: str, provider_id: str) -> str:
    """What is kept of an erased message's provider id: a digest (provider ids are long
    random strings, so it can't be turned back into one)."""
    return hashlib.sha256(f"{channel}\0{provider_id}".encode()).hexdigest()


register(
    Rule(table_of(OutboundMessage), delete=True, order=10, before=_remember_provider_ids)
)
register(Rule(table_of(InboundMessage), delete=True, order=20))
register(
    Rule(
        table_of(Answer),
        delete=True,
        delete_where=col(Answer.personal).is_(True),
        blank={"contact_id": None},
        keeps={"value": "an answer that is not personal in itself stays counted, detached"},
    )
)
register(
    Rule(
        table_of(Conversation),
        via=Via("identity_id", table_of(ChannelIdentity)),
        delete=True,
        order=60,
    )
)
register(Rule(table_of(ChannelIdentity), delete=True, order=70))
register(
    Rule(
        table_of(Contact),
        link="id",
        blank={
            "language": "en",
            "postcode": None,
            "ward_code": None,
            "consent_at": None,
            "opted_out_at": None,
            "erased_at": ERASED_AT,
        },
        order=99,
    )
)
not_personal(
    table_of(HeldDeliveryReport),
    "a delivery report waiting for its send to be recorded names no contact; it is applied "
    "(and deleted) within seconds, and purged after a day if nothing matches",
)
not_personal(
    table_of(PostcodeWard),
    "the postcode-to-ward lookup the council loads: public reference data, about no one",
)
