"""Inbound SMS webhooks: signatures, dedupe, E.164 addresses, and sends through the REST API."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from bot.clock import FixedClock
from bot.services import build_services
from bot.web.twilio_sms import MAX_BODY_BYTES
from flows.events import MessageCreated
from storage.models import (
    Contact,
    InboundMessage,
    OutboundMessage,
    OutboxStatus,
    PostcodeWard,
    Ward,
)
from tests.sms.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    PHONE,
    PUBLIC_URL,
    FakeTwilio,
    SmsBot,
    sign,
    sms_settings,
)
from tests.support import sms

INBOUND = "/webhooks/twilio/sms"


async def test_signed_inbound_sms_is_answered_by_a_rest_send(sms_bot: SmsBot) -> None:
    response = await sms_bot.text("JOIN")
    assert response.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert sms_bot.fake.messages == []  # never inline: the reply waits in the outbox

    await sms_bot.dispatch()

    [sent] = sms_bot.fake.messages
    assert sent.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert sent.auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert sent.form["To"] == PHONE
    assert sent.form["From"] == FROM_NUMBER
    assert sent.form["Body"].startswith("Welcome to civicbot")
    assert sent.form["Body"].endswith("Reply 1 or 2")
    [row] = await sms_bot.outbox()
    # the callback names the send attempt, so a report can record a send whose reply was lost
    assert sent.form["StatusCallback"] == (
        f"{PUBLIC_URL}/webhooks/twilio/status?attempt={row.attempt_id}"
    )
    assert row.channel == "sms"
    assert row.status == OutboxStatus.SENT
    assert row.provider_id is not None and row.provider_id.startswith("SM")
    assert 153 < len(sent.form["Body"]) <= 306  # GSM-7: two concatenated segments
    assert row.segments == 2


async def test_messaging_service_is_used_instead_of_a_from_number(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    settings = sms_settings(
        tmp_path, fake_twilio, twilio_from_number=None, twilio_messaging_service_sid="MG" + "2" * 32
    )
    services = build_services(settings, clock=FixedClock())
    try:
        await services.channels["sms"].send(PHONE, {"text": "hello"})
    finally:
        await services.close()
    [sent] = fake_twilio.messages
    assert sent.form["MessagingServiceSid"] == "MG" + "2" * 32
    assert "From" not in sent.form


def test_sms_needs_a_sender(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    with pytest.raises(ValidationError, match="CIVICBOT_TWILIO_FROM_NUMBER"):
        sms_settings(tmp_path, fake_twilio, twilio_from_number=None)


async def test_welsh_text_reaches_twilio_intact(sms_bot: SmsBot) -> None:
    content = sms(MessageCreated("Croeso i’r ŵyl yn y dŷ – dewch draw!"), "cy")
    assert content["text"] == "Croeso i'r ŵyl yn y dŷ - dewch draw!"  # quotes, dash cleaned
    await sms_bot.services.channels["sms"].send(PHONE, content)
    [sent] = sms_bot.fake.messages
    assert sent.form["Body"] == content["text"]  # UTF-8 to the API; Twilio sends it as UCS-2


async def test_missing_signature_is_refused_and_nothing_stored(sms_bot: SmsBot) -> None:
    response = await sms_bot.post(INBOUND, sms_bot.inbound_form("JOIN"), signature=None)
    assert response.status_code == 403
    assert await sms_bot.count(InboundMessage) == 0
    assert await sms_bot.count(OutboundMessage) == 0


async def test_forged_signatures_are_refused(sms_bot: SmsBot) -> None:
    form = sms_bot.inbound_form("JOIN")
    wrong_key = sign(INBOUND, form, token="not-our-token")
    tampered = {**form, "Body": "STOP"}  # signed for another body
    other_url = {"X-Twilio-Signature": sign("/webhooks/twilio/status", form)}
    for candidate, headers in (
        (form, {"X-Twilio-Signature": wrong_key}),
        (tampered, {"X-Twilio-Signature": sign(INBOUND, form)}),
        (form, other_url),
        (form, {"X-Twilio-Signature": ""}),
    ):
        response = await sms_bot.post(INBOUND, candidate, signature=None, headers=headers)
        assert response.status_code == 403
    assert await sms_bot.count(InboundMessage) == 0


async def test_signature_is_checked_against_the_public_url_behind_a_proxy(
    sms_bot: SmsBot,
) -> None:
    """The proxy forwards to http://10.0.0.5:8000; Twilio signed the public https URL."""
    form = sms_bot.inbound_form("JOIN")
    response = await sms_bot.client.post(
        "http://10.0.0.5:8000" + INBOUND,
        content=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sign(INBOUND, form),
        },
    )
    assert response.status_code == 200
    assert await sms_bot.count(InboundMessage) == 1


