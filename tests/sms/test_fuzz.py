"""Fuzzing the Twilio webhooks: generated inbound and status callback forms, nearly all signed
with the test auth token so they pass the signature check and reach the parsing behind it, on
SQLite and PostgreSQL; no 5xx, no traceback or personal data logged, and the database whole
afterwards (see tests/fuzzing.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.web.twilio_sms import MAX_BODY_BYTES, STATUSES
from tests.fuzzing import (
    FUZZ,
    FUZZ_TIMEOUT,
    MARKER,
    PHONES,
    PLAIN_TEXT,
    Harness,
    marked,
    oversized,
    texts,
    weighted,
)
from tests.sms.conftest import ACCOUNT_SID, FROM_NUMBER, SmsBot, sign

INBOUND = "/webhooks/twilio/sms"
STATUS = "/webhooks/twilio/status"
FORM_TYPE = "application/x-www-form-urlencoded"


def sid(n: int) -> str:
    return f"SM{n:032x}"


SIDS = weighted(
    (8, st.integers(1, 5000).map(sid)),
    (1, marked(PLAIN_TEXT)),
    (1, st.sampled_from(["", "SM" + "a" * 31, "SM\x00" + "a" * 31, "MM" + "F" * 32])),
)
SENDERS = weighted(
    (6, st.sampled_from(PHONES)),
    (1, st.sampled_from(PHONES).map(lambda p: "0" + p[3:7] + " " + p[7:])),  # 07700 900001
    (1, st.sampled_from(["12345", "VODAFONE", "", "+", "+0", "+99999999999999999999"])),
    (1, marked(PLAIN_TEXT)),
)
EXTRAS = st.dictionaries(marked(PLAIN_TEXT), marked(PLAIN_TEXT), max_size=3)
INBOUND_FORMS = st.builds(
    lambda extras, form: {**extras, **form},
    EXTRAS,
    st.fixed_dictionaries(
        {
            "MessageSid": SIDS,
            "From": SENDERS,
            "Body": texts(),
            "AccountSid": st.just(ACCOUNT_SID),
            "To": st.just(FROM_NUMBER),
        },
        optional={
            "SmsSid": SIDS,
            "OptOutType": st.sampled_from(["STOP", "START", "HELP", " stop ", "", MARKER]),
            "NumMedia": st.sampled_from(["0", "1", "x"]),
            "ToCountry": PLAIN_TEXT,
        },
    ),
)
STATUS_FORMS = st.builds(
    lambda extras, form: {**extras, **form},
    EXTRAS,
    st.fixed_dictionaries(
        {
            # the first sends' SIDs (their rows exist) and later ones (the report is held)
            "MessageSid": weighted((6, st.integers(1, 60).map(sid)), (1, SIDS)),
            "MessageStatus": weighted(
                (4, st.sampled_from([*STATUSES, "receiving", "received", "READ"])),
                (1, marked(PLAIN_TEXT)),
            ),
            "AccountSid": st.just(ACCOUNT_SID),
        },
        optional={
            "ErrorCode": st.one_of(
                st.sampled_from(
                    ["21610", "30003", "30005", "30007", "20429", "0", "-1", "9" * 40, "1e3"]
                ),
                marked(PLAIN_TEXT),
            ),
            "ErrorMessage": texts(),
            "SmsStatus": st.sampled_from(list(STATUSES)),
        },
    ),
)
RAW_FORMS = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"%", b"Body=%ff%fe", b"From=\xff", b"a=1&" * 300, b"&&&=&="]),
    oversized(MAX_BODY_BYTES),
)
SIGNATURES = st.sampled_from(["valid"] * 8 + ["none", "wrong"])
CONTENT_TYPES = st.sampled_from([FORM_TYPE] * 8 + [f"{FORM_TYPE}; charset=utf-8", "text/plain"])


@pytest.fixture
def sms_overrides() -> dict[str, Any]:
    return {"inbound_per_minute": 10**9}  # the flood limit is tested apart; fuzz the rest


@pytest.fixture
async def harness(sms_bot: SmsBot, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Harness]:
    for phone in PHONES:  # sent messages with SIDs 1-9, for status callbacks to find
        await sms_bot.converse("HI", sender=phone)
    harness = Harness(sms_bot.services, sms_bot.client, caplog)
    # their send attempt ids, which Twilio echoes in the status callback URL
    harness.known = [row.attempt_id for row in await sms_bot.outbox() if row.attempt_id]
    assert harness.known
    yield harness
    await harness.finish()


async def post(
    harness: Harness, path: str, form: dict[str, str] | bytes, signature: str, content_type: str
) -> None:
    headers = {"Content-Type": content_type}
    if isinstance(form, bytes):
        body = form
    else:
        body = urlencode(form).encode()
        if signature != "none":
            headers["X-Twilio-Signature"] = sign(path, form) if signature == "valid" else "x"
    await harness.send(path, body, headers)


def with_attempt(harness: Harness, attempt: int | str | None) -> str:
    """The status path, with the ``attempt`` Twilio echoes back: one of a sent message's
    attempt ids (an index into them), or anything at all."""
    if attempt is None:
        return STATUS
    if isinstance(attempt, int):
        attempt = harness.known[attempt % len(harness.known)]
    return f"{STATUS}?{urlencode({'attempt': attempt})}"


@pytest.mark.timeout(FUZZ_TIMEOUT)
@FUZZ
@given(
    form=weighted((12, INBOUND_FORMS), (1, RAW_FORMS)),
    signature=SIGNATURES,
    content_type=CONTENT_TYPES,
)
async def test_twilio_inbound_fuzz(
    harness: Harness, form: dict[str, str] | bytes, signature: str, content_type: str
) -> None:
    await post(harness, INBOUND, form, signature, content_type)


@pytest.mark.timeout(FUZZ_TIMEOUT)
@FUZZ
@given(
    form=weighted((12, STATUS_FORMS), (1, RAW_FORMS)),
    signature=SIGNATURES,
    content_type=CONTENT_TYPES,
    attempt=st.one_of(st.none(), st.integers(0, 100), marked(PLAIN_TEXT), st.just("a" * 5000)),
)
async def test_twilio_status_fuzz(
    harness: Harness,
    form: dict[str, str] | bytes,
    signature: str,
    content_type: str,
    attempt: int | str | None,
) -> None:
    await post(harness, with_attempt(harness, attempt), form, signature, content_type)
