"""FORGET by SMS leaves nothing that identifies the person or links their rows: the whole
database is dumped afterwards and searched for every identifier they ever had (issue #10,
item 1). What stays is anonymous: a counted answer, detached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import build_services
from storage.db import upgrade
from storage.models import Answer, HeldDeliveryReport
from tests.conftest import load_demo_wards
from tests.sms.conftest import ACCOUNT_SID, PUBLIC_URL, FakeTwilio, SmsBot, sms_settings
from tests.support import FEEDBACK_FLOW, dump_database

PHONE = "+447700900123"
FORMATS = (PHONE, "447700900123", "07700900123", "07700 900123", "7700900123", "900123")
OTHER = "+447700900999"


@pytest.fixture
async def bot(tmp_path: Path, database_url: str, fake_twilio: FakeTwilio) -> AsyncIterator[SmsBot]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "feedback.yaml").write_text(FEEDBACK_FLOW)
    clock = FixedClock()
    fake_twilio.now = clock.now
    settings = sms_settings(tmp_path, fake_twilio, database_url=database_url, flows_dir=flows)
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    await load_demo_wards(services)
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
        yield SmsBot(services=services, client=client, fake=fake_twilio, clock=clock)
    await services.close()


async def report(bot: SmsBot, sid: str, status: str) -> None:
    form = {"MessageSid": sid, "MessageStatus": status, "AccountSid": ACCOUNT_SID}
    assert (await bot.post("/webhooks/twilio/status", form)).status_code == 204


async def test_after_forget_nothing_identifies_or_links_the_person(bot: SmsBot) -> None:
    inbound_sids = []
    for text in ("HI", "1", "1", "CF10 1EP", "FEEDBACK", "1", "My flat 4B on Elm Street has damp"):
        sid = f"SM{len(inbound_sids) + 1:032x}"
        inbound_sids.append(sid)
        await bot.text(text, sid=sid)
        await bot.dispatch()
    for text in ("HI", "1", "1", "CF24 2DG"):  # someone else, who stays
        await bot.text(text, sender=OTHER, sid=f"SM{len(inbound_sids) + 100:032x}")
        inbound_sids.append("")
    await bot.dispatch()
    sent_sids = [m["sid"] for m in bot.fake.accepted if m["to"] == PHONE]
    for sid in sent_sids[:3]:
        await report(bot, sid, "delivered")
    before = await dump_database(bot.services.sessions)
    assert PHONE in before and "CF10 1EP" in before and "Elm Street" in before  # it was there

    for text in ("FORGET", "YES"):
        sid = f"SM{len(inbound_sids) + 200:032x}"
        inbound_sids.append(sid)
        await bot.text(text, sid=sid)
    [done] = await bot.dispatch()
    assert done.startswith("Done: your personal data has been erased")
    confirmation = bot.fake.accepted[-1]["sid"]
    # Twilio's reports keep coming after FORGET: for the confirmation, and for earlier sends.
    await report(bot, confirmation, "sent")
    await report(bot, confirmation, "delivered")
    await report(bot, sent_sids[-1], "delivered")

    after = await dump_database(bot.services.sessions)
    identifiers = [
        *FORMATS,
        *(s for s in inbound_sids[:7] + inbound_sids[-2:]),
        *sent_sids,
        confirmation,
        "CF10 1EP",  # (the council's postcode lookup holds every postcode as CF101EP)
        "Elm Street",
        "4B",
    ]
    left = [i for i in identifiers if i and i in after]
    assert not left, f"still in the database after FORGET: {left}"
    assert OTHER in after and "CF24 2DG" in after  # the other resident is untouched
    async with bot.services.sessions() as s:
        answers = (await s.execute(select(Answer))).scalars().all()
        held = (await s.execute(select(HeldDeliveryReport))).scalars().all()
    # the rating stays counted, detached; the free text (personal) is gone
    assert [(a.key, a.value, a.contact_id) for a in answers] == [("rating", "good", None)]
    assert held == []
