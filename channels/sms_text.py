"""SMS text rendering: numbered choices, GSM-7 clean-up and segment counting.

GSM-7 messages fit 160 characters in one segment and 153 per segment when concatenated; any
character outside GSM-7 makes the whole message UCS-2 (70, then 67 per segment, counted in UTF-16
code units). Welsh ŵ and ŷ are not in GSM-7, so Welsh text with them goes as UCS-2.
"""

from __future__ import annotations

import re

from flows.catalogue import Catalogue
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


# These run on every reply (several times while a long one is paged), so they work on whole
# strings (set and str methods) rather than character by character in Python.
_GSM7 = GSM7_BASIC | GSM7_EXTENDED
_TO_GSM7 = str.maketrans(_REPLACEMENTS)


def to_gsm7_where_possible(text: str) -> str:
    """Replace typographic quotes, dashes, ellipses and odd spaces with GSM-7 equivalents."""
    return text.translate(_TO_GSM7)


def is_gsm7(text: str) -> bool:
    return _GSM7.issuperset(text)


def segment_count(text: str) -> int:
    """How many SMS segments the provider will bill for ``text``."""
    if not text:
        return 1
    if is_gsm7(text):
        units = len(text) + sum(text.count(ch) for ch in GSM7_EXTENDED)  # escaped: 2 each
        return 1 if units <= 160 else -(-units // 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def _or_list(numbers: list[str], conjunction: str) -> str:
    if len(numbers) == 1:
        return numbers[0]
    return ", ".join(numbers[:-1]) + f" {conjunction} " + numbers[-1]


def _choice_lines(message: MessageCreated) -> list[str]:
    return [
        f"{number} {choice.label}" + (f" ({choice.cost:,})" if choice.cost is not None else "")
        for number, choice in enumerate(message.choices, start=1)
    ]


def _reply_hint(message: MessageCreated, language: str, catalogue: Catalogue) -> str:
    if not message.multi:
        numbers = [str(n) for n in range(1, len(message.choices) + 1)]
        if len(numbers) > 4:  # "Reply 1, 2, 3, ... or 40" says nothing: give the range
            numbers = [f"1-{len(numbers)}"]
        conjunction = catalogue.text("sms_or", language)
        return catalogue.text("sms_reply_one", language, numbers=_or_list(numbers, conjunction))
    if message.ordered:
        most = message.max_choices or len(message.choices)
        hint = catalogue.text("sms_reply_ranked", language, max=most)
    else:
        hint = catalogue.text("sms_reply_many", language)
        if message.max_choices is not None:
            hint += catalogue.text("sms_up_to", language, max=message.max_choices)
    if message.budget is not None:
        hint += catalogue.text("sms_budget", language, budget=f"{message.budget:,}")
    return hint


def render_sms_text(message: MessageCreated, language: str, catalogue: Catalogue) -> str:
    """The whole SMS body for an engine message: text, numbered choices and how to reply."""
    if not message.choices:
        return to_gsm7_where_possible(message.text)
    lines = [message.text, "", *_choice_lines(message), _reply_hint(message, language, catalogue)]
    return to_gsm7_where_possible("\n".join(lines))


def render_sms_pages(
    message: MessageCreated, language: str, max_segments: int, catalogue: Catalogue
) -> list[str]:
    """The SMS pages for an engine message, each at most ``max_segments`` segments.

    A question with a long list of choices is split between choices: the question on the
    first page, the numbers running on across pages (so "2 14 31" answers from any page),
    and on every page but the last a footer with the budget and how to get more; the reply
    hint ends the last page. Other long text is split between words (:func:`paginate`)."""
    whole = render_sms_text(message, language, catalogue)
    if segment_count(whole) <= max_segments or not message.choices:
        return paginate(whole, max_segments, language, catalogue)
    lines = [to_gsm7_where_possible(line) for line in _choice_lines(message)]
    head = to_gsm7_where_possible(message.text)
    hint = to_gsm7_where_possible(_reply_hint(message, language, catalogue))

    def footer(page: int, pages: int) -> str:
        parts = []
        if message.budget is not None:
            parts.append(catalogue.text("sms_list_budget", language, budget=f"{message.budget:,}"))
        parts.append(catalogue.text("sms_list_more", language, page=page, pages=pages))
        return to_gsm7_where_possible("\n".join(parts))

    widest = footer(99, 99)
    if segment_count(head + "\n\n" + lines[0] + "\n\n" + widest) > max_segments:
        return paginate(whole, max_segments, language, catalogue)  # no room for a list
    def fits(parts: list[str], end: str) -> bool:
        return segment_count("\n".join(parts) + end) <= max_segments

    done: list[list[str]] = []
    page: list[str] = [head, ""]  # the question, a blank line, then choices
    placed = 0  # choices on this page
    for index, line in enumerate(lines):
        if fits([*page, *lines[index:]], "\n" + hint):  # the rest fits on a last page
            page.extend(lines[index:])
            break
        if placed and not fits([*page, line], "\n\n" + widest):
            done.append(page)
            page, placed = [], 0
        page.append(line)
        placed += 1
    else:
        if not fits(page, "\n" + hint):
            done.append(page)
            page = []
    total = len(done) + 1
    pages = [
        "\n".join(body) + "\n\n" + footer(number, total)
        for number, body in enumerate(done, start=1)
    ]
    pages.append("\n".join([*page, hint]))
    return pages


def _more_suffix(language: str, page: int, pages: int, catalogue: Catalogue) -> str:
    return "\n\n" + catalogue.text("sms_more", language, page=page, pages=pages)


def paginate(text: str, max_segments: int, language: str, catalogue: Catalogue) -> list[str]:
    """Split ``text`` into pages of at most ``max_segments`` segments each, breaking between
    words; every page but the last ends "Reply MORE". Short text comes back as one page."""
    if segment_count(text) <= max_segments:
        return [text]
    reserve = _more_suffix(language, 99, 99, catalogue)  # room for the widest page marker
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
        body + _more_suffix(language, n, total, catalogue) if n < total else body
        for n, body in enumerate(bodies, start=1)
    ]


def is_more_request(text: str) -> bool:
    """Whether an inbound message asks for the next page ("MORE", Welsh "MWY")."""
    return normalise(text) in MORE_WORDS
