"""Repositories: small functions over a session. They never commit; the caller owns the
transaction so that state, answers and outbox rows land together or not at all."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage import erasure, schema
from storage.models import (
    AuditLog,
    ChannelIdentity,
    Contact,
    Conversation,
    ForgottenProviderId,
    HeldDeliveryReport,
    InboundMessage,
    OutboundMessage,
    OutboxStatus,
    PostcodeWard,
    Priority,
    Ward,
    forgotten_digest,
)

assert schema.TABLE_MODULES  # every table's erasure rule is registered before erase() runs


def dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _insert(session: AsyncSession, table: Any) -> Any:
    return (pg_insert if dialect(session) == "postgresql" else sqlite_insert)(table)


def compact_postcode(postcode: str) -> str:
    return "".join(postcode.split()).upper()


# ---- inbound ----------------------------------------------------------------------------------


_INBOUND_TABLE: Table = InboundMessage.__table__  # type: ignore[attr-defined]
# Built once (values bound at execution), so SQLAlchemy computes its cache key once.
_RECORD_INBOUND_PG, _RECORD_INBOUND_SQLITE = (
    insert_for(_INBOUND_TABLE)
    .on_conflict_do_nothing(index_elements=["channel", "provider_id"])
    .returning(_INBOUND_TABLE.c.id)
    for insert_for in (pg_insert, sqlite_insert)
)


async def record_inbound(
    session: AsyncSession,
    *,
    channel: str,
    provider_id: str,
    address: str,
    text: str,
    raw: dict[str, Any],
    now: datetime,
    contact_id: int | None = None,
) -> int | None:
    """Store an inbound message (from ``contact_id`` when already known); None when this
    provider id was seen before (a redelivery)."""
    stmt = _RECORD_INBOUND_PG if dialect(session) == "postgresql" else _RECORD_INBOUND_SQLITE
    values = {
        "channel": channel,
        "provider_id": provider_id,
        "address": address,
        "text": text,
        "raw": raw,
        "received_at": now,
        "contact_id": contact_id,
    }
    row = (await session.execute(stmt, values)).first()
    return None if row is None else int(row[0])


# ---- contacts and identities ------------------------------------------------------------------


async def lock_identity(
    session: AsyncSession, *, channel: str, address: str, now: datetime, language: str
) -> tuple[ChannelIdentity, Contact]:
    """The identity for (channel, address), created with a new contact if needed, and locked
    for the rest of the transaction (``FOR UPDATE`` on PostgreSQL; SQLite's write lock is
    already held by ``BEGIN IMMEDIATE``)."""
    query = (
        select(ChannelIdentity)
        .where(col(ChannelIdentity.channel) == channel, col(ChannelIdentity.address) == address)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    identity = (await session.execute(query)).scalar_one_or_none()
    if identity is None:
        async with session.begin_nested():
            contact = Contact(language=language, created_at=now)
            session.add(contact)
            await session.flush()
            created = await session.execute(
                _insert(session, ChannelIdentity)
                .values(channel=channel, address=address, contact_id=contact.id, created_at=now)
                .on_conflict_do_nothing(index_elements=["channel", "address"])
                .returning(col(ChannelIdentity.id))
            )
            if created.first() is None:  # another process created it first
                await session.delete(contact)
        identity = (await session.execute(query)).scalar_one()
    contact_row = await session.get(Contact, identity.contact_id, populate_existing=True)
    assert contact_row is not None
    return identity, contact_row


# The inbound path's statements, built once: Core statements on the tables (no identity map, no
# unit of work), with bound parameters, so SQLAlchemy computes each one's cache key only once.
_IDENTITIES: Table = ChannelIdentity.__table__  # type: ignore[attr-defined]
_CONVERSATIONS: Table = Conversation.__table__  # type: ignore[attr-defined]
_OUTBOX: Table = OutboundMessage.__table__  # type: ignore[attr-defined]
_LOCK_KNOWN = (
    select(_IDENTITIES.c.id, _IDENTITIES.c.contact_id, _IDENTITIES.c.display_name)
    .where(
        _IDENTITIES.c.channel == bindparam("channel"),
        _IDENTITIES.c.address == bindparam("address"),
    )
    .with_for_update()
)
_CONTACT_AND_CONVERSATION = (
    select(Contact, _CONVERSATIONS.c.id, _CONVERSATIONS.c.state)
    .outerjoin(_CONVERSATIONS, _CONVERSATIONS.c.identity_id == bindparam("identity_id"))
    .where(col(Contact.id) == bindparam("contact_id"))
    .execution_options(populate_existing=True)
)
_SET_DISPLAY_NAME = update(_IDENTITIES).where(_IDENTITIES.c.id == bindparam("identity_id"))
_INSERT_CONVERSATION = insert(_CONVERSATIONS)
_UPDATE_CONVERSATION = update(_CONVERSATIONS).where(
    _CONVERSATIONS.c.id == bindparam("conversation_id")
)
_INSERT_OUTBOX = insert(_OUTBOX).returning(_OUTBOX.c.id, sort_by_parameter_order=True)
_OUTBOX_COLUMNS = tuple(column.name for column in _OUTBOX.columns if column.name != "id")


@dataclass
class Known:
    """Someone already known, locked (see :func:`lock_known`): their identity's id and name,
    their contact (in the session), and their conversation's id and stored state (None
    before their first)."""

    identity_id: int
    display_name: str | None
    contact: Contact
    conversation_id: int | None
    state: dict[str, Any] | None


async def lock_known(session: AsyncSession, *, channel: str, address: str) -> Known | None:
    """Like :func:`lock_identity` for an address we already know, with its contact and its
    conversation's id and state (None before the first); None for an address we don't know.
    The identity and conversation are not loaded as ORM objects (the contact is one: flows and
    actions change it).

    The identity row is locked first; the contact and conversation are read after, in one
    query, so they are what the last holder of the lock committed. (Reading them in the same
    statement as the lock would not do: on PostgreSQL a ``SELECT ... FOR UPDATE OF`` that
    waits for the lock re-reads only the locked row, and would return the contact as it was
    before the wait.)"""
    locked = (
        await session.execute(_LOCK_KNOWN, {"channel": channel, "address": address})
    ).first()
    if locked is None:
        return None
    identity_id, contact_id, display_name = locked
    contact, conversation_id, state = (
        await session.execute(
            _CONTACT_AND_CONVERSATION, {"identity_id": identity_id, "contact_id": contact_id}
        )
    ).one()
    return Known(identity_id, display_name, contact, conversation_id, state)


async def set_display_name(session: AsyncSession, *, identity_id: int, name: str) -> None:
    await session.execute(_SET_DISPLAY_NAME, {"identity_id": identity_id, "display_name": name})


async def save_conversation(
    session: AsyncSession,
    *,
    identity_id: int,
    conversation_id: int | None,
    flow_id: str | None,
    node_id: str | None,
    expires_at: datetime | None,
    state: dict[str, Any],
    now: datetime,
) -> None:
    """Store a conversation's state (a Core ``UPDATE``, or ``INSERT`` for the first)."""
    values = {
        "flow_id": flow_id,
        "node_id": node_id,
        "expires_at": expires_at,
        "state": state,
        "updated_at": now,
    }
    if conversation_id is None:
        await session.execute(_INSERT_CONVERSATION, {"identity_id": identity_id, **values})
    else:
        await session.execute(_UPDATE_CONVERSATION, {"conversation_id": conversation_id, **values})


