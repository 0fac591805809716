"""What civicbot does with each kind of Telegram update (the application side of
:class:`channels.telegram.router.UpdateRouter`), and the poll service's port to Telegram.

- Private messages and taps go through the pipeline like every channel's messages: the tap's
  keyboard is read from the outbox and the engine checks the answer.
- Membership changes, group messages and poll answers are stored once per ``update_id`` (as
  their id and kind only: no names, no group chatter), then: the group registry is updated; a
  message addressed to the bot in a group gets a hint to message it privately (through the
  broadcast path); a poll answer goes to the poll service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.pipeline import Pipeline
from channels.base import InboundMessage, TapRef
from channels.errors import PermanentError, RetryableError
from channels.telegram.client import CHANNEL, TelegramChannel, poll_problem
from channels.telegram.router import TapReply
from channels.telegram.updates import (
    KINDS,
    ButtonTap,
    GroupText,
    Ignored,
    Membership,
    PollAnswered,
    PrivateText,
)
from channels.text import clean_json
from flows.broadcasts import Broadcaster, BroadcastSpec, Groups
from flows.catalogue import Catalogue
from flows.polls.service import PollRefused, PollService, PollUnanswered, PostedPoll
from storage import groups as group_store
from storage import repositories as repo
from storage.models import TelegramGroup


class TelegramPollTransport:
    """:class:`flows.polls.service.PollTransport` over the Telegram adapter."""

    channel = CHANNEL

    def __init__(self, telegram: TelegramChannel) -> None:
        self.telegram = telegram

    def problem(self, question: str, options: Sequence[str]) -> str | None:
        return poll_problem(question, options)

    async def send_poll(
        self, chat_id: str, question: str, options: Sequence[str], *, multiple: bool
    ) -> PostedPoll:
        try:
            sent = await self.telegram.send_poll(chat_id, question, options, multiple=multiple)
        except PermanentError as exc:
            raise PollRefused(str(exc)) from exc
        except RetryableError as exc:
            raise PollUnanswered(str(exc)) from exc
        return PostedPoll(sent.poll_id, sent.message_id)

    async def stop_poll(self, chat_id: str, message_id: int) -> None:
        try:
            await self.telegram.stop_poll(chat_id, message_id)
        except PermanentError as exc:
            raise PollRefused(str(exc)) from exc
        except RetryableError as exc:
            raise PollUnanswered(str(exc)) from exc


class TelegramUpdates:
    """:class:`channels.telegram.router.UpdateHandlers` for civicbot."""

    def __init__(
        self,
        *,
        telegram: TelegramChannel,
        pipeline: Pipeline,
        sessions: async_sessionmaker[AsyncSession],
        polls: PollService,
        broadcaster: Broadcaster,
        catalogue: Catalogue,
        clock: Clock,
    ) -> None:
        self.telegram = telegram
        self.pipeline = pipeline
        self.sessions = sessions
        self.polls = polls
        self.broadcaster = broadcaster
        self.catalogue = catalogue
        self.clock = clock

    async def private_text(self, update: PrivateText, raw: dict[str, Any]) -> str:
        result = await self.pipeline.handle(
            InboundMessage(
                channel=CHANNEL,
                address=update.chat_id,
                provider_id=str(update.update_id),
                text=update.text,
                raw=clean_json(raw),  # no NUL, and no reply chain 500 messages deep
                name=update.name or None,
            )
        )
        return "duplicate" if result.duplicate else "message"

    async def tap(self, update: ButtonTap, raw: dict[str, Any]) -> tuple[str, TapReply | None]:
        message = None if update.message_id is None else f"{update.chat_id}:{update.message_id}"
        result = await self.pipeline.handle(
            InboundMessage(
                channel=CHANNEL,
                address=update.chat_id,
                provider_id=str(update.update_id),
                text="",
                raw={"update_id": update.update_id, "kind": "callback_query"},
                tap=TapRef(data=update.data, message=message),
            )
        )
        if result.duplicate:
            return "duplicate", None
        answer = result.tap or None
        if answer is None:
            return "answered", TapReply()
        if answer.closed:
            outcome = "closed"
        elif answer.stale:
            outcome = "stale"
        elif answer.redraw is not None:
            outcome = "toggled"
        elif answer.notice is not None:
            outcome = "refused"
        else:
            outcome = "answered"
        return outcome, TapReply(notice=answer.notice, redraw=answer.redraw)

    async def other(self, update: Membership | GroupText | PollAnswered | Ignored) -> str:
        now = self.clock.now()
        hint_for: str | None = None
        async with self.sessions() as session, session.begin():
            address = update.chat_id if isinstance(update, Membership | GroupText) else ""
            inbound_id = await repo.record_inbound(
                session,
                channel=CHANNEL,
                provider_id=str(update.update_id),
                address=address,
                text="",
                raw={"update_id": update.update_id, "kind": KINDS[type(update)]},
                now=now,
            )
            if inbound_id is None:
                return "duplicate"
            if isinstance(update, Membership):
                await group_store.record_group(
                    session,
                    chat_id=update.chat_id,
                    title=update.title,
                    kind=update.kind,
                    active=update.member,
                    now=now,
                )
                return "group joined" if update.member else "group left"
            if isinstance(update, GroupText):
                if await session.get(TelegramGroup, update.chat_id) is None:
                    # added before our webhook was set: record it now
                    await group_store.record_group(
                        session,
                        chat_id=update.chat_id,
                        title=update.title,
                        kind=update.kind,
                        active=True,
                        now=now,
                    )
                if update.addressed:
                    hint_for = update.chat_id
                outcome = "group hint" if update.addressed else "ignored: not addressed to the bot"
            elif isinstance(update, PollAnswered):
                return await self.polls.record_answer(
                    session,
                    poll_id=update.poll_id,
                    user_id=update.user_id,
                    option_ids=update.option_ids,
                    inbound_id=inbound_id,
                )
            else:
                return f"ignored: {update.reason}"
        if hint_for is not None:
            bot = await self.telegram.bot()
            await self.broadcaster.send(
                BroadcastSpec(
                    text=self.catalogue.all("telegram_group_hint", username=bot.username),
                    groups=Groups(chat_ids=(hint_for,)),
                    key=f"telegram-group-hint:{update.update_id}",
                    label="Hint to message the bot privately",
                    actor="telegram",
                )
            )
        return outcome
