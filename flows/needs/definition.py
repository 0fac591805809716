"""A needs assessment's YAML file, read and checked whole: every problem is reported with its
line number, and nothing is returned unless the file is right.

```yaml
id: spring-2027
title: {en: "What should our area fix first?", cy: "Beth ddylai ein hardal ei drwsio gyntaf?"}
wards: all                  # or [W05000865, W05000866]
opens_at: "2027-03-01T09:00:00Z"
closes_at: "2027-04-30T21:00:00Z"
picks: 3
ask_free_text: true
about_you: [age_band, disability]
categories:
  - {id: youth, en: "Youth clubs", cy: "Clybiau ieuenctid"}
```
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import yaml

LONDON = ZoneInfo("Europe/London")
MAX_FILE_BYTES = 256 * 1024
MIN_CATEGORIES, MAX_CATEGORIES = 3, 40
MAX_PICKS = 10
MAX_TITLE, MAX_LABEL = 200, 100
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
CATEGORY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
FIELDS = (
    "id", "title", "wards", "opens_at", "closes_at", "picks", "ask_free_text", "about_you",
    "categories",
)


class DefinitionError(Exception):
    """The file is not a valid needs assessment; ``problems`` are "line N: ..." lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Category:
    id: str
    en: str
    cy: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "en": self.en, "cy": self.cy}


@dataclass(frozen=True)
class Definition:
    id: str
    title: dict[str, str]
    wards: tuple[str, ...] | None  # None: every ward
    opens_at: datetime  # UTC
    closes_at: datetime  # UTC
    picks: int
    ask_free_text: bool
    about_you: tuple[str, ...]
    categories: tuple[Category, ...]


class _Lines:
    """Line numbers of the YAML nodes, by path (keys and list indexes)."""

    def __init__(self) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        self.duplicates: list[tuple[int, str]] = []

    def walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = str(key.value)
                if name in seen:
                    self.duplicates.append((key.start_mark.line + 1, name))
                seen.add(name)
                self.lines[(*path, name, "#key")] = key.start_mark.line + 1
                self.walk(value, (*path, name))
                # A problem with a field is reported on the line of its name (a block list's
                # items start on the lines after it).
                self.lines[(*path, name)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, (*path, index))

    def of(self, *path: Any) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


