"""Telegram updates, parsed into neutral values. python-telegram-bot's ``Update.de_json`` reads
the JSON; its objects stop here, and every value used is type-checked first (PTB trusts the
JSON it is given)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from telegram import Message, Update
from telegram.constants import ChatMemberStatus, ChatType

from channels.text import clean_text

POLL_OPTIONS_LIMIT = 100  # an option index in a poll answer beyond this is not Telegram's
# The storage columns: an address (chat or user id), a provider id (update id), a group's chat id
# and a poll id. A longer value is not Telegram's, and would overflow them on PostgreSQL.
ADDRESS_MAX, PROVIDER_ID_MAX, GROUP_ID_MAX, POLL_ID_MAX = 64, 128, 32, 64
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
UPDATE_TYPES = ("message", "callback_query", "my_chat_member", "poll_answer")


@dataclass(frozen=True)
class BotIdentity:
    id: int
    username: str


@dataclass(frozen=True)
class PrivateText:
    update_id: int
    chat_id: str
    text: str
    name: str = ""  # "First Last (@username)", for staff looking the person up


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


KINDS: dict[type, str] = {
    PrivateText: "message",
    GroupText: "message",
    ButtonTap: "callback_query",
    Membership: "my_chat_member",
    PollAnswered: "poll_answer",
    Ignored: "ignored",
}


async def parse_update(data: Any, me: Callable[[], Awaitable[BotIdentity]]) -> TelegramUpdate:
    """Validate a webhook body into one of the neutral update values.

    Raises :class:`InvalidUpdate` for anything that is not a well-formed update: PTB does
    not check types, so every value used here is checked before it is used or stored."""
    if not isinstance(data, Mapping):
        raise InvalidUpdate("not a Telegram update: not an object")
    uid = _int(data.get("update_id"), "update_id")
    _fits(str(uid), PROVIDER_ID_MAX, "update_id")
    plain = _plain_private_text(data, uid)
    if plain is not None:
        return plain
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
        if change.new_chat_member is None:  # Telegram always sends it; PTB does not check
            raise InvalidUpdate("not a Telegram update: my_chat_member without new_chat_member")
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
        if message.contact is not None and not raw_text:
            return PrivateText(uid, chat_id, _shared_phone(message), _person_name(message))
        if not raw_text:
            return Ignored(uid, "private message without text")
        return PrivateText(uid, chat_id, text, _person_name(message))
    if chat.type in (ChatType.GROUP, ChatType.SUPERGROUP):
        group_id = _fits(chat_id, GROUP_ID_MAX, "chat id")
        title = _title(chat.title)
        bot = await me()
        return GroupText(
            uid, group_id, title, chat.type, _addressed(message, bot.id, bot.username), text
        )
    return Ignored(uid, "message outside a private chat or group")


# The common case, a person typing to the bot, in exactly the shape Telegram sends it: these
# keys and no others, every value of its type. Such an update is read without building PTB's
# objects (a large part of a message's CPU time); anything else goes through ``Update.de_json``.
_PLAIN_MESSAGE_KEYS = frozenset({"message_id", "date", "chat", "from", "text"})
_PLAIN_CHAT_KEYS = frozenset({"id", "type", "first_name", "last_name", "username"})
_PLAIN_USER_KEYS = frozenset(
    {"id", "is_bot", "first_name", "last_name", "username", "language_code", "is_premium"}
)
_PLAIN_USER_BOOLS = frozenset({"is_bot", "is_premium"})
_PLAIN_DATE_MAX = 2**32  # a Unix time PTB turns into a datetime without complaint


def _plain_private_text(data: Mapping[str, Any], uid: int) -> PrivateText | None:
    """The update as :func:`parse_update` would read it through PTB, for a private text
    message in Telegram's plain shape; None for any other update (read through PTB)."""
    message = data.get("message")
    if len(data) != 2 or not isinstance(message, dict) or not _PLAIN_MESSAGE_KEYS.issuperset(
        message
    ):
        return None
    chat, user, text = message.get("chat"), message.get("from"), message.get("text")
    date, message_id = message.get("date"), message.get("message_id")
    if not (
        isinstance(text, str)
        and text
        and type(message_id) is int
        and type(date) is int
        and 0 <= date < _PLAIN_DATE_MAX
        and isinstance(chat, dict)
        and chat.get("type") == ChatType.PRIVATE
        and _PLAIN_CHAT_KEYS.issuperset(chat)
        and type(chat.get("id")) is int
        and all(isinstance(chat[key], str) for key in chat.keys() - {"id"})
        and (user is None or _plain_user(user))
    ):
        return None
    name = "" if user is None else _name(user.get("first_name"), user.get("last_name"),
                                          user.get("username"))  # fmt: skip
    return PrivateText(uid, _chat_id_of(chat["id"]), clean_text(text), name)


def _plain_user(user: Any) -> bool:
    return (
        isinstance(user, dict)
        and _PLAIN_USER_KEYS.issuperset(user)
        and type(user.get("id")) is int
        and type(user.get("is_bot")) is bool
        and isinstance(user.get("first_name"), str)
        and all(
            type(value) is bool if key in _PLAIN_USER_BOOLS else isinstance(value, str)
            for key, value in user.items()
            if key != "id"
        )
    )


SHARED_NOT_OWN = "shared:other"
"""The text a shared contact that is not the sender's own arrives as: never its number."""
_PHONE = re.compile(r"\+?[0-9]{5,20}")


def _shared_phone(message: Message) -> str:
    """A contact shared in a private chat (Telegram's request-contact button): its number
    as the message text when it is the sender's own contact (``contact.user_id`` is the
    sender), else :data:`SHARED_NOT_OWN` (someone else's contact is never used)."""
    contact = message.contact
    assert contact is not None
    sender = message.from_user
    owner = contact.user_id
    phone = _opt_str(contact.phone_number, "phone_number") or ""
    if (
        sender is None
        or owner is None
        or _int(owner, "contact user_id") != _int(sender.id, "user id")
        or not _PHONE.fullmatch(phone.replace(" ", ""))
    ):
        return SHARED_NOT_OWN
    phone = phone.replace(" ", "")
    return phone if phone.startswith("+") else f"+{phone}"


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
    return _chat_id_of(getattr(chat, "id", None))


def _chat_id_of(value: Any) -> str:
    return _fits(str(_int(value, "chat id")), ADDRESS_MAX, "chat id")


NAME_MAX = 128


def _person_name(message: Message) -> str:
    """The sender's name as Telegram shows it: first and last name, and @username."""
    user = message.from_user
    if user is None:
        return ""
    return _name(user.first_name, user.last_name, user.username)


def _name(first: Any, last: Any, username: Any) -> str:
    parts = [_opt_str(first, "first_name"), _opt_str(last, "last_name")]
    name = " ".join(clean_text(p).strip() for p in parts if p and clean_text(p).strip())
    username = _opt_str(username, "username")
    if username and clean_text(username).strip():
        name = f"{name} (@{clean_text(username).strip()})" if name else f"@{username}"
    return name[:NAME_MAX]


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
