"""What the fuzz tests share (``tests/test_fuzz.py``, ``tests/sms/test_fuzz.py``,
``tests/telegram/test_fuzz.py``): strategies for hostile input, and a harness that sends each
generated request to one running app and checks every answer and every log line.

Each route gets :data:`EXAMPLES` generated requests per database (``CIVICBOT_FUZZ_EXAMPLES``
raises it; the default is what CI runs). Generation is derandomised, so CI sees the same
requests every run. One app and one database serve all of a test's examples (a database per
example would take hours); the harness checks at the end that the database still holds
together. Those end checks run in the harness fixture's teardown, after the last example.

Every generated text or address that could be logged carries :data:`MARKER`, and phone
numbers and Telegram ids come from small known sets, so "nothing a person sent is logged" is
checked on every log record, not hoped for.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot.services import Services
from storage.models import ChannelIdentity, Contact, InboundMessage, OutboundMessage

EXAMPLES = int(os.environ.get("CIVICBOT_FUZZ_EXAMPLES", "2000"))
FUZZ_TIMEOUT = max(900, EXAMPLES // 2)
"""Seconds a fuzz test may take: 900 for CI's examples, more for a larger run (a busy
machine answers some hundreds of requests a minute through the whole path)."""
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests on every run: CI is reproducible
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app serves every example, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

MARKER = "Qz7mark"
PHONES = tuple(f"+4477009{k:05d}" for k in range(1, 10))
PHONE_DIGITS = tuple(p.removeprefix("+44") for p in PHONES)  # how they could appear in a log
TELEGRAM_USERS = tuple(8_400_000 + k for k in range(1, 10))
TELEGRAM_GROUPS = (-1008400000001, -1008400000002)

KEYWORDS = (
    "HI", "JOIN", "HELO", "1", "2", "3", "1 3", "1,2", "YES", "NO", "STOP", "START", "HELP",
    "MENU", "MORE", "MWY", "LANG", "LANG cy", "IAITH", "FORGET", "ANGHOFIO", "CF10 1EP",
    "cf24 2dg", "English", "Cymraeg", "VOTE", "/start", "/help", "/menu", "", "   ",
)  # fmt: skip

# ---- building blocks --------------------------------------------------------------------------

CONTROL = st.sampled_from(
    ["\x00", "\x01", "\x07", "\x08", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff", "\r", "\n", "\t"]
)
SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
# Any characters, control characters often; surrogates only where a body is JSON.
PLAIN_TEXT = st.text(st.one_of(st.characters(codec="utf-8"), CONTROL), max_size=40)
ANY_TEXT = st.text(st.one_of(st.characters(codec="utf-8"), CONTROL, SURROGATE), max_size=40)


def marked(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Text carrying :data:`MARKER`, somewhere a log line would show it."""
    return st.tuples(text, text).map(lambda parts: parts[0] + MARKER + parts[1])


def huge(alphabet: str = "x🗳\x00") -> st.SearchStrategy[str]:
    """Very long text, cheap to generate: a marked prefix and one character many times."""
    return st.tuples(st.integers(0, 30_000), st.sampled_from(list(alphabet))).map(
        lambda n_c: MARKER + n_c[1] * n_c[0]
    )


def texts(text: st.SearchStrategy[str] = PLAIN_TEXT) -> st.SearchStrategy[str]:
    """What a person might send: commands and answers, or anything at all."""
    return st.one_of(
        st.sampled_from(KEYWORDS),
        st.sampled_from(KEYWORDS).map(lambda k: f" {k.lower()}!\x00"),
        marked(text),
        huge(),
    )


JUNK: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | marked(ANY_TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)
"""A JSON value of any type, in the place of one that has a type."""