async def insert_outbound(session: AsyncSession, rows: Sequence[OutboundMessage]) -> None:
    """Insert outbox rows made by :func:`new_outbound` (not added to the session) in one
    statement, and set their ids, in order."""
    if not rows:
        return
    result = await session.execute(
        _INSERT_OUTBOX,
        [{name: getattr(row, name) for name in _OUTBOX_COLUMNS} for row in rows],
    )
    for row, (row_id,) in zip(rows, result.all(), strict=True):
        row.id = row_id


async def find_identity(
    session: AsyncSession, *, channel: str, address: str
) -> ChannelIdentity | None:
    query = select(ChannelIdentity).where(
        col(ChannelIdentity.channel) == channel, col(ChannelIdentity.address) == address
    )
    return (await session.execute(query)).scalar_one_or_none()


async def erase_contact(session: AsyncSession, *, contact_id: int, now: datetime) -> None:
    """FORGET: apply every table's erasure rule (:mod:`storage.erasure`): messages deleted,
    answers detached (personal ones deleted), identities and conversations deleted, the
    contact row blanked."""
    await erasure.erase(session, contact_id=contact_id, now=now)


# ---- conversations ----------------------------------------------------------------------------


async def get_conversation(session: AsyncSession, *, identity_id: int) -> Conversation | None:
    query = select(Conversation).where(col(Conversation.identity_id) == identity_id)
    return (await session.execute(query)).scalar_one_or_none()


