"""Fuzzing the simulator's API: generated JSON bodies of every shape, on SQLite and PostgreSQL,
never get a 5xx, never log a traceback or what was sent, and leave the database whole
(see tests/fuzzing.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.app import build_app
from bot.clock import FixedClock
from bot.web.simulator import MAX_BODY
from tests.conftest import load_demo_wards, make_settings, start_services
from tests.fuzzing import (
    ANY_TEXT,
    FUZZ,
    FUZZ_TIMEOUT,
    JUNK,
    PHONES,
    PLAIN_TEXT,
    RAW_JSON_BODIES,
    Harness,
    json_bodies,
    marked,
    or_junk,
    oversized,
    texts,
    weighted,
)

API = "/simulator/api/messages"

ADDRESSES = st.one_of(
    st.sampled_from(PHONES),
    st.sampled_from(PHONES).map(lambda p: f" {p}\x00"),
    marked(PLAIN_TEXT),
)
IDS = st.one_of(st.integers(1, 300).map(lambda n: f"m-{n}"), marked(st.text(max_size=20)))
CHOICES = st.one_of(
    st.sampled_from(["c:0", "c:1", "c:2", "t:0", "n:1", "p:0", "d", "x:9"]),
    st.sampled_from(["onboarding:consent:yes", "onboarding:language:cy"]),
    marked(PLAIN_TEXT),
)
MESSAGE_IDS = st.integers(0, 3000).map(str)
# Well-typed messages (their texts, ids and addresses as hostile as any) ...
MESSAGES = st.fixed_dictionaries(
    {"channel": st.sampled_from(["sms", "telegram"]), "address": ADDRESSES},
    optional={"text": texts(), "id": IDS, "choice": CHOICES, "message_id": MESSAGE_IDS},
)
# ... and the same with any field of any type, surrogates, unknown fields, too long values.
MANGLED = st.fixed_dictionaries(
    {
        "channel": or_junk(st.sampled_from(["sms", "telegram", "fax"])),
        "address": or_junk(st.one_of(ADDRESSES, marked(ANY_TEXT), st.just("x" * 65))),
    },
    optional={
        "text": or_junk(texts(ANY_TEXT)),
        "id": or_junk(st.one_of(IDS, marked(ANY_TEXT), st.just("i" * 129))),
        "choice": or_junk(st.one_of(CHOICES, marked(ANY_TEXT))),
        "message_id": or_junk(st.one_of(MESSAGE_IDS, marked(ANY_TEXT))),
        "colour": JUNK,
    },
)
BODIES = weighted(
    (12, json_bodies(MESSAGES)),
    (3, json_bodies(MANGLED)),
    (1, json_bodies(JUNK)),
    (2, RAW_JSON_BODIES),
    (1, oversized(MAX_BODY)),
)
CONTENT_TYPES = st.sampled_from(["application/json", "application/json", "text/plain", ""])


@pytest.fixture
async def harness(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Harness]:
    settings = make_settings(database_url, simulator_per_minute=10**9)  # limits tested apart
    services = await start_services(settings, FixedClock())
    await load_demo_wards(services)
    transport = httpx.ASGITransport(app=build_app(services), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        harness = Harness(services, client, caplog)
        yield harness
        await harness.finish()
    await services.close()


@pytest.mark.timeout(FUZZ_TIMEOUT)
@FUZZ
@given(body=BODIES, content_type=CONTENT_TYPES)
async def test_simulator_api_fuzz(harness: Harness, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    await harness.send(API, body, headers)