def or_junk(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a proper value, sometimes anything at all."""
    return st.one_of(values, values, values, JUNK)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, in proportion to their weights (``st.one_of`` flattens nested
    choices, so a group of four odd cases would otherwise outweigh the common case)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def json_bytes(value: Any, ascii_only: bool) -> bytes:
    """JSON as a client might send it: lone surrogates become escapes, or invalid UTF-8."""
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def json_bodies(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.builds(json_bytes, values, st.booleans())


RAW_JSON_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b"null", b"[]", b'"x"', b"1e999999", b"{", b'{"a":}', b"\xff\xfe{}"]),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * (n % 3)),  # nested deep, or cut off
    st.integers(1, 100_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)
"""Bodies that are not JSON objects: bytes, broken or deep JSON, invalid UTF-8."""


def oversized(limit: int) -> st.SearchStrategy[bytes]:
    return st.integers(limit + 1, 3 * limit).map(lambda n: b" " * n)


# ---- the harness ------------------------------------------------------------------------------


@dataclass(repr=False)
class Harness:
    """One app, its client and its log; every request goes through :meth:`send`."""

    services: Services
    client: httpx.AsyncClient
    caplog: pytest.LogCaptureFixture
    private: tuple[str, ...] = (MARKER, *PHONE_DIGITS, *map(str, TELEGRAM_USERS))
    statuses: Counter[int] = field(default_factory=Counter)
    known: list[str] = field(default_factory=list)  # values a test found at set-up
    examples: int = 0
    _seen: int = 0

    def __post_init__(self) -> None:
        self.caplog.set_level(logging.INFO)
        for client_log in ("httpx", "httpcore"):  # as `civicbot serve` sets them (and the
            self.caplog.set_level(logging.WARNING, logger=client_log)  # test client's own)

    def __repr__(self) -> str:  # shown with a failing example: keep it short
        return f"Harness({self.services.settings.database_url.split(':')[0]})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's printer
        printer.text(repr(self))

    async def send(
        self, path: str, content: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        response = await self.client.post(path, content=content, headers=headers or {})
        self.examples += 1
        self.statuses[response.status_code] += 1
        assert response.status_code < 500, (response.status_code, response.text, content[:500])
        self.check_log()
        return response

    def check_log(self) -> None:
        """No error, no traceback, and nothing a person sent in any record since the last
        look (warnings for refused input are fine)."""
        records = self.caplog.records
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        for record in records[self._seen :]:
            line = formatter.format(record)
            assert record.levelno < logging.ERROR and "Traceback" not in line, line
            leaked = [p for p in self.private if p in line]
            assert not leaked, (leaked, line)
        self._seen = len(records)

    async def finish(self, extra: Callable[[], Iterable[str]] | None = None) -> None:
        """After the last example: send everything queued, look at the log once more, and
        check the database holds together."""
        while await self.services.dispatcher.run_once():
            pass
        self.check_log()
        await check_database(self.services)
        assert self.examples >= EXAMPLES, f"only {self.examples} examples ran"
        summary = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        print(f"\n{self.examples} requests; answers {summary}")  # noqa: T201 (-s shows it)


async def check_database(services: Services) -> None:
    """Every row points at something that exists, and nothing stored carries a NUL."""
    async with services.sessions() as session:
        contacts = set((await session.execute(select(Contact.id))).scalars())
        identities = (await session.execute(select(ChannelIdentity))).scalars().all()
        inbound = (await session.execute(select(InboundMessage))).scalars().all()
        outbound = (await session.execute(select(OutboundMessage))).scalars().all()
    assert all(i.contact_id in contacts for i in identities)
    assert all(r.contact_id is None or r.contact_id in contacts for r in inbound)
    assert all(r.contact_id is None or r.contact_id in contacts for r in outbound)
    for row in inbound:
        stored = [row.text or "", row.address or "", row.provider_id, json.dumps(row.raw)]
        assert not any("\x00" in s or "\\u0000" in s for s in stored), row
    for out in outbound:
        assert "\\u0000" not in json.dumps(out.content) and "\x00" not in (out.error or ""), out
    assert inbound, "nothing got through: the generated requests are all refused"