def read_mapping(text: str, expected: str) -> tuple[dict[str, Any], _Lines]:
    """A definition file's top-level mapping and the line of every key in it (duplicated
    keys in ``lines.duplicates``); raises :class:`DefinitionError` for a file over
    :data:`MAX_FILE_BYTES`, YAML that does not parse (with its line), or anything but a
    mapping (``expected`` names its first fields). Shared by every YAML definition file."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise DefinitionError([f"line 1: the file is larger than {MAX_FILE_BYTES} bytes"])
    lines = _Lines()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DefinitionError([f"line {line}: not valid YAML: {reason}"]) from None
    if node is None or not isinstance(data, dict):
        raise DefinitionError([f"line 1: expected a mapping with {expected}"])
    lines.walk(node, ())
    return data, lines


def parse_wards(
    data: dict[str, Any], known: Collection[str] | None, problem: Callable[..., None]
) -> tuple[str, ...] | None:
    """A definition's ``wards``: None for ``all`` (or when the field is missing, which the
    caller reports), else the ward codes in the order given. Problems go to ``problem``
    (message, then the path of the node they are about); ``known`` (when given) are the wards
    a code may name. Shared by every YAML definition file that names wards."""
    raw = data.get("wards")
    if "wards" not in data or raw == "all":
        return None
    if not (isinstance(raw, list) and raw):
        problem("wards: give `all` or a list of ward codes", "wards")
        return None
    codes: list[str] = []
    for i, code in enumerate(raw):
        if not isinstance(code, str) or not code.strip():
            problem("wards: each ward is a ward code", "wards", i)
        elif code in codes:
            problem(f"wards: {code} is listed twice", "wards", i)
        elif known is not None and code not in known:
            problem(
                f"wards: unknown ward {_show(code)} (load it with `civicbot wards load`)",
                "wards",
                i,
            )
        else:
            codes.append(code)
    return tuple(codes)


def parse_definition(
    text: str,
    *,
    known_wards: Collection[str] | None = None,
    census_dimensions: Collection[str] | None = None,
    now: datetime | None = None,
) -> Definition:
    """The definition in ``text``; raises :class:`DefinitionError` with every problem found.
    ``known_wards`` and ``census_dimensions`` (when given) are what ``wards`` and
    ``about_you`` may name; with ``now``, a closing time already past is refused."""
    data, lines = read_mapping(text, "id, title, categories, ...")
    problems: list[tuple[int, str]] = [(n, f"{k!r} is given twice") for n, k in lines.duplicates]

    def problem(message: str, *path: Any) -> None:
        problems.append((lines.of(*path), message))

    for key in data:
        if key not in FIELDS:
            problem(f"unknown field {key!r} (fields: {', '.join(FIELDS)})", str(key), "#key")
    for key in ("id", "title", "wards", "opens_at", "closes_at", "categories"):
        if key not in data:
            problem(f"{key} is missing")

    ident = data.get("id")
    if "id" in data and not (isinstance(ident, str) and ID_PATTERN.fullmatch(ident)):
        problem("id: use 1-64 lower-case letters, digits, - and _ (like spring-2027)", "id")

    title: dict[str, str] = {}
    if "title" in data:
        title = _texts(data.get("title"), MAX_TITLE, "title", ("title",), problem)

    wards = parse_wards(data, known_wards, problem)

    opens_at = _when(data.get("opens_at"), "opens_at", problem) if "opens_at" in data else None
    closes_at = _when(data.get("closes_at"), "closes_at", problem) if "closes_at" in data else None
    if opens_at and closes_at and closes_at <= opens_at:
        problem("closes_at must be after opens_at", "closes_at")
    if closes_at and now is not None and closes_at <= now:
        problem("closes_at is in the past", "closes_at")

    picks = data.get("picks", 3)
    if isinstance(picks, bool) or not isinstance(picks, int) or not 1 <= picks <= MAX_PICKS:
        problem(f"picks: a whole number from 1 to {MAX_PICKS}", "picks")
        picks = 3

    ask_free_text = data.get("ask_free_text", False)
    if not isinstance(ask_free_text, bool):
        problem("ask_free_text: true or false", "ask_free_text")
        ask_free_text = False

    about: list[str] = []
    raw_about = data.get("about_you", [])
    if not isinstance(raw_about, list):
        problem("about_you: a list of census dimensions, like [age_band, disability]", "about_you")
        raw_about = []
    for i, name in enumerate(raw_about):
        if not isinstance(name, str) or not ID_PATTERN.fullmatch(name):
            problem("about_you: each item is a census dimension name", "about_you", i)
        elif name in about:
            problem(f"about_you: {name} is listed twice", "about_you", i)
        elif census_dimensions is not None and name not in census_dimensions:
            loaded = ", ".join(sorted(census_dimensions)) or "none yet"
            problem(
                f"about_you: no census loaded for {name!r} (loaded: {loaded}; "
                "see `civicbot census load`)",
                "about_you",
                i,
            )
        else:
            about.append(name)

    categories: list[Category] = []
    raw_categories = data.get("categories")
    if "categories" in data:
        if not isinstance(raw_categories, list):
            problem("categories: a list of {id, en, cy}", "categories")
            raw_categories = []
        if not MIN_CATEGORIES <= len(raw_categories) <= MAX_CATEGORIES:
            problem(
                f"categories: give {MIN_CATEGORIES} to {MAX_CATEGORIES} "
                f"(there are {len(raw_categories)})",
                "categories",
            )
        seen: set[str] = set()
        for i, item in enumerate(raw_categories):
            where = ("categories", i)
            if not isinstance(item, dict):
                problem("categories: each is {id: ..., en: ..., cy: ...}", *where)
                continue
            for key in item:
                if key not in ("id", "en", "cy"):
                    problem(f"categories: unknown field {key!r}", *where, str(key), "#key")
            cid = item.get("id")
            if not (isinstance(cid, str) and CATEGORY_ID.fullmatch(cid)):
                problem("categories: id is 1-32 letters, digits, - or _", *where, "id")
                continue
            if cid in seen:
                problem(f"categories: id {cid!r} is used twice", *where, "id")
            seen.add(cid)
            texts = _texts(
                {k: v for k, v in item.items() if k in ("en", "cy")},
                MAX_LABEL,
                f"category {cid}",
                where,
                problem,
            )
            if len(texts) == 2:
                categories.append(Category(cid, texts["en"], texts["cy"]))
        if isinstance(picks, int) and categories and picks > len(raw_categories):
            problem("picks: more than the number of categories", "picks")

    if problems:
        raise DefinitionError([f"line {n}: {m}" for n, m in sorted(problems, key=lambda p: p[0])])
    assert isinstance(ident, str) and opens_at is not None and closes_at is not None
    return Definition(
        id=ident,
        title=title,
        wards=wards,
        opens_at=opens_at,
        closes_at=closes_at,
        picks=picks,
        ask_free_text=ask_free_text,
        about_you=tuple(about),
        categories=tuple(categories),
    )


def london(when: datetime) -> str:
    """A time as people are shown it: Europe/London, day/month/year."""
    return when.astimezone(LONDON).strftime("%d/%m/%Y %H:%M")


def _show(value: str) -> str:
    return repr(_CONTROL.sub("?", value[:40]))


def _texts(
    value: Any, limit: int, what: str, path: tuple[Any, ...], problem: Any
) -> dict[str, str]:
    """{en, cy}: both needed, non-empty, one line each, at most ``limit`` characters."""
    if not isinstance(value, dict):
        problem(f"{what}: give {{en: ..., cy: ...}}", *path)
        return {}
    texts: dict[str, str] = {}
    for language in ("en", "cy"):
        text = value.get(language)
        if not isinstance(text, str) or not text.strip():
            problem(f"{what}: the {language} text is missing or empty", *path)
        elif len(text) > limit:
            problem(f"{what}: the {language} text is over {limit} characters", *path, language)
        elif _CONTROL.search(text):
            problem(f"{what}: the {language} text has control characters", *path, language)
        else:
            texts[language] = text.strip()
    for key in value:
        if key not in ("en", "cy"):
            problem(f"{what}: unknown language {key!r} (use en and cy)", *path, str(key), "#key")
    return texts


def _when(value: Any, name: str, problem: Any) -> datetime | None:
    """A date and time; one without a zone is Europe/London time."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date) or not isinstance(value, str):
        problem(f"{name}: give a date and time, like \"2027-03-01T09:00:00Z\"", name)
        return None
    else:
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            problem(f"{name}: {_show(value)} is not a date and time like 2027-03-01T09:00Z", name)
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=LONDON)
    if not 2000 <= when.year <= 2100:
        problem(f"{name}: the year must be between 2000 and 2100", name)
        return None
    return when.astimezone(UTC)