async def test_redelivered_message_sid_sends_nothing_more(sms_bot: SmsBot) -> None:
    await sms_bot.text("JOIN", sid="SM" + "a" * 32)
    assert len(await sms_bot.dispatch()) == 1
    await sms_bot.text("JOIN", sid="SM" + "a" * 32)  # Twilio retried: same MessageSid
    assert await sms_bot.dispatch() == []
    assert await sms_bot.count(InboundMessage) == 1
    assert await sms_bot.count(OutboundMessage) == 1


async def test_sender_is_normalised_to_e164(sms_bot: SmsBot) -> None:
    await sms_bot.text("JOIN", sender="07700 900123")
    await sms_bot.text("1", sender="+44 7700 900123")  # the same phone, written differently
    bodies = await sms_bot.dispatch()
    assert bodies[1].startswith("Which language")
    assert {m.form["To"] for m in sms_bot.fake.messages} == {PHONE}


async def test_sender_that_is_not_a_phone_number_is_acknowledged_and_ignored(
    sms_bot: SmsBot,
) -> None:
    await sms_bot.text("hello", sender="VODAFONE")
    assert await sms_bot.count(InboundMessage) == 0


@pytest.mark.parametrize("path", [INBOUND, "/webhooks/twilio/status"])
async def test_both_sms_webhooks_refuse_an_oversized_body_while_reading_it(
    sms_bot: SmsBot, path: str
) -> None:
    """413 for a body past the limit, whether its length is declared or it just keeps
    coming (then reading stops soon after the limit, not at the end); nothing is stored."""
    pulled = 0

    async def hundred_megabytes() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b"Body="
        for _ in range(1600):
            pulled += 1
            yield b"x" * 65536

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    streamed = await sms_bot.client.post(path, content=hundred_megabytes(), headers=form)
    assert streamed.status_code == 413, streamed.text
    assert pulled * 65536 <= MAX_BODY_BYTES + 65536
    declared = await sms_bot.client.post(path, content=b"x" * (MAX_BODY_BYTES + 1), headers=form)
    assert declared.status_code == 413
    assert await sms_bot.count(InboundMessage) == 0
    assert await sms_bot.count(OutboundMessage) == 0