# ---- wards ------------------------------------------------------------------------------------


async def ward_for_postcode(session: AsyncSession, *, postcode: str) -> Ward | None:
    query = (
        select(Ward)
        .join(PostcodeWard, col(PostcodeWard.ward_code) == col(Ward.code))
        .where(col(PostcodeWard.postcode) == compact_postcode(postcode))
    )
    return (await session.execute(query)).scalar_one_or_none()


async def upsert_wards(
    session: AsyncSession, *, wards: Sequence[Ward], postcodes: Sequence[PostcodeWard]
) -> None:
    for ward in wards:
        await session.merge(ward)
    await session.flush()
    for mapping in postcodes:
        await session.merge(mapping)


async def list_wards(session: AsyncSession) -> list[tuple[Ward, int]]:
    query = (
        select(Ward, func.count(col(PostcodeWard.postcode)))
        .outerjoin(PostcodeWard, col(PostcodeWard.ward_code) == col(Ward.code))
        .group_by(col(Ward.code))
        .order_by(col(Ward.name))
    )
    return [(ward, int(count)) for ward, count in (await session.execute(query)).all()]


# ---- outbox -----------------------------------------------------------------------------------


def new_outbound(
    *,
    channel: str,
    address: str,
    content: dict[str, Any],
    now: datetime,
    contact_id: int | None = None,
    inbound_id: int | None = None,
    priority: int = Priority.REPLY,
    ignore_opt_out: bool = False,
) -> OutboundMessage:
    """An outbox row, due now; its segment count is read from the rendered content."""
    segments = content.get("segments")
    return OutboundMessage(
        channel=channel,
        address=address,
        contact_id=contact_id,
        inbound_id=inbound_id,
        content=content,
        priority=priority,
        ignore_opt_out=ignore_opt_out,
        next_attempt_at=now,
        segments=segments if isinstance(segments, int) else None,
        created_at=now,
        updated_at=now,
    )


