"""The group-poll service. It talks to Telegram through a small port (:class:`PollTransport`,
implemented in the composition root over the Telegram adapter), keeps polls and answers in
:mod:`storage.polls`, and posts results through the broadcast path in English and Welsh.

Every action names who did it (``actor``: ``cli:<user>``, ``admin:<email>``, ``scheduler``)
and is written to the audit log under that name.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from flows.broadcasts import Broadcaster, BroadcastSpec, Groups
from flows.catalogue import LANGUAGES, Catalogue
from storage import polls as store
from storage import repositories as repo
from storage.models import TelegramGroup
from storage.needs import NeedsAssessment
from storage.polls import TelegramPoll

log = logging.getLogger(__name__)


class PollError(Exception):
    """A poll can't be sent or closed; the message says why."""


class PollRefused(Exception):
    """The transport's provider refused the call: nothing was posted or changed."""


class PollUnanswered(Exception):
    """The provider did not answer (timeout, network): the call may or may not have worked."""


@dataclass(frozen=True)
class PostedPoll:
    poll_id: str
    message_id: int


class Clock(Protocol):
    def now(self) -> datetime: ...


class PollTransport(Protocol):
    """What the service needs from Telegram."""

    channel: str  # the channel name identities and inbound rows are stored under

    def problem(self, question: str, options: Sequence[str]) -> str | None:
        """Why Telegram would refuse this poll (lengths, option count), or None."""
        ...

    async def send_poll(
        self, chat_id: str, question: str, options: Sequence[str], *, multiple: bool
    ) -> PostedPoll:
        """Post a non-anonymous poll. Raises PollRefused or PollUnanswered."""
        ...

    async def stop_poll(self, chat_id: str, message_id: int) -> None:
        """Close it in the group. Raises PollRefused or PollUnanswered."""
        ...


