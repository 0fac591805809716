"""The Telegram Bot API client: sends, keyboards redrawn, native polls, webhook set-up,
``getUpdates``, and the one mapping from Telegram's errors to :mod:`channels.errors`.
python-telegram-bot is used only as a Bot API client (``telegram.Bot``); its objects stop
in this package. Conversation logic stays in the engine."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from channels import pacing
from channels.base import Content, TapMeaning
from channels.errors import ChannelError, PermanentError, RecipientOptedOut, RetryableError
from channels.telegram import keyboard
from channels.telegram.updates import UPDATE_TYPES, BotIdentity, TelegramUpdate, parse_update
from flows.catalogue import Catalogue
from flows.events import MessageCreated

log = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL = "telegram"
MAX_TEXT = 4096  # Telegram's limit for one message
POLL_QUESTION_MAX = 300
POLL_OPTION_MAX = 100
POLL_OPTIONS_MIN, POLL_OPTIONS_MAX = 2, 12
COMMANDS = ("start", "menu", "help", "lang", "forget", "stop")


# ---- errors: the one place Telegram errors become channel errors ------------------------------


def map_error(exc: TelegramError) -> ChannelError:
    """Telegram's error for a failed call, as one of :mod:`channels.errors`."""
    if isinstance(exc, RetryAfter):
        wait = exc.retry_after  # a timedelta (PTB_TIMEDELTA), or int seconds if unset
        seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
        return RetryableError(f"telegram rate limit: {exc.message}", retry_after=seconds)
    if isinstance(exc, Forbidden):
        text = exc.message.lower()
        if "blocked by the user" in text or "user is deactivated" in text:
            return RecipientOptedOut(f"telegram: {exc.message}")
        return PermanentError(f"telegram: {exc.message}")
    if isinstance(exc, ChatMigrated):
        return PermanentError(f"telegram: the group moved to chat {exc.new_chat_id}")
    if isinstance(exc, InvalidToken):  # configuration, not this message: keep it for later
        return RetryableError("telegram refused the bot token; check CIVICBOT_TELEGRAM_TOKEN")
    if isinstance(exc, BadRequest):  # before NetworkError: PTB's BadRequest subclasses it
        return PermanentError(f"telegram: {exc.message}")
    if isinstance(exc, TimedOut | NetworkError):  # TimedOut is a NetworkError; 5xx land here
        # No answer: Telegram may have delivered the message (it has no way to ask), so a
        # retry can send it twice; see the README's delivery guarantee.
        return RetryableError(f"telegram unreachable: {exc.message}", maybe_sent=True)
    return PermanentError(f"telegram: {exc.__class__.__name__}: {exc.message}")


@dataclass(frozen=True)
class SentPoll:
    poll_id: str
    message_id: int


# ---- rate limits per chat ---------------------------------------------------------------------


class ChatLimits(Protocol):
    """Waits until one more send to a chat fits Telegram's per-chat limits, or raises
    :class:`RetryableError` when that would take too long."""

    async def acquire(self, chat_id: str) -> None: ...


