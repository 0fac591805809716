"""Telegram groups, polls and poll answers. Like :mod:`storage.repositories`, these take a
session and never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage.models import (
    InboundMessage,
    OutboundMessage,
    TelegramGroup,
    TelegramPoll,
    TelegramPollAnswer,
    Ward,
)


async def sent_content(
    session: AsyncSession, *, channel: str, provider_id: str
) -> dict[str, Any] | None:
    """The content of the outbox row that was sent as ``provider_id`` (a keyboard's message)."""
    query = select(col(OutboundMessage.content)).where(
        col(OutboundMessage.channel) == channel, col(OutboundMessage.provider_id) == provider_id
    )
    content = (await session.execute(query)).scalars().first()
    return dict(content) if content else None


async def own_inbound(
    session: AsyncSession, *, inbound_id: int, contact_id: int, address: str
) -> None:
    """Give a stored update its person, so FORGET (which erases by contact) reaches it."""
    await session.execute(
        update(InboundMessage)
        .where(col(InboundMessage.id) == inbound_id)
        .values(contact_id=contact_id, address=address)
    )


async def record_group(
    session: AsyncSession, *, chat_id: str, title: str, kind: str, active: bool, now: datetime
) -> TelegramGroup:
    group = await session.get(TelegramGroup, chat_id)
    if group is None:
        group = TelegramGroup(chat_id=chat_id, added_at=now, updated_at=now)
        session.add(group)
    if title:
        group.title = title[:255]
    group.kind = kind[:16]
    group.active = active
    group.updated_at = now
    await session.flush()
    return group


async def list_groups(session: AsyncSession) -> list[TelegramGroup]:
    query = select(TelegramGroup).order_by(col(TelegramGroup.title), col(TelegramGroup.chat_id))
    return list((await session.execute(query)).scalars())


async def assign_group(
    session: AsyncSession, *, chat_id: str, ward_code: str | None, now: datetime
) -> TelegramGroup:
    """Put a group in a ward. Raises LookupError naming whatever is unknown."""
    group = await session.get(TelegramGroup, chat_id)
    if group is None:
        raise LookupError(
            f"no Telegram group with chat id {chat_id}; see `civicbot telegram groups`"
        )
    if ward_code is not None and await session.get(Ward, ward_code) is None:
        raise LookupError(f"no ward with code {ward_code}; see `civicbot wards list`")
    group.ward_code = ward_code
    group.updated_at = now
    return group


async def poll_by_telegram_id(session: AsyncSession, *, poll_id: str) -> TelegramPoll | None:
    """The poll, locked for the transaction: an answer waits for a concurrent close (and then
    sees it closed), so no answer or voter key is written after the count."""
    query = (
        select(TelegramPoll)
        .where(col(TelegramPoll.telegram_poll_id) == poll_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def save_poll_answer(
    session: AsyncSession,
    *,
    poll_id: int,
    contact_id: int,
    voter_key: str,
    option_ids: list[int],
    now: datetime,
) -> None:
    """A person's latest answer replaces their previous one; an empty list is a retraction.

    The previous answer is found by contact, or by ``voter_key`` once FORGET has detached it.
    """
    query = (
        select(TelegramPollAnswer)
        .where(
            col(TelegramPollAnswer.poll_id) == poll_id,
            or_(
                col(TelegramPollAnswer.contact_id) == contact_id,
                col(TelegramPollAnswer.voter_key) == voter_key,
            ),
        )
        .order_by(col(TelegramPollAnswer.id))
    )
    rows = list((await session.execute(query)).scalars())
    if not rows:
        rows = [TelegramPollAnswer(poll_id=poll_id, contact_id=contact_id, updated_at=now)]
        session.add(rows[0])
    row, extra = rows[0], rows[1:]
    for stale in extra:  # answers from before voter keys existed: one person, one answer
        await session.delete(stale)
    if extra:
        await session.flush()
    row.contact_id = contact_id
    row.voter_key = voter_key
    row.option_ids = list(option_ids)
    row.updated_at = now


async def forget_voter_keys(session: AsyncSession, *, poll_id: int) -> None:
    """A closed poll's answers no longer need finding again."""
    await session.execute(
        update(TelegramPollAnswer)
        .where(col(TelegramPollAnswer.poll_id) == poll_id)
        .values(voter_key=None)
    )


async def due_polls(session: AsyncSession, *, now: datetime) -> list[TelegramPoll]:
    query = (
        select(TelegramPoll)
        .where(
            col(TelegramPoll.closes_at) <= now,
            col(TelegramPoll.closed_at).is_(None),
            col(TelegramPoll.message_id).is_not(None),
        )
        .order_by(col(TelegramPoll.closes_at))
    )
    return list((await session.execute(query)).scalars())


async def tally(session: AsyncSession, *, poll: TelegramPoll) -> tuple[list[int], int]:
    """Votes per option and the number of people with a standing answer (each counted once)."""
    query = select(col(TelegramPollAnswer.option_ids)).where(
        col(TelegramPollAnswer.poll_id) == poll.id
    )
    counts = [0] * len(poll.options)
    voters = 0
    for option_ids in (await session.execute(query)).scalars():
        chosen = {i for i in option_ids if 0 <= i < len(counts)}
        if chosen:
            voters += 1
        for i in chosen:
            counts[i] += 1
    return counts, voters
