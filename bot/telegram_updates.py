"""What civicbot does with each Telegram update, shared by the webhook route and polling mode,
and the group poll lifecycle (send, record answers, close on time, post the result).

Every update is stored once, unique on ``update_id`` (a redelivery does nothing more). Private
text and answering taps go through the pipeline like any channel; toggles, group membership,
group messages and poll answers are handled here, and stored as their update id and kind only
(no names, no group text), linked to the person's contact where there is one so FORGET reaches
them. Calls that acknowledge a tap (``answerCallbackQuery``, redrawing a keyboard) are returned
as follow-ups so the webhook can reply to Telegram first and make them just after.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from bot.dispatcher import Dispatcher
from bot.services import Services
from channels.base import InboundMessage
from channels.errors import ChannelError, PermanentError, RetryableError
from channels.telegram import (
    CHANNEL,
    ButtonTap,
    Done,
    GroupText,
    Ignored,
    Membership,
    Pick,
    PollAnswered,
    PrivateText,
    TelegramChannel,
    TelegramUpdate,
    Toggle,
    decode_tap,
    done_payload,
    poll_problem,
    selection_problem,
    spent,
)
from flows.engine import FORGET_QUESTION
from flows.events import ConversationState
from storage import repositories as repo
from storage import telegram_repo
from storage.models import Contact, OutboundMessage, Priority, TelegramGroup, TelegramPoll

log = logging.getLogger(__name__)

T = TypeVar("T")
FollowUp = Callable[[], Awaitable[None]]
GROUP_HINT = {
    "en": "To take part, message me privately: https://t.me/{username}",
    "cy": "I gymryd rhan, anfonwch neges breifat ataf: https://t.me/{username}",
}


@dataclass
class Handled:
    outcome: str
    follow_ups: list[FollowUp] = field(default_factory=list)

    async def run_follow_ups(self) -> None:
        for follow_up in self.follow_ups:
            try:
                await follow_up()
            except ChannelError as exc:  # a tap left unanswered only spins for a while
                log.warning("telegram follow-up failed: %s", exc)


class PollError(Exception):
    """A poll can't be sent or closed; the message says why."""


