"""The Telegram channel. python-telegram-bot is used only as a Bot API client (``telegram.Bot``,
``Update.de_json``); its objects stop in this module. Conversation logic stays in the engine.

Buttons. Telegram limits ``callback_data`` to 64 bytes, and ``<flow>:<node>:<option>`` can be
longer (ids go up to 64 + 64 + 32 characters). So a keyboard's buttons carry only a short code
and the full answer lives in the outbox row that sent the keyboard (found again by the provider
id ``<chat id>:<message id>``):

- ``c:<i>``: single choice, option ``i`` of ``content["buttons"]``;
- ``t:<mask>``: a multi-choice toggle; ``mask`` (hex bitmask of option indexes) is the selection
  *after* the tap, so each keyboard carries its own state and a tap is idempotent;
- ``d:<mask>``: Done with that selection: the pipeline gets ``<flow>:<node>:<id1>,<id2>``.

A 30-option mask is 8 hex digits, so every code fits easily.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

# PTB 22 is moving durations (RetryAfter.retry_after...) from int seconds to timedelta and warns on
# every read until told which it should be; opt in to v23's behaviour (its documented switch).
os.environ.setdefault("PTB_TIMEDELTA", "true")

from telegram import (  # noqa: E402
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.constants import ChatMemberStatus, ChatType  # noqa: E402
from telegram.error import (  # noqa: E402
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest  # noqa: E402

from channels.base import Content  # noqa: E402
from channels.errors import (  # noqa: E402
    ChannelError,
    PermanentError,
    RecipientOptedOut,
    RetryableError,
)
from channels.render import render_telegram  # noqa: E402
from channels.text import clean_text  # noqa: E402
from flows.events import MessageCreated  # noqa: E402

log = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL = "telegram"
MAX_TEXT = 4096  # Telegram's limit for one message
POLL_QUESTION_MAX = 300
POLL_OPTION_MAX = 100
POLL_OPTIONS_MIN, POLL_OPTIONS_MAX = 2, 12
POLL_OPTIONS_LIMIT = 100  # an option index in a poll answer beyond this is not Telegram's
# The storage columns: an address (chat or user id), a provider id (update id), a group's chat id
# and a poll id. A longer value is not Telegram's, and would overflow them on PostgreSQL.
ADDRESS_MAX, PROVIDER_ID_MAX, GROUP_ID_MAX, POLL_ID_MAX = 64, 128, 32, 64
TOGGLE_HINT = {"en": "Tap to tick, then Done.", "cy": "Tapiwch i dicio, yna Gorffen."}
DONE_WORDS = {"en": ("Done", "of", "chosen"), "cy": ("Gorffen", "o", "wedi'u dewis")}
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
UPDATE_TYPES = ("message", "callback_query", "my_chat_member", "poll_answer")
COMMANDS = (
    ("start", "Start, or go back to the beginning"),
    ("menu", "What you can do"),
    ("help", "Help"),
    ("lang", "Change language / Newid iaith"),
    ("forget", "Erase your data"),
    ("stop", "Stop messages"),
)


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
        return RetryableError(f"telegram unreachable: {exc.message}")
    return PermanentError(f"telegram: {exc.__class__.__name__}: {exc.message}")


# ---- parsed updates: neutral values, no library objects ---------------------------------------


@dataclass(frozen=True)
class PrivateText:
    update_id: int
    chat_id: str
    text: str


@dataclass(frozen=True)
class ButtonTap:
    update_id: int
    chat_id: str
    callback_query_id: str
    message_id: int | None
    data: str


@dataclass(frozen=True)
class Membership:
    """The bot was added to (``member``) or removed from a group."""

    update_id: int
    chat_id: str
    title: str
    kind: str
    member: bool


@dataclass(frozen=True)
class GroupText:
    update_id: int
    chat_id: str
    title: str
    kind: str
    addressed: bool  # a command for this bot, an @mention of it, or a reply to it
    text: str


@dataclass(frozen=True)
class PollAnswered:
    update_id: int
    poll_id: str
    user_id: str
    option_ids: tuple[int, ...]  # empty: the vote was retracted


@dataclass(frozen=True)
class Ignored:
    update_id: int
    reason: str


TelegramUpdate = PrivateText | ButtonTap | Membership | GroupText | PollAnswered | Ignored


class InvalidUpdate(ValueError):
    """The body is not a Telegram update."""


@dataclass(frozen=True)
class SentPoll:
    poll_id: str
    message_id: int


# ---- keyboards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    """A tap that answers the question: the payload for the pipeline."""

    payload: str


@dataclass(frozen=True)
class Toggle:
    selected: frozenset[int]


@dataclass(frozen=True)
class Done:
    selected: frozenset[int]


Tap = Pick | Toggle | Done


def _mask(selected: frozenset[int]) -> str:
    return format(sum(1 << i for i in selected), "x")


def _unmask(text: str, size: int) -> frozenset[int] | None:
    try:
        bits = int(text, 16)
    except ValueError:
        return None
    if bits < 0 or bits >> size:
        return None
    return frozenset(i for i in range(size) if bits >> i & 1)


Rows = list[list[tuple[str, str]]]


def keyboard(content: Content, selected: frozenset[int] = frozenset()) -> Rows:
    """The inline keyboard for rendered content, as rows of (label, callback data)."""
    if content.get("multi"):
        options = content.get("options", [])
        rows = [
            [(f"{'✅' if i in selected else '⬜'} {o['label']}", f"t:{_mask(selected ^ {i})}")]
            for i, o in enumerate(options)
        ]
        rows.append([(done_label(content, selected), f"d:{_mask(selected)}")])
        return rows
    return [[(str(b["label"]), f"c:{i}")] for i, b in enumerate(content.get("buttons", []))]


def done_label(content: Content, selected: frozenset[int]) -> str:
    """The Done button, with the running total against the budget when there is one."""
    done, of, chosen = DONE_WORDS.get(str(content.get("language")), DONE_WORDS["en"])
    budget = content.get("budget")
    if budget is None:
        return f"{done} ({len(selected)} {chosen})"
    return f"{done}: {spent(content, selected):,} {of} {budget:,}"


def spent(content: Content, selected: frozenset[int]) -> int:
    options = content.get("options", [])
    return sum(int(options[i].get("cost") or 0) for i in selected)


def decode_tap(content: Content, data: str) -> Tap | None:
    """What a button of this content's keyboard means; None for data it never carried."""
    kind, _, value = data.partition(":")
    question = content.get("question")
    if not question:
        return None
    if kind == "c" and not content.get("multi"):
        buttons = content.get("buttons", [])
        if value.isdigit() and int(value) < len(buttons):
            return Pick(str(buttons[int(value)]["data"]))
        return None
    if kind in ("t", "d") and content.get("multi"):
        options = content.get("options", [])
        selected = _unmask(value, len(options))
        if selected is None:
            return None
        return Toggle(selected) if kind == "t" else Done(selected)
    return None