async def claim_due(
    session: AsyncSession,
    *,
    channels: Sequence[str],
    now: datetime,
    limit: int,
    lease: timedelta,
    claimer: str = "dispatcher",
) -> list[OutboundMessage]:
    """Claim up to ``limit`` due outbox rows for the given channels, replies before bulk.

    A claimed row is ``sending`` with a lease until ``next_attempt_at``, a new ``attempt_id``
    and ``claimed_by`` set to ``claimer``; a dispatcher that died mid-send leaves it to be
    claimed again when the lease runs out (or at once when it restarts, see
    :func:`reclaim_own`). On PostgreSQL the rows are taken ``FOR UPDATE SKIP LOCKED`` so
    several dispatchers never claim the same row.
    """
    query = (
        select(OutboundMessage)
        .where(
            col(OutboundMessage.channel).in_(channels),
            or_(
                col(OutboundMessage.status) == OutboxStatus.QUEUED,
                col(OutboundMessage.status) == OutboxStatus.SENDING,
            ),
            col(OutboundMessage.next_attempt_at) <= now,
        )
        .order_by(col(OutboundMessage.priority), col(OutboundMessage.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list((await session.execute(query)).scalars())
    for row in rows:
        row.status = OutboxStatus.SENDING
        row.attempts += 1
        row.attempt_id = uuid.uuid4().hex
        row.claimed_by = claimer[:128]
        row.next_attempt_at = now + lease
        row.updated_at = now
    await session.flush()
    return rows


async def reclaim_own(session: AsyncSession, *, claimer: str, now: datetime) -> int:
    """A restarted dispatcher's rows left ``sending`` by its previous run: due at once,
    instead of when their lease runs out. Only rows claimed under ``claimer``'s name: one
    dispatcher runs under a name at a time."""
    result = await session.execute(
        update(OutboundMessage)
        .where(
            col(OutboundMessage.status) == OutboxStatus.SENDING,
            col(OutboundMessage.claimed_by) == claimer,
            col(OutboundMessage.next_attempt_at) > now,
        )
        .values(next_attempt_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def known_provider_ids(
    session: AsyncSession, *, channel: str, provider_ids: Sequence[str]
) -> set[str]:
    """Which of these provider ids an outbox row already has."""
    if not provider_ids:
        return set()
    query = select(col(OutboundMessage.provider_id)).where(
        col(OutboundMessage.channel) == channel,
        col(OutboundMessage.provider_id).in_(list(provider_ids)),
    )
    return {str(p) for p in (await session.execute(query)).scalars() if p}


async def forget_provider_id(
    session: AsyncSession, *, channel: str, provider_id: str, now: datetime
) -> None:
    """Keep only a digest of an erased message's provider id (see ForgottenProviderId)."""
    digest = forgotten_digest(channel, provider_id)
    if await session.get(ForgottenProviderId, digest) is None:
        session.add(ForgottenProviderId(digest=digest, forgotten_at=now))


async def purge_forgotten_ids(session: AsyncSession, *, before: datetime) -> int:
    result = await session.execute(
        delete(ForgottenProviderId).where(col(ForgottenProviderId.forgotten_at) < before)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def sent_content(
    session: AsyncSession, *, channel: str, provider_id: str
) -> dict[str, Any] | None:
    """The content of the outbox row that was sent as ``provider_id``."""
    query = select(col(OutboundMessage.content)).where(
        col(OutboundMessage.channel) == channel, col(OutboundMessage.provider_id) == provider_id
    )
    content = (await session.execute(query)).scalars().first()
    return dict(content) if content else None


async def audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    now: datetime,
    subject: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(AuditLog(at=now, actor=actor, action=action, subject=subject, detail=detail))


async def link_inbound(session: AsyncSession, *, inbound_id: int, contact_id: int) -> None:
    await session.execute(
        update(InboundMessage)
        .where(col(InboundMessage.id) == inbound_id)
        .values(contact_id=contact_id)
    )


# ---- delivery (channel status callbacks, paging) ----------------------------------------------

_FINAL_STATUSES = frozenset(
    {OutboxStatus.DELIVERED, OutboxStatus.UNDELIVERED, OutboxStatus.FAILED, OutboxStatus.CANCELLED}
)


async def record_delivery(
    session: AsyncSession,
    *,
    channel: str,
    provider_id: str,
    status: OutboxStatus,
    provider_status: str,
    error: str | None,
    opted_out: bool,
    now: datetime,
    attempt: str | None = None,
) -> OutboundMessage | None:
    """Record a provider's delivery report on the outbox row it sent as ``provider_id``.

    Reports can arrive out of order, so a final status (delivered, undelivered, failed) is
    never replaced by an earlier one. The provider's own word is kept in
    ``content["provider_status"]``.

    When no row has that provider id yet, the report's ``attempt`` (the send attempt id the
    dispatcher put in the callback URL) finds the row: its send was accepted even if the
    provider's reply to it was lost, so the row records the provider id and is sent, and
    is not sent again. Without a matching attempt (the provider called back before its reply
    reached the dispatcher), the report is held for `apply_held_deliveries` and None is
    returned; a report for a message erased by FORGET is dropped.
    """
    await _lock_provider_id(session, channel, provider_id)
    query = (
        select(OutboundMessage)
        .where(
            col(OutboundMessage.channel) == channel,
            col(OutboundMessage.provider_id) == provider_id,
        )
        .with_for_update()
    )
    row = (await session.execute(query)).scalars().first()
    if row is None and attempt:
        by_attempt = (
            select(OutboundMessage)
            .where(
                col(OutboundMessage.channel) == channel,
                col(OutboundMessage.attempt_id) == attempt[:32],
                col(OutboundMessage.provider_id).is_(None),
            )
            .with_for_update()
        )
        row = (await session.execute(by_attempt)).scalars().first()
        if row is not None:
            row.provider_id = provider_id
            row.in_flight_since = None
            if row.status in (OutboxStatus.SENDING, OutboxStatus.QUEUED):
                row.status = OutboxStatus.SENT
                row.sent_at = now
                row.error = None
    if row is not None:
        _apply_delivery(row, status, provider_status, error, now)
        return row
    if await session.get(ForgottenProviderId, forgotten_digest(channel, provider_id)):
        return None  # a message erased by FORGET: nothing to record, and nothing to hold
    session.add(
        HeldDeliveryReport(
            channel=channel,
            provider_id=provider_id[:128],
            status=status,
            provider_status=provider_status[:32],
            error=None if error is None else error[:500],
            opted_out=opted_out,
            received_at=now,
        )
    )
    return None


async def _lock_provider_id(session: AsyncSession, channel: str, provider_id: str) -> None:
    """Serialise a delivery report with the dispatcher recording the same provider id.

    Without it, on PostgreSQL the webhook could find no row, the dispatcher then store the id
    and look for held reports before the webhook's held report is committed: the report
    would wait for nothing. A transaction-scoped advisory lock on the id makes one of them
    see the other's work. (SQLite's ``BEGIN IMMEDIATE`` already serialises the two.)
    """
    if dialect(session) == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"delivery:{channel}:{provider_id}"},
        )


def _apply_delivery(
    row: OutboundMessage, status: str, provider_status: str, error: str | None, now: datetime
) -> None:
    if row.status in _FINAL_STATUSES and status not in _FINAL_STATUSES:
        return
    row.status = status
    if error is not None:
        row.error = error[:500]
    row.content = {**row.content, "provider_status": provider_status}
    row.updated_at = now


async def apply_held_deliveries(
    session: AsyncSession, row: OutboundMessage, *, now: datetime
) -> bool:
    """Apply (in arrival order) and delete the reports held for ``row``'s provider id.

    True when one of them said the recipient has opted out.
    """
    if row.provider_id is None:
        return False
    await _lock_provider_id(session, row.channel, row.provider_id)
    where = (
        col(HeldDeliveryReport.channel) == row.channel,
        col(HeldDeliveryReport.provider_id) == row.provider_id,
    )
    held = (
        await session.execute(
            select(HeldDeliveryReport).where(*where).order_by(col(HeldDeliveryReport.id))
        )
    ).scalars()
    opted_out = False
    found = False
    for report in held:
        _apply_delivery(row, report.status, report.provider_status, report.error, now)
        opted_out |= report.opted_out
        found = True
    if found:
        await session.execute(delete(HeldDeliveryReport).where(*where))
    return opted_out


async def purge_held_deliveries(session: AsyncSession, *, before: datetime) -> int:
    """Drop held reports received before ``before`` (sends that were never recorded)."""
    result = await session.execute(
        delete(HeldDeliveryReport).where(col(HeldDeliveryReport.received_at) < before)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def mark_opted_out(
    session: AsyncSession, *, contact_id: int, actor: str, detail: dict[str, Any], now: datetime
) -> bool:
    """Opt a contact out (and audit it); False when they already were."""
    contact = await session.get(Contact, contact_id)
    if contact is None or contact.opted_out_at is not None:
        return False
    contact.opted_out_at = now
    await audit(
        session,
        actor=actor,
        action="opted_out",
        subject=f"contact:{contact_id}",
        detail=detail,
        now=now,
    )
    return True


async def paged_outbound(
    session: AsyncSession, *, channel: str, contact_id: int
) -> OutboundMessage | None:
    """The message with pages still to send (``content["more"]``) among the latest messages to
    a contact on one channel: the rows queued for the same inbound message as the newest row
    (a reply can be several messages), or that newest row alone. None when nothing waits."""
    newest = (
        select(OutboundMessage)
        .where(
            col(OutboundMessage.channel) == channel,
            col(OutboundMessage.contact_id) == contact_id,
        )
        .order_by(col(OutboundMessage.id).desc())
        .limit(1)
    )
    latest = (await session.execute(newest)).scalars().first()
    if latest is None or latest.inbound_id is None:
        return latest if latest is not None and latest.content.get("more") else None
    batch = (
        select(OutboundMessage)
        .where(
            col(OutboundMessage.channel) == channel,
            col(OutboundMessage.contact_id) == contact_id,
            col(OutboundMessage.inbound_id) == latest.inbound_id,
        )
        .order_by(col(OutboundMessage.id))
    )
    rows = (await session.execute(batch)).scalars()
    return next((row for row in rows if row.content.get("more")), None)


KEYBOARD_LOOKBACK = 20  # how many recent messages "the latest keyboard" is looked for among


async def keyboard_message(
    session: AsyncSession, *, channel: str, contact_id: int, reference: str | None
) -> OutboundMessage | None:
    """The message a tapped button was on, if it was sent to this contact on this channel:
    by provider id (Telegram ``<chat>:<message>``), by ``out:<outbox id>`` (the simulator),
    or with no reference the latest message with a keyboard. Locked for the transaction, as a
    toggle may redraw it."""
    query = (
        select(OutboundMessage)
        .where(
            col(OutboundMessage.channel) == channel,
            col(OutboundMessage.contact_id) == contact_id,
        )
        .with_for_update()
    )
    if reference is None:
        recent = query.order_by(col(OutboundMessage.id).desc()).limit(KEYBOARD_LOOKBACK)
        rows = (await session.execute(recent)).scalars()
        return next((row for row in rows if row.content.get("keyboard")), None)
    if reference.startswith("out:"):
        number = reference.removeprefix("out:")
        if not number.isascii() or not number.isdigit() or len(number) > 18:
            return None
        query = query.where(col(OutboundMessage.id) == int(number))
    else:
        query = query.where(col(OutboundMessage.provider_id) == reference)
    return (await session.execute(query)).scalars().first()


async def renew_claim(
    session: AsyncSession,
    *,
    row_id: int | None,
    attempts: int,
    until: datetime,
    in_flight_since: datetime | None = None,
) -> bool:
    """Extend a claimed outbox row's lease, only if it is still the same claim (nobody has
    re-claimed it since its lease ran out); with ``in_flight_since``, also record that a send
    is about to start (kept when the row already says an earlier one may have gone)."""
    values: dict[str, Any] = {"next_attempt_at": until}
    if in_flight_since is not None:
        values["in_flight_since"] = func.coalesce(
            col(OutboundMessage.in_flight_since), in_flight_since
        )
    result = await session.execute(
        update(OutboundMessage)
        .where(
            col(OutboundMessage.id) == row_id,
            col(OutboundMessage.status) == OutboxStatus.SENDING,
            col(OutboundMessage.attempts) == attempts,
        )
        .values(**values)
        .returning(col(OutboundMessage.id))
    )
    return result.first() is not None