class TelegramUpdates:
    def __init__(self, services: Services) -> None:
        channel = services.channels[CHANNEL]
        assert isinstance(channel, TelegramChannel)
        self.services = services
        self.channel = channel
        token = services.settings.telegram_token
        assert token is not None  # the Telegram channel exists only with a token
        # Key for poll voter keys: a hash of the bot token, which is never stored in the
        # database, so a key cannot be traced back to a Telegram user from the data alone.
        secret = token.get_secret_value().encode()
        self._key = hashlib.sha256(b"civicbot poll voters\0" + secret).digest()

    def _voter_key(self, poll_id: int, user_id: str) -> str:
        """Who answered, as far as one open poll needs to know (see TelegramPollAnswer)."""
        message = f"{poll_id}:{user_id}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    # ---- inbound updates ----------------------------------------------------------------------

    async def handle(self, data: dict[str, Any]) -> Handled:
        """Store and act on one update. Raises :class:`channels.telegram.InvalidUpdate`."""
        update = await self.channel.parse_update(data)
        if isinstance(update, PrivateText):
            result = await self.services.pipeline.handle(
                InboundMessage(
                    channel=CHANNEL,
                    address=update.chat_id,
                    provider_id=str(update.update_id),
                    text=update.text,
                    raw=data,
                )
            )
            return Handled("duplicate" if result.duplicate else "message")
        if isinstance(update, ButtonTap):
            return await self._tap(update, data)
        async with self.services.sessions() as session, session.begin():
            address = update.chat_id if isinstance(update, Membership | GroupText) else ""
            inbound_id = await self._first_time(session, update, address)
            if inbound_id is None:
                return Handled("duplicate")
            if isinstance(update, Membership):
                await telegram_repo.record_group(
                    session,
                    chat_id=update.chat_id,
                    title=update.title,
                    kind=update.kind,
                    active=update.member,
                    now=self._now(),
                )
                return Handled("group joined" if update.member else "group left")
            if isinstance(update, GroupText):
                return await self._group_text(session, update)
            if isinstance(update, PollAnswered):
                return await self._poll_answer(session, update, inbound_id)
            assert isinstance(update, Ignored)
            return Handled(f"ignored: {update.reason}")

    async def _first_time(
        self,
        session: AsyncSession,
        update: TelegramUpdate,
        address: str,
        contact_id: int | None = None,
    ) -> int | None:
        """Store an update the pipeline does not handle; None when it was seen before.

        Only its id and kind are kept, never the update itself (names, group chatter), and the
        address only where it is a group's or belongs to a known contact (``contact_id``, so
        FORGET reaches the row)."""
        inbound_id = await repo.record_inbound(
            session,
            channel=CHANNEL,
            provider_id=str(update.update_id),
            address=address,
            text="",
            raw={"update_id": update.update_id, "kind": _KINDS[type(update)]},
            now=self._now(),
        )
        if inbound_id is not None and contact_id is not None:
            await repo.link_inbound(session, inbound_id=inbound_id, contact_id=contact_id)
        return inbound_id

    async def _tap(self, tap: ButtonTap, data: dict[str, Any]) -> Handled:
        """A button press. Always answered; the answer to a stale keyboard says it has closed."""
        content: dict[str, Any] | None = None
        current: str | None = None
        language: str = self.services.settings.default_language
        async with self.services.sessions() as session:
            if tap.message_id is not None:
                content = await telegram_repo.sent_content(
                    session, channel=CHANNEL, provider_id=f"{tap.chat_id}:{tap.message_id}"
                )
            identity = await repo.find_identity(session, channel=CHANNEL, address=tap.chat_id)
            if identity is not None and identity.id is not None:
                conversation = await repo.get_conversation(session, identity_id=identity.id)
                if conversation is not None:
                    current = _waiting_for(ConversationState.model_validate(conversation.state))
                contact = await session.get(Contact, identity.contact_id)
                if contact is not None:
                    language = contact.language
        meaning = decode_tap(content, tap.data) if content else None
        answer = self._answer(tap.callback_query_id)

        if meaning is None or content is None or content.get("question") != current:
            if not await self._record(tap):
                return Handled("duplicate")
            return Handled("closed", [answer(self._string("question_closed", language))])

        if isinstance(meaning, Toggle):
            if not await self._record(tap):
                return Handled("duplicate")
            problem = selection_problem(content, meaning.selected, done=False)
            if problem is not None:
                text = self._problem_text(problem, content, meaning.selected, language)
                return Handled("refused", [answer(text)])
            assert tap.message_id is not None
            message_id = tap.message_id

            async def redraw() -> None:
                await self.channel.show_selection(
                    tap.chat_id, message_id, content, meaning.selected
                )

            return Handled("toggled", [redraw, answer(None)])

        if isinstance(meaning, Done):
            problem = selection_problem(content, meaning.selected, done=True)
            if problem is not None:
                if not await self._record(tap):
                    return Handled("duplicate")
                text = self._problem_text(problem, content, meaning.selected, language)
                return Handled("refused", [answer(text)])
            payload = done_payload(content, meaning.selected)
        else:
            assert isinstance(meaning, Pick)
            payload = meaning.payload
        result = await self.services.pipeline.handle(
            InboundMessage(
                channel=CHANNEL,
                address=tap.chat_id,
                provider_id=str(tap.update_id),
                text="",
                payload=payload,
                raw=data,
            )
        )
        if result.duplicate:
            return Handled("duplicate")
        return Handled("answered", [answer(None)])

    async def _record(self, tap: ButtonTap) -> bool:
        """Store a tap the pipeline does not see, linked to the chat's contact when known."""
        async with self.services.sessions() as session, session.begin():
            identity = await repo.find_identity(session, channel=CHANNEL, address=tap.chat_id)
            if identity is None:  # nobody we know: keep no address either
                return await self._first_time(session, tap, "") is not None
            inbound_id = await self._first_time(
                session, tap, tap.chat_id, contact_id=identity.contact_id
            )
            return inbound_id is not None

    def _answer(self, callback_query_id: str) -> Callable[[str | None], FollowUp]:
        def make(text: str | None) -> FollowUp:
            async def follow_up() -> None:
                await self.channel.answer_tap(callback_query_id, text)

            return follow_up

        return make

    def _string(self, key: str, language: str, **values: Any) -> str:
        text = self.services.library.strings.get(key, {"en": key})
        template = text.get(language) or text["en"]
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            return template

    def _problem_text(
        self, problem: str, content: dict[str, Any], selected: frozenset[int], language: str
    ) -> str:
        budget = content.get("budget")
        return self._string(
            problem,
            language,
            min=content.get("min", 1),
            max=content.get("max"),
            total=f"{spent(content, selected):,}",
            budget=f"{budget:,}" if budget is not None else "",
        )[:200]  # answerCallbackQuery shows at most 200 characters

    async def _group_text(self, session: AsyncSession, update: GroupText) -> Handled:
        now = self._now()
        group = await session.get(TelegramGroup, update.chat_id)
        if group is None:  # added before our webhook was set: record it now
            await telegram_repo.record_group(
                session,
                chat_id=update.chat_id,
                title=update.title,
                kind=update.kind,
                active=True,
                now=now,
            )
        if not update.addressed:
            return Handled("ignored: not addressed to the bot")
        bot = await self.channel.bot()
        language = self.services.settings.default_language
        self._enqueue(session, update.chat_id, GROUP_HINT[language].format(username=bot.username))
        return Handled("group hint")

    async def _poll_answer(
        self, session: AsyncSession, update: PollAnswered, inbound_id: int
    ) -> Handled:
        now = self._now()
        poll = await telegram_repo.poll_by_telegram_id(session, poll_id=update.poll_id)
        if poll is None or poll.id is None:
            return Handled("ignored: unknown poll")
        if poll.closed_at is not None:
            return Handled("ignored: poll closed")
        _, contact = await repo.lock_identity(
            session,
            channel=CHANNEL,
            address=update.user_id,
            now=now,
            language=self.services.settings.default_language,
        )
        assert contact.id is not None
        await telegram_repo.own_inbound(
            session, inbound_id=inbound_id, contact_id=contact.id, address=update.user_id
        )
        await telegram_repo.save_poll_answer(
            session,
            poll_id=poll.id,
            contact_id=contact.id,
            voter_key=self._voter_key(poll.id, update.user_id),
            option_ids=list(update.option_ids),
            now=now,
        )
        return Handled("poll retracted" if not update.option_ids else "poll answered")

    def _enqueue(self, session: AsyncSession, chat_id: str, text: str) -> OutboundMessage:
        now = self._now()
        row = repo.new_outbound(
            channel=CHANNEL,
            address=chat_id,
            content={"text": text, "choices": [], "buttons": []},
            priority=Priority.BULK,
            now=now,
        )
        session.add(row)
        return row

    def _now(self) -> datetime:
        return self.services.clock.now()

    # ---- polls ----------------------------------------------------------------------------------

    async def send_poll(
        self,
        *,
        chat_id: str,
        question: str,
        options: Sequence[str],
        multiple: bool,
        closes_at: datetime | None,
    ) -> TelegramPoll:
        """Check, send and store a native poll. Raises :class:`PollError`."""
        problem = poll_problem(question, options)
        if problem:
            raise PollError(problem)
        now = self._now()
        if closes_at is not None and closes_at <= now:
            raise PollError("the close time is in the past")
        # Stored first, so that no poll ever goes out that we do not track; the ids Telegram
        # gives it are filled in after the send, and a failed send removes the row again.
        async with self.services.sessions() as session, session.begin():
            if await session.get(TelegramGroup, chat_id) is None:
                raise PollError(
                    f"no Telegram group with chat id {chat_id}; add the bot to the group first "
                    "and see `civicbot telegram groups`"
                )
            poll = TelegramPoll(
                chat_id=chat_id,
                question=question,
                options=list(options),
                multiple=multiple,
                created_at=now,
                closes_at=closes_at,
            )
            session.add(poll)
        try:
            sent = await self.channel.send_poll(chat_id, question, options, multiple=multiple)
        except PermanentError as exc:  # Telegram refused it: nothing was posted
            async with self.services.sessions() as session, session.begin():
                await session.execute(delete(TelegramPoll).where(col(TelegramPoll.id) == poll.id))
            raise PollError(f"Telegram did not take the poll: {exc}") from exc
        except ChannelError as exc:  # no answer (timeout, network): it may have been posted
            raise PollError(
                f"Telegram did not answer ({exc}), so the poll may or may not be in the group. "
                f"Look in the group before sending it again; if it is there, stop it in "
                f"Telegram. (Kept here as poll {poll.id}, without Telegram's ids.)"
            ) from exc
        async with self.services.sessions() as session, session.begin():
            stored = await session.get(TelegramPoll, poll.id, with_for_update=True)
            assert stored is not None  # nothing deletes a poll but the failed send above
            stored.telegram_poll_id = sent.poll_id
            stored.message_id = sent.message_id
            await repo.audit(
                session,
                actor="cli",
                action="telegram_poll_sent",
                subject=f"telegram_group:{chat_id}",
                detail={"question": question, "options": list(options)},
                now=now,
            )
        return stored

    async def close_poll(self, poll_id: int) -> TelegramPoll:
        """Stop the poll in Telegram, store the count and queue the result post to the group."""
        async with self.services.sessions() as session:
            poll = await session.get(TelegramPoll, poll_id)
        if poll is None or poll.message_id is None:
            raise PollError(f"no sent poll with id {poll_id}")
        if poll.closed_at is not None:
            raise PollError(f"poll {poll_id} closed at {poll.closed_at:%Y-%m-%d %H:%M} UTC")
        try:
            await self.channel.stop_poll(poll.chat_id, poll.message_id)
        except RetryableError as exc:
            raise PollError(f"Telegram is unavailable, try again: {exc}") from exc
        except PermanentError as exc:  # already closed, or deleted in Telegram: count ours
            log.warning("stopPoll for poll %s failed: %s", poll_id, exc)
        now = self._now()
        async with self.services.sessions() as session, session.begin():
            row = await session.get(TelegramPoll, poll_id, with_for_update=True)
            assert row is not None
            if row.closed_at is not None:
                return row
            counts, voters = await telegram_repo.tally(session, poll=row)
            await telegram_repo.forget_voter_keys(session, poll_id=poll_id)
            row.closed_at = now
            row.result = {"counts": counts, "voters": voters}
            text = result_text(row.question, row.options, counts, voters)
            self._enqueue(session, row.chat_id, text)
            await repo.audit(
                session,
                actor="scheduler",
                action="telegram_poll_closed",
                subject=f"telegram_poll:{poll_id}",
                detail=row.result,
                now=now,
            )
        self.services.dispatcher.wake()
        return row

    async def close_due_polls(self) -> int:
        """The scheduler's job: close every poll whose close time has passed."""
        async with self.services.sessions() as session:
            due = await telegram_repo.due_polls(session, now=self._now())
        closed = 0
        for poll in due:
            assert poll.id is not None
            try:
                await self.close_poll(poll.id)
                closed += 1
            except PollError as exc:
                log.warning("poll %s not closed yet: %s", poll.id, exc)
        return closed

    async def send_queued(self) -> int:
        """Send this channel's due outbox rows now (for CLI commands, where no server runs)."""
        dispatcher = Dispatcher(
            sessions=self.services.sessions,
            channels={CHANNEL: self.channel},
            clock=self.services.clock,
            settings=self.services.settings,
        )
        return await dispatcher.run_once()

    # ---- polling mode ---------------------------------------------------------------------------

    async def run_polling(self, stop: asyncio.Event, timeout: int = 30) -> None:
        """getUpdates in a loop, each update handled like a webhook delivery."""
        offset: int | None = None
        failures = 0
        ready = False
        while not stop.is_set():
            try:
                if not ready:  # Telegram refuses getUpdates while a webhook is set
                    await self.channel.delete_webhook()
                    await self.channel.set_commands()
                    ready = True
                fetched = await _unless_stopped(self.channel.get_updates(offset, timeout), stop)
                if fetched is None:
                    break  # shutting down: an unconfirmed batch is delivered again next time
                updates = fetched
                failures = 0
            except ChannelError as exc:
                failures += 1
                log.warning("telegram getUpdates failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=min(60, 2**failures))
                continue
            for data in updates:
                try:
                    handled = await self.handle(data)
                    await handled.run_follow_ups()
                except Exception:  # one bad update must not stop polling; it is skipped
                    log.exception("telegram update %s failed", data.get("update_id"))
                offset = int(data["update_id"]) + 1


def result_text(question: str, options: Sequence[str], counts: Sequence[int], voters: int) -> str:
    total = sum(counts)
    lines = [f"Poll closed: {question}"]
    for option, count in zip(options, counts, strict=True):
        share = f" ({round(100 * count / total)}%)" if total else ""
        lines.append(f"• {option}: {count} vote{'s' if count != 1 else ''}{share}")
    lines.append(f"{voters} {'person' if voters == 1 else 'people'} voted.")
    return "\n".join(lines)


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None (and ``work`` cancelled) if ``stop`` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()


def _waiting_for(state: ConversationState) -> str | None:
    """The question ("flow:node") a conversation is waiting on, as its buttons name it."""
    if state.pending == "forget":
        return FORGET_QUESTION
    if state.flow_id and state.node_id:
        return f"{state.flow_id}:{state.node_id}"
    return None


_KINDS: dict[type, str] = {
    PrivateText: "message",
    GroupText: "message",
    ButtonTap: "callback_query",
    Membership: "my_chat_member",
    PollAnswered: "poll_answer",
    Ignored: "ignored",
}