def done_payload(content: Content, selected: frozenset[int]) -> str:
    options = content.get("options", [])
    ids = ",".join(str(options[i]["id"]) for i in sorted(selected))
    return f"{content['question']}:{ids}"


def selection_problem(content: Content, selected: frozenset[int], *, done: bool) -> str | None:
    """Why this selection can't stand, as a string key and values for the engine's strings."""
    high = content.get("max")
    if high is not None and len(selected) > high:
        return "multi_error_max"
    budget = content.get("budget")
    if budget is not None and spent(content, selected) > budget:
        return "multi_error_budget"
    if done and len(selected) < int(content.get("min", 1)):
        return "multi_error_min"
    return None


# ---- rate limits per chat ---------------------------------------------------------------------


class ChatLimiter:
    """Telegram's per-chat limits: one message a second to a chat, and ``group_per_minute`` to a
    group (negative chat ids). A short wait is slept here; a long one (a busy group) is handed
    back as a retryable error so the dispatcher gets on with other chats."""

    def __init__(
        self,
        *,
        interval: float = 1.0,
        group_per_minute: int = 20,
        max_wait: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self.group_per_minute = group_per_minute
        self.max_wait = max_wait
        self.monotonic = monotonic
        self.sleep = sleep
        self._last: dict[str, float] = {}
        self._group_sends: dict[str, deque[float]] = {}

    async def acquire(self, chat_id: str) -> None:
        now = self.monotonic()
        wait = max(0.0, self._last.get(chat_id, -1e9) + self.interval - now)
        window = self._group_sends.setdefault(chat_id, deque()) if chat_id.startswith("-") else None
        if window is not None:
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= self.group_per_minute:
                wait = max(wait, window[0] + 60 - now)
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
    api_base: str = "https://api.telegram.org"
    rate_per_second: float = 30.0
    delivery_reports: bool = False
    limiter: ChatLimiter = field(default_factory=ChatLimiter)
    name: str = CHANNEL
    _bot: Bot | None = field(default=None, init=False, repr=False)
    _ready: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    # -- rendering --

    def render(self, message: MessageCreated, language: str = "en") -> Content:
        """Single choice: one inline button per option. Multi-choice: toggle buttons and Done."""
        content = render_telegram(message, language)
        if message.question:
            content["question"] = message.question
        if message.multi and message.choices:
            hint = TOGGLE_HINT.get(language, TOGGLE_HINT["en"])
            content.update(
                text=f"{message.text}\n\n{hint}",
                multi=True,
                language=language,
                options=[
                    {"id": c.id, "label": _label(c.label, c.cost), "cost": c.cost}
                    for c in message.choices
                ],
                min=message.min_choices,
                max=message.max_choices,
                budget=message.budget,
                choices=[_label(c.label, c.cost) for c in message.choices],
            )
        return content

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
        rows = keyboard(content, frozenset(content.get("selected", [])))
        markup = _markup(rows) if rows else None
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
        bot = await self.bot()
        await self._call(bot.answer_callback_query(callback_query_id, text=text))

    async def show_selection(
        self, chat_id: str, message_id: int, content: Content, selected: frozenset[int]
    ) -> None:
        """Redraw a multi-choice keyboard with these options ticked."""
        bot = await self.bot()
        await self._call(
            bot.edit_message_reply_markup(
                chat_id=chat_id,
                message_id=message_id,
                reply_markup=_markup(keyboard(content, selected)),
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
        bot = await self.bot()
        await self._call(bot.set_my_commands([BotCommand(c, d) for c, d in COMMANDS]))

    async def get_updates(self, offset: int | None, timeout: int = 30) -> list[dict[str, Any]]:
        """Long-poll for updates (polling mode); each as the JSON the webhook would get."""
        bot = await self.bot()
        updates = await self._call(
            bot.get_updates(offset=offset, timeout=timeout, allowed_updates=list(UPDATE_TYPES))
        )
        return [u.to_dict() for u in updates]

    # -- inbound --

    async def parse_update(self, data: Mapping[str, Any]) -> TelegramUpdate:
        """Validate a webhook body into one of the neutral update values.

        Raises :class:`InvalidUpdate` for anything that is not a well-formed update: PTB does
        not check types, so every value used here is checked before it is used or stored."""
        if not isinstance(data, Mapping):
            raise InvalidUpdate("not a Telegram update: not an object")
        uid = _int(data.get("update_id"), "update_id")
        _fits(str(uid), PROVIDER_ID_MAX, "update_id")
        try:
            update = Update.de_json(dict(data), None)
        except Exception as exc:  # PTB trusts the JSON: a wrong shape fails in many ways
            raise InvalidUpdate(f"not a Telegram update: {exc.__class__.__name__}") from exc
        if update is None:
            raise InvalidUpdate("not a Telegram update")
        if update.callback_query is not None:
            query = update.callback_query
            message = query.message
            query_id = _token(_str(query.id, "callback query id"), "callback query id")
            data_text = _opt_str(query.data, "callback data")
            if data_text is not None:
                _token(data_text, "callback data")
            if message is None or data_text is None:
                return Ignored(uid, "callback without a message or data")
            message_id = _int(message.message_id, "message_id")
            return ButtonTap(uid, _chat_id(message.chat), query_id, message_id, data_text)
        if update.poll_answer is not None:
            answer = update.poll_answer
            poll_id = _fits(_str(answer.poll_id, "poll_id"), POLL_ID_MAX, "poll_id")
            if not isinstance(answer.option_ids, Sequence) or isinstance(answer.option_ids, str):
                raise InvalidUpdate("not a Telegram update: option_ids")
            option_ids = tuple(_int(i, "option id") for i in answer.option_ids)
            if any(not 0 <= i < POLL_OPTIONS_LIMIT for i in option_ids):
                raise InvalidUpdate("not a Telegram update: option id out of range")
            if answer.user is None:  # answered on behalf of a chat: not a person
                return Ignored(uid, "poll answer from a chat")
            user_id = _fits(str(_int(answer.user.id, "user id")), ADDRESS_MAX, "user id")
            return PollAnswered(uid, poll_id, user_id, option_ids)
        if update.my_chat_member is not None:
            change = update.my_chat_member
            chat = change.chat
            chat_id = _chat_id(chat)
            title = _title(chat.title)
            if chat.type not in (ChatType.GROUP, ChatType.SUPERGROUP):
                return Ignored(uid, "membership change outside a group")
            member = change.new_chat_member.status in (
                ChatMemberStatus.MEMBER,
                ChatMemberStatus.ADMINISTRATOR,
                ChatMemberStatus.RESTRICTED,
            )
            return Membership(
                uid, _fits(chat_id, GROUP_ID_MAX, "chat id"), title, chat.type, member
            )
        message = update.message
        if message is None:
            return Ignored(uid, "update type not used")
        chat = message.chat
        chat_id = _chat_id(chat)
        raw_text = _opt_str(message.text, "text")
        _opt_str(message.caption, "caption")
        text = clean_text(raw_text or "")
        if chat.type == ChatType.PRIVATE:
            if not raw_text:
                return Ignored(uid, "private message without text")
            return PrivateText(uid, chat_id, text)
        if chat.type in (ChatType.GROUP, ChatType.SUPERGROUP):
            group_id = _fits(chat_id, GROUP_ID_MAX, "chat id")
            title = _title(chat.title)
            bot = await self.bot()
            return GroupText(
                uid,
                group_id,
                title,
                chat.type,
                _addressed(message, bot.id, bot.username),
                text,
            )
        return Ignored(uid, "message outside a private chat or group")


def _int(value: Any, what: str) -> int:
    """An integer (JSON ``true`` is not one)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidUpdate(f"not a Telegram update: {what} is not an integer")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidUpdate(f"not a Telegram update: {what} is not a string")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _fits(value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise InvalidUpdate(f"not a Telegram update: {what} longer than {limit} characters")
    return _token(value, what)


def _token(value: str, what: str) -> str:
    """An id or code we store or look up: control characters (PostgreSQL refuses NUL) mean
    the update is not Telegram's."""
    if _CONTROL_CHARS.search(value):
        raise InvalidUpdate(f"not a Telegram update: {what} has control characters")
    return value


def _chat_id(chat: Any) -> str:
    """A chat's id as an address: an integer that fits the address columns."""
    return _fits(str(_int(getattr(chat, "id", None), "chat id")), ADDRESS_MAX, "chat id")


def _title(value: Any) -> str:
    return clean_text(_opt_str(value, "chat title") or "")


def _addressed(message: Message, bot_id: int, username: str) -> bool:
    text = message.text or ""
    mention = f"@{username}".lower()
    if text.startswith("/"):
        command = text.split(maxsplit=1)[0].lower()
        return "@" not in command or command.endswith(mention)
    if mention in text.lower():
        return True
    reply = message.reply_to_message
    return reply is not None and reply.from_user is not None and reply.from_user.id == bot_id


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


def _label(label: str, cost: int | None) -> str:
    return label if cost is None else f"{label} ({cost:,})"


def _markup(rows: Rows) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in row] for row in rows]
    )
