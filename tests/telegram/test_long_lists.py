"""A 40-option question built from data, answered on Telegram through the real client against
the fake Bot API: paged keyboards with Previous/Next, ticks kept across pages, the budget
total on every page, refusals as tap answers, and what is stored."""

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
from storage.models import Answer
from tests.support import ballot_flows, load_projects
from tests.telegram.conftest import FakeBotApi, TelegramBot, telegram_settings


@pytest.fixture
async def ballot(tmp_path: Path, database_url: str, fake_api: FakeBotApi) -> AsyncIterator[
    TelegramBot
]:
    settings = telegram_settings(database_url, fake_api.url, flows_dir=ballot_flows(tmp_path))
    clock = FixedClock()
    services = build_services(settings, clock=clock, actions={"load_projects": load_projects})
    await upgrade(services.db)
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield TelegramBot(services, client, fake_api, clock)
    await services.close()


def labels(tg: TelegramBot) -> list[str]:
    return [b["text"] for row in tg.latest_keyboard()[1] for b in row]


async def tap(tg: TelegramBot, label: str) -> str:
    response = await tg.press(label)
    assert response.status_code == 200
    return str(response.json()["outcome"])


async def test_forty_options_page_and_keep_ticks_across_pages(ballot: TelegramBot) -> None:
    tg = ballot
    await tg.say("/start")
    await tg.press("Yes")
    await tg.dispatch()
    await tg.press("English")
    await tg.dispatch()
    [question] = await tg.say("VOTE")
    assert question["text"].startswith("Choose up to 5 projects for Riverside")
    shown = labels(tg)
    assert shown[:2] == ["⬜ Project number 1 (1,000)", "⬜ Project number 2 (2,000)"]
    assert shown[-3:] == ["1/5", "Next »", "Done: 0 of 50,000"]

    assert await tap(tg, "⬜ Project number 2 ") == "toggled"
    assert labels(tg)[-1] == "Done: 2,000 of 50,000"
    assert await tap(tg, "Next »") == "toggled"  # a page turn redraws the same message
    page_two = labels(tg)
    assert page_two[0] == "⬜ Project number 9 (9,000)"
    assert page_two[-4:] == ["« Previous", "2/5", "Next »", "Done: 2,000 of 50,000"]
    await tap(tg, "Next »")
    await tap(tg, "⬜ Project number 17 ")
    assert labels(tg)[-1] == "Done: 19,000 of 50,000"
    await tap(tg, "⬜ Project number 20 ")
    assert labels(tg)[-1] == "Done: 39,000 of 50,000"

    assert await tap(tg, "⬜ Project number 21 ") == "refused"  # 60,000: over the budget
    assert "10,000 over the budget of 50,000" in tg.fake.sent("answerCallbackQuery")[-1]["text"]
    assert labels(tg)[-1] == "Done: 39,000 of 50,000"  # nothing changed

    await tap(tg, "« Previous")
    await tap(tg, "« Previous")
    back = labels(tg)
    assert back[1] == "✅ Project number 2 (2,000)"  # the tick survived four page turns
    assert all(len(b["callback_data"].encode()) <= 64 for r in tg.latest_keyboard()[1] for b in r)
    assert len(tg.fake.sent("sendMessage")) == 3 + 1  # page turns and ticks send nothing new

    assert await tap(tg, "Done") == "answered"
    await tg.dispatch()
    assert tg.fake.sent("sendMessage")[-1]["text"] == "Thanks, your choices are in."
    async with tg.services.sessions() as s:
        answer = (await s.execute(select(Answer).where(Answer.key == "projects"))).scalar_one()
    assert answer.value == ["p2", "p17", "p20"]


async def test_typed_numbers_work_on_telegram_too(ballot: TelegramBot) -> None:
    tg = ballot
    await tg.say("/start")
    await tg.press("Yes")
    await tg.dispatch()
    await tg.press("Cymraeg")
    await tg.dispatch()
    [question] = await tg.say("PLEIDLAIS")
    assert question["text"].startswith("Dewiswch hyd at 5 prosiect")
    assert labels(tg)[-3:] == ["1/5", "Nesaf »", "Gorffen: 0 o 50,000"]
    [thanks] = await tg.say("2 14 31")
    assert thanks["text"] == "Diolch, mae eich dewisiadau i mewn."
