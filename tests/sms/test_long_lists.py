"""A 40-option question built from data, answered by SMS through the real Twilio client:
pages within CIVICBOT_SMS_MAX_SEGMENTS, MORE, numbers from any page, the budget on every page,
and what is stored."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import build_services
from channels.sms_text import segment_count
from storage.db import upgrade
from storage.models import Answer
from tests.sms.conftest import PUBLIC_URL, FakeTwilio, SmsBot, sms_settings
from tests.support import ballot_flows, load_projects


@pytest.fixture
async def ballot_bot(
    tmp_path: Path, database_url: str, fake_twilio: FakeTwilio
) -> AsyncIterator[SmsBot]:
    clock = FixedClock()
    settings = sms_settings(
        tmp_path, fake_twilio, database_url=database_url, flows_dir=ballot_flows(tmp_path / "f")
    )
    services = build_services(settings, clock=clock, actions={"load_projects": load_projects})
    await upgrade(services.db)
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
        try:
            yield SmsBot(services=services, client=client, fake=fake_twilio, clock=clock)
        finally:
            await services.close()


async def join(bot: SmsBot) -> None:
    for text in ("HI", "1", "1"):
        await bot.converse(text)


async def test_forty_options_page_by_sms_and_take_numbers_from_any_page(
    ballot_bot: SmsBot,
) -> None:
    await join(ballot_bot)
    [first] = await ballot_bot.converse("VOTE")
    assert first.startswith("Choose up to 5 projects for Riverside\n\n1 Project number 1 (1,000)")
    match = re.search(r"\n\(1/(\d+)\) Reply MORE for more options, or answer with numbers", first)
    assert match is not None and "\nBudget: 50,000\n(1/" in first
    total = int(match.group(1))
    pages = [first, *[(await ballot_bot.converse("MORE"))[0] for _ in range(total - 1)]]
    for page in pages:
        assert segment_count(page) <= 3  # CIVICBOT_SMS_MAX_SEGMENTS
    for number, page in enumerate(pages[:-1], start=1):  # the budget on every page
        assert f"Budget: 50,000\n({number}/{total}) Reply MORE" in page
    assert pages[-1].endswith(
        "40 Project number 40 (40,000)\n"
        "Reply with the numbers of your choices, e.g. 1 3 (up to 5). Budget: 50,000"
    )
    numbered = "\n".join(pages)
    for k in range(1, 41):  # every option once, numbered on across the pages
        assert numbered.count(f"\n{k} Project number {k} (") == 1

    [over] = await ballot_bot.converse("2 14 31 9")
    assert over.startswith("Those come to 56,000, which is 6,000 over the budget of 50,000.")
    [thanks] = await ballot_bot.converse("2 14 31")
    assert thanks == "Thanks, your choices are in."
    async with ballot_bot.services.sessions() as s:
        answer = (await s.execute(select(Answer).where(Answer.key == "projects"))).scalar_one()
    assert answer.value == ["p2", "p14", "p31"] and answer.contact_id is not None


async def test_welsh_pages_are_welsh(ballot_bot: SmsBot) -> None:
    for text in ("HELO", "1", "2"):
        await ballot_bot.converse(text)
    [first] = await ballot_bot.converse("PLEIDLAIS")
    assert first.startswith("Dewiswch hyd at 5 prosiect\n\n1 Prosiect rhif 1 (1,000)")
    assert "Cyllideb: 50,000\n(1/" in first and "Atebwch MWY am ragor o opsiynau" in first
    pages = [first]
    while "Atebwch MWY" in pages[-1]:
        pages += await ballot_bot.converse("MWY")
    assert "Atebwch gyda rhifau eich dewisiadau" in pages[-1]
    assert not any("Reply" in page or "Budget" in page for page in pages)
