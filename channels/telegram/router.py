"""Routing a Telegram update: parse it, hand it to the handler for its kind, and turn a tap's
answer into the calls Telegram expects (``answerCallbackQuery``, a redrawn keyboard).

The handlers (:class:`UpdateHandlers`) are the application's: the composition root wires
private messages and taps to the pipeline, membership and group messages to the group
registry, and poll answers to the poll service. The calls that acknowledge a tap are returned
as follow-ups, so that a webhook can answer Telegram first and make them just after.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.base import Content
from channels.errors import ChannelError
from channels.telegram.client import TelegramChannel
from channels.telegram.updates import (
    ButtonTap,
    GroupText,
    Ignored,
    Membership,
    PollAnswered,
    PrivateText,
)

log = logging.getLogger(__name__)
FollowUp = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class TapReply:
    """A handler's answer to a tap: the notice to show (None: just acknowledge it) and the
    keyboard to redraw (after a toggle or a page turn)."""

    notice: str | None = None
    redraw: Content | None = None


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


class UpdateHandlers(Protocol):
    async def private_text(self, update: PrivateText, raw: dict[str, Any]) -> str: ...

    async def tap(self, update: ButtonTap, raw: dict[str, Any]) -> tuple[str, TapReply | None]:
        """The outcome, and the answer to show (None for a redelivered tap)."""
        ...

    async def other(self, update: Membership | GroupText | PollAnswered | Ignored) -> str: ...


class UpdateRouter:
    def __init__(self, channel: TelegramChannel, handlers: UpdateHandlers) -> None:
        self.channel = channel
        self.handlers = handlers

    async def handle(self, data: dict[str, Any]) -> Handled:
        """Parse and handle one update. Raises :class:`.updates.InvalidUpdate` when it is not
        one; any other exception is a failure to handle it (the caller lets Telegram send it
        again)."""
        update = await self.channel.parse_update(data)
        if isinstance(update, PrivateText):
            return Handled(await self.handlers.private_text(update, data))
        if isinstance(update, ButtonTap):
            outcome, reply = await self.handlers.tap(update, data)
            return Handled(outcome, self._answer(update, reply) if reply is not None else [])
        return Handled(await self.handlers.other(update))

    def _answer(self, tap: ButtonTap, reply: TapReply) -> list[FollowUp]:
        follow_ups: list[FollowUp] = []
        redraw, message_id = reply.redraw, tap.message_id
        if redraw is not None and message_id is not None:

            async def show() -> None:
                await self.channel.show_selection(tap.chat_id, message_id, redraw)

            follow_ups.append(show)

        async def answer() -> None:
            await self.channel.answer_tap(tap.callback_query_id, reply.notice)

        follow_ups.append(answer)
        return follow_ups