async def test_malformed_webhooks_get_4xx_not_500(sms_bot: SmsBot) -> None:
    signed_but_empty = await sms_bot.post(INBOUND, {"Body": "hi"})
    assert signed_but_empty.status_code == 400
    json_body = await sms_bot.client.post(INBOUND, json={"Body": "hi"})
    assert json_body.status_code == 415
    huge = await sms_bot.client.post(
        INBOUND,
        content=b"Body=" + b"x" * 100_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413
    not_utf8 = await sms_bot.client.post(
        INBOUND,
        content=b"Body=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert not_utf8.status_code == 400
    for sid in ("SM\x00" + "a" * 31, "SM" + "a" * 31, "SMzz" + "a" * 30, "SM" + "a" * 33):
        form = sms_bot.inbound_form("hi", sid=sid)
        assert (await sms_bot.post(INBOUND, form)).status_code == 400, sid  # not a Twilio SID
        assert (await sms_bot.status(sid, "delivered")).status_code == 400, sid
    assert await sms_bot.count(InboundMessage) == 0
    # a NUL in the text itself is dropped, not refused (PostgreSQL cannot store it)
    assert await sms_bot.converse("HI\x00") != []
    async with sms_bot.services.sessions() as session:
        [row] = (await session.execute(select(InboundMessage))).scalars()
    assert row.text == "HI"


@pytest.mark.parametrize("path", [INBOUND + "/", "/webhooks/twilio/status/"])
async def test_no_redirect_is_built_from_the_host_header(sms_bot: SmsBot, path: str) -> None:
    """A trailing slash used to get a 307 to http://<Host header>/..., an open redirect."""
    form = sms_bot.inbound_form("HI")
    response = await sms_bot.post(path, form, headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert await sms_bot.count(InboundMessage) == 0


async def test_a_flood_from_one_number_cannot_make_us_send_a_flood(
    sms_bot: SmsBot, caplog: pytest.LogCaptureFixture
) -> None:
    """200 signed HELPs from one number queued 200 paid replies. Past the limit (20 a
    minute) messages are dropped: nothing stored or sent, Twilio answered as usual so it
    does not send them again, and one warning that does not name the number."""
    limit = sms_bot.services.settings.inbound_per_minute
    for _ in range(limit):
        await sms_bot.text("HELP")
    queued = await sms_bot.count(OutboundMessage)
    for _ in range(200 - limit):
        await sms_bot.text("HELP")  # 200 and empty TwiML, as for every message
    assert await sms_bot.count(InboundMessage) == limit
    assert await sms_bot.count(OutboundMessage) == queued
    assert len(await sms_bot.dispatch()) == queued
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "over 20 messages a minute" in warnings[0].getMessage()
    assert PHONE.removeprefix("+44") not in caplog.text and "900123" not in caplog.text

    await sms_bot.text("HI", sender="+447700900456")  # other numbers are not held back
    assert await sms_bot.count(InboundMessage) == limit + 1
    sms_bot.clock.advance(seconds=3)  # one message's worth of the minute
    await sms_bot.text("HELP")
    await sms_bot.text("HELP")
    assert await sms_bot.count(InboundMessage) == limit + 2


async def test_stop_is_never_dropped_by_the_flood_limit(sms_bot: SmsBot) -> None:
    for _ in range(sms_bot.services.settings.inbound_per_minute + 5):
        await sms_bot.text("HI")
    before = await sms_bot.count(InboundMessage)
    await sms_bot.text("Stop")
    assert await sms_bot.count(InboundMessage) == before + 1
    async with sms_bot.services.sessions() as session:
        contact = (await session.execute(select(Contact))).scalar_one()
    assert contact.opted_out_at is not None
    # Twilio's own opt-out handling, whatever the words, counts as STOP too
    form = sms_bot.inbound_form("please no more")
    form["OptOutType"] = "STOP"
    assert (await sms_bot.post(INBOUND, form)).status_code == 200
    assert await sms_bot.count(InboundMessage) == before + 2


async def test_control_characters_in_any_field_are_not_stored(sms_bot: SmsBot) -> None:
    form = sms_bot.inbound_form("HI\x00")
    form["ToCity"] = "Car\x00diff\x1b"
    form["Extra\x00Field"] = "x"
    assert (await sms_bot.post(INBOUND, form)).status_code == 200
    async with sms_bot.services.sessions() as session:
        [row] = (await session.execute(select(InboundMessage))).scalars()
    assert row.raw is not None and row.raw["ToCity"] == "Cardiff" and "ExtraField" in row.raw
    assert "\\u0000" not in json.dumps(row.raw)


async def test_full_onboarding_conversation_by_sms(sms_bot: SmsBot) -> None:
    async with sms_bot.services.sessions() as session, session.begin():
        session.add(Ward(code="W06000015", name="Cathays", name_cy="Cathays"))
        await session.flush()
        session.add(PostcodeWard(postcode="CF101EP", ward_code="W06000015"))

    [welcome] = await sms_bot.converse("Hi")
    assert welcome.startswith("Welcome to civicbot") and "1 Yes, I agree\n2 No thanks" in welcome
    [language] = await sms_bot.converse("1")
    assert language.startswith("Which language") and language.endswith("Reply 1 or 2")
    [postcode] = await sms_bot.converse("English")
    assert postcode.startswith("What's your postcode?")
    [nonsense] = await sms_bot.converse("not a postcode")
    assert nonsense.startswith("Sorry, that doesn't look like a UK postcode")
    ward, menu = await sms_bot.converse("cf10 1ep")
    assert ward == "Thanks. CF10 1EP is in Cathays ward."
    assert menu.startswith("What would you like to do?") and menu.endswith("Reply 1-6")

    async with sms_bot.services.sessions() as session:
        contact = (await session.execute(select(Contact))).scalar_one()
    assert contact.consent_at is not None
    assert (contact.language, contact.postcode) == ("en", "CF10 1EP")
    assert contact.ward_code == "W06000015"
    assert {m.form["To"] for m in sms_bot.fake.messages} == {PHONE}


async def test_stop_silences_the_number_until_start(sms_bot: SmsBot) -> None:
    await sms_bot.converse("JOIN")
    [confirm] = await sms_bot.converse("STOP")
    assert confirm.startswith("You've unsubscribed")

    for text in ("hello", "1", "MENU", "HELP", "MORE"):
        assert await sms_bot.converse(text) == []

    replies = await sms_bot.converse("START")
    assert replies[0].startswith("Welcome back!")
    assert replies[1].startswith("Welcome to civicbot")  # not consented yet: onboarding again


async def test_twilio_opt_out_type_is_honoured(sms_bot: SmsBot) -> None:
    """Twilio's Advanced Opt-Out recognised a custom keyword as STOP; so do we."""
    await sms_bot.converse("JOIN")
    form = {**sms_bot.inbound_form("ARRET"), "OptOutType": "STOP"}
    assert (await sms_bot.post(INBOUND, form)).status_code == 200
    [confirm] = await sms_bot.dispatch()
    assert confirm.startswith("You've unsubscribed")
    async with sms_bot.services.sessions() as session:
        contact = (await session.execute(select(Contact))).scalar_one()
    assert contact.opted_out_at is not None
    assert await sms_bot.converse("hello") == []
    form = {**sms_bot.inbound_form("Yes please"), "OptOutType": "START"}
    assert (await sms_bot.post(INBOUND, form)).status_code == 200
    assert (await sms_bot.dispatch())[0].startswith("Welcome back!")
