"""Native Telegram group polls and the answers to them: tables and repositories (which take a
session and never commit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from storage.erasure import Rule, register, table_of
from storage.types import UTCDateTime


class TelegramPoll(SQLModel, table=True):
    """A native, non-anonymous poll sent to a group. ``closes_at`` is the deadline the scheduler
    acts on, so a restart loses nothing; ``result`` is the count posted when it closed."""

    __tablename__ = "telegram_polls"

    id: int | None = Field(default=None, primary_key=True)
    chat_id: str = Field(foreign_key="telegram_groups.chat_id", index=True, max_length=32)
    question: str = Field(max_length=300)
    options: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    multiple: bool = Field(default=False)
    telegram_poll_id: str | None = Field(default=None, max_length=64, unique=True)
    message_id: int | None = None
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    closes_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True, index=True)
    )
    closed_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # A poll asked as part of a needs assessment: its result is reported beside the
    # residents' answers (``civicbot needs report``), never mixed into them.
    needs_assessment_id: str | None = Field(
        default=None, foreign_key="needs_assessments.id", index=True, max_length=64
    )


class TelegramPollAnswer(SQLModel, table=True):
    """A person's current answer to a poll: one row per person, so each counts once. A
    retraction empties ``option_ids``; every update also stays in ``inbound_messages``.

    ``voter_key`` (a keyed hash of poll and Telegram user, see ``TelegramUpdates``) finds the
    row again after FORGET has detached it from the contact, so a later change or retraction
    replaces the vote instead of adding a second one. It is cleared when the poll closes.
    """

    __tablename__ = "telegram_poll_answers"
    __table_args__ = (
        UniqueConstraint("poll_id", "contact_id", name="uq_poll_answer_contact"),
        UniqueConstraint("poll_id", "voter_key", name="uq_poll_answer_voter_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    poll_id: int = Field(foreign_key="telegram_polls.id", index=True)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    option_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    voter_key: str | None = Field(default=None, max_length=64)
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# Votes stay counted, detached from the person. ``voter_key`` (a keyed hash of poll and user)
# stays until the poll closes so that a change of vote after FORGET replaces the old one.
register(
    Rule(
        table_of(TelegramPollAnswer),
        blank={"contact_id": None},
        keeps={"voter_key": "keyed hash, cleared when the poll closes"},
    )
)


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


async def polls_for_assessment(
    session: AsyncSession, *, assessment_id: str
) -> list[TelegramPoll]:
    query = (
        select(TelegramPoll)
        .where(
            col(TelegramPoll.needs_assessment_id) == assessment_id,
            col(TelegramPoll.message_id).is_not(None),
        )
        .order_by(col(TelegramPoll.id))
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