class ChatLimiter:
    """Telegram's per-chat limits, in this process (SQLite's single process; several
    processes on PostgreSQL share :class:`bot.coordination.SharedChatLimiter`): one message
    a second to a chat, and ``group_per_minute`` to a group (negative chat ids), with
    :mod:`channels.pacing`'s margin for lateness. A short wait is slept here; a long one (a
    busy group) is handed back as a retryable error so the dispatcher gets on with other
    chats."""

    def __init__(
        self,
        *,
        interval: float = 1.0,
        group_per_minute: int = 20,
        max_wait: float = 5.0,
        margin: float = pacing.DEFAULT_MARGIN,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self.group_per_minute = group_per_minute
        self.max_wait = max_wait
        self.margin = margin
        self.monotonic = monotonic
        self.sleep = sleep
        self._last: dict[str, float] = {}
        self._group_sends: dict[str, deque[float]] = {}

    async def acquire(self, chat_id: str) -> None:
        now = self.monotonic()
        gap = pacing.spacing(self.interval, self.interval, self.margin) if self.interval > 0 else 0
        wait = max(0.0, self._last.get(chat_id, -1e9) + gap - now)
        window = self._group_sends.setdefault(chat_id, deque()) if chat_id.startswith("-") else None
        minute = 60.0 + self.margin  # a send up to the margin late stays out of the next minute
        if window is not None:
            while window and window[0] <= now - minute:
                window.popleft()
            if len(window) >= self.group_per_minute:
                wait = max(wait, window[0] + minute - now)
        if wait > self.max_wait:
            raise RetryableError(f"telegram chat {chat_id} is at its rate limit", retry_after=wait)
        at = now + wait
        self._last[chat_id] = at
        if window is not None:
            window.append(at)
        if wait > 0:
            await self.sleep(wait)


# ---- the adapter ------------------------------------------------------------------------------


@dataclass
class TelegramChannel:
    """Send, render and parse for Telegram. ``api_base`` may point at a local Bot API server."""

    token: str
    catalogue: Catalogue
    api_base: str = "https://api.telegram.org"
    rate_per_second: float = 30.0
    delivery_reports: bool = False
    limiter: ChatLimits = field(default_factory=ChatLimiter)
    name: str = CHANNEL
    _bot: Bot | None = field(default=None, init=False, repr=False)
    _ready: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    # -- rendering and taps (channels.base.Taps) --

    def render(self, message: MessageCreated, language: str = "en") -> Content:
        """Text, and for a question an inline keyboard (see :mod:`.keyboard`)."""
        return keyboard.render(message, language, self.catalogue)

    def decode_tap(self, content: Content, data: str) -> TapMeaning | None:
        return keyboard.decode_tap(content, data)

    def redraw(self, content: Content, meaning: TapMeaning) -> Content:
        return keyboard.with_keyboard(content, meaning.selected, meaning.page, self.catalogue)

    # -- the Bot API --

    async def bot(self) -> Bot:
        """The client, initialised once (``getMe``, which also tells us our username)."""
        async with self._ready:
            if self._bot is None:
                bot = Bot(
                    self.token,
                    base_url=f"{self.api_base}/bot",
                    request=HTTPXRequest(connection_pool_size=8),
                    get_updates_request=HTTPXRequest(read_timeout=40),
                )
                await self._call(bot.initialize())
                self._bot = bot
            return self._bot

    async def _call(self, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except TelegramError as exc:
            raise map_error(exc) from exc

    async def aclose(self) -> None:
        if self._bot is not None:
            await self._bot.shutdown()
            self._bot = None

    async def send(self, address: str, content: Content) -> str | None:
        bot = await self.bot()
        text = str(content.get("text") or "")
        chunks = [text[i : i + MAX_TEXT] for i in range(0, len(text), MAX_TEXT)] or [""]
        rows = keyboard.as_markup_rows(content)
        markup: InlineKeyboardMarkup | ReplyKeyboardMarkup | None = _markup(rows) if rows else None
        if markup is None and content.get("request_phone"):
            markup = ReplyKeyboardMarkup(
                [[KeyboardButton(str(content["request_phone"]), request_contact=True)]],
                one_time_keyboard=True,
                resize_keyboard=True,
            )
        sent: Message | None = None
        for n, chunk in enumerate(chunks):
            await self.limiter.acquire(address)
            last = n == len(chunks) - 1
            sent = await self._call(
                bot.send_message(
                    chat_id=address, text=chunk or "…", reply_markup=markup if last else None
                )
            )
        assert sent is not None
        return f"{address}:{sent.message_id}"

    async def answer_tap(self, callback_query_id: str, text: str | None = None) -> None:
        """Acknowledge a tap, with a short notice (Telegram shows at most 200 characters)."""
        bot = await self.bot()
        await self._call(
            bot.answer_callback_query(callback_query_id, text=text[:200] if text else None)
        )

    async def show_selection(self, chat_id: str, message_id: int, content: Content) -> None:
        """Redraw a message's keyboard as ``content`` now has it (a toggle, a page turn)."""
        bot = await self.bot()
        await self._call(
            bot.edit_message_reply_markup(
                chat_id=chat_id,
                message_id=message_id,
                reply_markup=_markup(keyboard.as_markup_rows(content)),
            )
        )

    async def send_poll(
        self, chat_id: str, question: str, options: Sequence[str], *, multiple: bool
    ) -> SentPoll:
        """A non-anonymous native poll, so each answer can be counted once per person."""
        problem = poll_problem(question, options)
        if problem:
            raise PermanentError(problem)
        bot = await self.bot()
        await self.limiter.acquire(chat_id)
        message = await self._call(
            bot.send_poll(
                chat_id=chat_id,
                question=question,
                options=list(options),
                is_anonymous=False,
                allows_multiple_answers=multiple,
            )
        )
        if message.poll is None:
            raise PermanentError("telegram did not return the poll it sent")
        return SentPoll(poll_id=message.poll.id, message_id=message.message_id)

    async def stop_poll(self, chat_id: str, message_id: int) -> list[int]:
        """Close a poll; Telegram's own vote count per option."""
        bot = await self.bot()
        poll = await self._call(bot.stop_poll(chat_id=chat_id, message_id=message_id))
        return [o.voter_count for o in poll.options]

    async def set_webhook(self, url: str, secret: str) -> None:
        bot = await self.bot()
        await self._call(
            bot.set_webhook(url=url, secret_token=secret, allowed_updates=list(UPDATE_TYPES))
        )

    async def delete_webhook(self) -> None:
        bot = await self.bot()
        await self._call(bot.delete_webhook())

    async def set_commands(self) -> None:
        """The bot's command list, in English and (for Welsh-language Telegram) in Welsh."""
        bot = await self.bot()
        for language, code in (("en", None), ("cy", "cy")):
            commands = [
                BotCommand(name, self.catalogue.text(f"telegram_command_{name}", language))
                for name in COMMANDS
            ]
            await self._call(bot.set_my_commands(commands, language_code=code))

    async def parse_update(self, data: Any) -> TelegramUpdate:
        """See :func:`.updates.parse_update`."""

        async def me() -> BotIdentity:
            bot = await self.bot()
            return BotIdentity(bot.id, bot.username)

        return await parse_update(data, me)

    async def get_updates(self, offset: int | None, timeout: int = 30) -> list[dict[str, Any]]:
        """Long-poll for updates (polling mode); each as the JSON the webhook would get."""
        bot = await self.bot()
        updates = await self._call(
            bot.get_updates(offset=offset, timeout=timeout, allowed_updates=list(UPDATE_TYPES))
        )
        return [u.to_dict() for u in updates]


def poll_problem(question: str, options: Sequence[str]) -> str | None:
    """Telegram's poll limits, checked before anything is sent."""
    if not question.strip():
        return "the poll question is empty"
    if len(question) > POLL_QUESTION_MAX:
        return (
            f"the poll question is {len(question)} characters; Telegram allows {POLL_QUESTION_MAX}"
        )
    if not POLL_OPTIONS_MIN <= len(options) <= POLL_OPTIONS_MAX:
        return (
            f"a poll needs {POLL_OPTIONS_MIN} to {POLL_OPTIONS_MAX} options; {len(options)} given"
        )
    for option in options:
        if not option.strip():
            return "a poll option is empty"
        if len(option) > POLL_OPTION_MAX:
            return (
                f"option {option[:20]!r}... is {len(option)} characters; "
                f"Telegram allows {POLL_OPTION_MAX}"
            )
    if len(set(options)) != len(options):
        return "poll options must differ"
    return None


def _markup(rows: list[list[dict[str, Any]]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(str(b["label"]), callback_data=str(b["data"])) for b in row]
            for row in rows
        ]
    )