class PollService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        transport: PollTransport,
        broadcaster: Broadcaster,
        catalogue: Catalogue,
        clock: Clock,
        voter_secret: bytes,
        default_language: str,
    ) -> None:
        self.sessions = sessions
        self.transport = transport
        self.broadcaster = broadcaster
        self.catalogue = catalogue
        self.clock = clock
        # Key for voter keys (see TelegramPollAnswer): derived from a secret the database never
        # holds (the bot token), so a key can't be traced to a Telegram user from the data.
        self._key = hashlib.sha256(b"civicbot poll voters\0" + voter_secret).digest()
        self.default_language = default_language

    def voter_key(self, poll_id: int, user_id: str) -> str:
        return hmac.new(self._key, f"{poll_id}:{user_id}".encode(), hashlib.sha256).hexdigest()

    # ---- sending and closing ------------------------------------------------------------------

    async def send(
        self,
        *,
        chat_id: str,
        question: str,
        options: Sequence[str],
        multiple: bool,
        closes_at: datetime | None,
        actor: str,
        needs_assessment_id: str | None = None,
    ) -> TelegramPoll:
        """Check, store, then send a poll. Raises :class:`PollError`. A poll linked to a
        needs assessment (``needs_assessment_id``) is reported with it, as its own source."""
        problem = self.transport.problem(question, options)
        if problem:
            raise PollError(problem)
        now = self.clock.now()
        if closes_at is not None and closes_at <= now:
            raise PollError("the close time is in the past")
        # Stored first, so that no poll ever goes out that we do not track; the ids Telegram
        # gives it are filled in after the send, and a refused send removes the row again.
        async with self.sessions() as session, session.begin():
            if await session.get(TelegramGroup, chat_id) is None:
                raise PollError(
                    f"no Telegram group with chat id {chat_id}; add the bot to the group first "
                    "and see `civicbot telegram groups`"
                )
            if needs_assessment_id is not None and (
                await session.get(NeedsAssessment, needs_assessment_id) is None
            ):
                raise PollError(
                    f"no needs assessment {needs_assessment_id!r} (see `civicbot needs list`)"
                )
            poll = TelegramPoll(
                chat_id=chat_id,
                question=question,
                options=list(options),
                multiple=multiple,
                created_at=now,
                closes_at=closes_at,
                needs_assessment_id=needs_assessment_id,
            )
            session.add(poll)
        try:
            sent = await self.transport.send_poll(chat_id, question, options, multiple=multiple)
        except PollRefused as exc:  # nothing was posted
            async with self.sessions() as session, session.begin():
                await session.execute(delete(TelegramPoll).where(col(TelegramPoll.id) == poll.id))
            raise PollError(f"Telegram did not take the poll: {exc}") from exc
        except PollUnanswered as exc:
            raise PollError(
                f"Telegram did not answer ({exc}), so the poll may or may not be in the group. "
                f"Look in the group before sending it again; if it is there, stop it in "
                f"Telegram. (Kept here as poll {poll.id}, without Telegram's ids.)"
            ) from exc
        async with self.sessions() as session, session.begin():
            stored = await session.get(TelegramPoll, poll.id, with_for_update=True)
            assert stored is not None  # nothing deletes a poll but the refused send above
            stored.telegram_poll_id = sent.poll_id
            stored.message_id = sent.message_id
            await repo.audit(
                session,
                actor=actor,
                action="telegram_poll_sent",
                subject=f"telegram_poll:{stored.id}",
                detail={"chat_id": chat_id, "question": question, "options": list(options)},
                now=now,
            )
        return stored

    async def close(self, poll_id: int, *, actor: str) -> TelegramPoll:
        """Stop the poll in Telegram, store the count, and post the result to the group."""
        async with self.sessions() as session:
            poll = await session.get(TelegramPoll, poll_id)
        if poll is None or poll.message_id is None:
            raise PollError(f"no sent poll with id {poll_id}")
        if poll.closed_at is not None:
            raise PollError(f"poll {poll_id} closed at {poll.closed_at:%Y-%m-%d %H:%M} UTC")
        try:
            await self.transport.stop_poll(poll.chat_id, poll.message_id)
        except PollUnanswered as exc:
            raise PollError(f"Telegram is unavailable, try again: {exc}") from exc
        except PollRefused as exc:  # already closed, or deleted in Telegram: count ours
            log.warning("stopPoll for poll %s failed: %s", poll_id, exc)
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            row = await session.get(TelegramPoll, poll_id, with_for_update=True)
            assert row is not None
            if row.closed_at is not None:
                return row
            counts, voters = await store.tally(session, poll=row)
            await store.forget_voter_keys(session, poll_id=poll_id)
            row.closed_at = now
            row.result = {"counts": counts, "voters": voters}
            await repo.audit(
                session,
                actor=actor,
                action="telegram_poll_closed",
                subject=f"telegram_poll:{poll_id}",
                detail=row.result,
                now=now,
            )
        await self.broadcaster.send(
            BroadcastSpec(
                text=self.result_texts(row.question, row.options, counts, voters),
                groups=Groups(chat_ids=(row.chat_id,)),
                key=f"telegram-poll-result:{poll_id}",
                label=f"Result of poll {poll_id}",
                actor=actor,
            )
        )
        return row

    async def close_due(self, *, actor: str = "scheduler") -> int:
        """The scheduler's job: close every poll whose close time has passed."""
        async with self.sessions() as session:
            due = await store.due_polls(session, now=self.clock.now())
        closed = 0
        for poll in due:
            assert poll.id is not None
            try:
                await self.close(poll.id, actor=actor)
                closed += 1
            except PollError as exc:
                log.warning("poll %s not closed yet: %s", poll.id, exc)
        return closed

    def result_texts(
        self, question: str, options: Sequence[str], counts: Sequence[int], voters: int
    ) -> dict[str, str]:
        """The result post, in each language."""
        total = sum(counts)
        texts: dict[str, str] = {}
        for language in LANGUAGES:
            lines = [self.catalogue.text("poll_closed_title", language, question=question)]
            for option, count in zip(options, counts, strict=True):
                share = f" ({round(100 * count / total)}%)" if total else ""
                lines.append(
                    self.catalogue.text(
                        "poll_result_line", language, option=option, count=count, share=share
                    )
                )
            lines.append(self.catalogue.text("poll_voters", language, voters=voters))
            texts[language] = "\n".join(lines)
        return texts

    # ---- answers -----------------------------------------------------------------------------

    async def record_answer(
        self,
        session: AsyncSession,
        *,
        poll_id: str,
        user_id: str,
        option_ids: Sequence[int],
        inbound_id: int,
    ) -> str:
        """A person's answer (or retraction) to a poll, in the caller's transaction; an
        outcome word for the webhook's reply."""
        now = self.clock.now()
        poll = await store.poll_by_telegram_id(session, poll_id=poll_id)
        if poll is None or poll.id is None:
            return "ignored: unknown poll"
        if poll.closed_at is not None:
            return "ignored: poll closed"
        _, contact = await repo.lock_identity(
            session,
            channel=self.transport.channel,
            address=user_id,
            now=now,
            language=self.default_language,
        )
        assert contact.id is not None
        await repo.link_inbound(session, inbound_id=inbound_id, contact_id=contact.id)
        await store.save_poll_answer(
            session,
            poll_id=poll.id,
            contact_id=contact.id,
            voter_key=self.voter_key(poll.id, user_id),
            option_ids=list(option_ids),
            now=now,
        )
        return "poll retracted" if not option_ids else "poll answered"
