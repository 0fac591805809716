"""SMS text rendering: numbered choices, GSM-7 clean-up and segment counting.

GSM-7 messages fit 160 characters in one segment and 153 per segment when concatenated; any
character outside GSM-7 makes the whole message UCS-2 (70, then 67 per segment, counted in UTF-16
code units). Welsh ŵ and ŷ are not in GSM-7, so Welsh text with them goes as UCS-2.
"""

from __future__ import annotations

import re

from flows.commands import normalise
from flows.events import MessageCreated

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

# Typographic characters that phones and word processors put in, and their GSM-7 stand-ins.
_REPLACEMENTS = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2015": "-",
    "\u2212": "-",
    "\u2010": "-",
    "\u2011": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\u2009": " ",
    "\u200a": " ",
    "\u202f": " ",
    "\u2007": " ",
    "\u200b": "",
    "\u2022": "-",
    "\u00ad": "",  # soft hyphen
    "\u2060": "",  # word joiner
    "\ufeff": "",  # byte-order mark pasted from documents
    "\t": " ",
}

DEFAULT_MAX_SEGMENTS = 3
MORE_WORDS = frozenset({"MORE", "MWY"})
# Long words are cut into chunks this long so any page (even one UCS-2 segment) can hold one.
_TOKENS = re.compile(r"\S{1,30}|\s+")


def to_gsm7_where_possible(text: str) -> str:
    """Replace typographic quotes, dashes, ellipses and odd spaces with GSM-7 equivalents."""
    return "".join(_REPLACEMENTS.get(ch, ch) for ch in text)


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def segment_count(text: str) -> int:
    """How many SMS segments the provider will bill for ``text``."""
    if not text:
        return 1
    if is_gsm7(text):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        return 1 if units <= 160 else -(-units // 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def _or_list(numbers: list[str], conjunction: str) -> str:
    if len(numbers) == 1:
        return numbers[0]
    return ", ".join(numbers[:-1]) + f" {conjunction} " + numbers[-1]


def render_sms_text(message: MessageCreated, language: str = "en") -> str:
    """The whole SMS body for an engine message: text, numbered choices and how to reply."""
    if not message.choices:
        return to_gsm7_where_possible(message.text)
    welsh = language == "cy"
    lines = [message.text, ""]
    for number, choice in enumerate(message.choices, start=1):
        cost = f" ({choice.cost:,})" if choice.cost is not None else ""
        lines.append(f"{number} {choice.label}{cost}")
    numbers = [str(n) for n in range(1, len(message.choices) + 1)]
    if message.multi:
        hint = (
            "Atebwch gyda rhifau eich dewisiadau, e.e. 1 3"
            if welsh
            else "Reply with the numbers of your choices, e.g. 1 3"
        )
        if message.max_choices is not None:
            most = message.max_choices
            hint += f" (hyd at {most})" if welsh else f" (up to {most})"
        if message.budget is not None:
            hint += f". Cyllideb: {message.budget:,}" if welsh else f". Budget: {message.budget:,}"
        lines.append(hint)
    else:
        lines.append(
            f"Atebwch {_or_list(numbers, 'neu')}" if welsh else f"Reply {_or_list(numbers, 'or')}"
        )
    return to_gsm7_where_possible("\n".join(lines))


def _more_suffix(language: str, page: int, pages: int) -> str:
    if language == "cy":
        return f"\n\n({page}/{pages}) Atebwch MWY am fwy"
    return f"\n\n({page}/{pages}) Reply MORE for more"


def paginate(text: str, max_segments: int, language: str = "en") -> list[str]:
    """Split ``text`` into pages of at most ``max_segments`` segments each, breaking between
    words; every page but the last ends "Reply MORE". Short text comes back as one page."""
    if segment_count(text) <= max_segments:
        return [text]
    reserve = _more_suffix(language, 99, 99)  # room for the widest page marker
    # Lines stay whole (a choice is never split from its number) unless one is too long for a
    # page by itself; then it is broken between words.
    units: list[str] = []
    for index, line in enumerate(text.split("\n")):
        prefix = "\n" if index else ""
        words = _TOKENS.findall(line)
        if segment_count(line + reserve) <= max_segments or not words:
            units.append(prefix + line)
        else:
            units.extend([prefix + words[0], *words[1:]])
    bodies: list[str] = []
    current = ""
    for index, token in enumerate(units):
        candidate = current + token
        if not current.strip() or segment_count(candidate + reserve) <= max_segments:
            current = candidate if current.strip() else candidate.lstrip()
            continue
        rest = current + "".join(units[index:])
        if segment_count(rest) <= max_segments:  # the last page needs no "Reply MORE"
            current = rest
            break
        bodies.append(current.rstrip())
        current = token.lstrip()
    if current.strip():
        bodies.append(current.rstrip())
    total = len(bodies)
    return [
        body + _more_suffix(language, n, total) if n < total else body
        for n, body in enumerate(bodies, start=1)
    ]


def is_more_request(text: str) -> bool:
    """Whether an inbound message asks for the next page ("MORE", Welsh "MWY")."""
    return normalise(text) in MORE_WORDS
