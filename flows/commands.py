"""Global commands that work at any point, on every channel, in English and Welsh."""

from __future__ import annotations

import re
from enum import StrEnum


class Command(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"
    LANG = "lang"
    MENU = "menu"
    FORGET = "forget"


_WORDS: dict[Command, tuple[str, ...]] = {
    # Carrier-standard opt-out words, and their Welsh forms.
    Command.STOP: (
        "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT",
        "STOPIO", "DAD-DANYSGRIFIO", "DADDANYSGRIFIO", "DIWEDD", "GADAEL",
    ),
    Command.START: ("START", "UNSTOP", "DECHRAU", "AILDDECHRAU"),
    Command.HELP: ("HELP", "INFO", "CYMORTH", "HELP!"),
    Command.LANG: ("LANG", "LANGUAGE", "IAITH"),
    Command.MENU: ("MENU", "DEWISLEN"),
    Command.FORGET: ("FORGET", "ANGHOFIO"),
}
_LOOKUP = {word: command for command, words in _WORDS.items() for word in words}

YES_WORDS = frozenset({"YES", "Y", "IE", "OES", "YDW", "YDY"})
NO_WORDS = frozenset({"NO", "N", "NA", "NAC OES", "NAGE", "NADW"})

LANGUAGE_NAMES = {
    "EN": "en", "ENG": "en", "ENGLISH": "en", "SAESNEG": "en",
    "CY": "cy", "CYM": "cy", "WELSH": "cy", "CYMRAEG": "cy",
}

_TRAILING = re.compile(r"[\s.!?,;:]+$")


def normalise(text: str) -> str:
    """Upper-case, trimmed, a leading ``/`` (Telegram commands) and trailing punctuation gone."""
    word = _TRAILING.sub("", text.strip()).upper()
    word = word.removeprefix("/")
    return word.split("@", 1)[0] if word and " " not in word else word  # /help@civicbot


def parse_command(text: str) -> tuple[Command, str] | None:
    """The command a message is, with any argument (``LANG cy``), or None."""
    word = normalise(text)
    if not word:
        return None
    head, _, rest = word.partition(" ")
    command = _LOOKUP.get(word) or _LOOKUP.get(head)
    if command is None:
        return None
    if rest and command is not Command.LANG:
        return None  # "stop the road works" is not an opt-out
    return command, rest.strip()
