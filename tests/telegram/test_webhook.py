"""The Telegram webhook end to end: the real python-telegram-bot client against a fake Bot API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import build_services
from channels.telegram.client import TelegramChannel
from channels.telegram.polling import run_polling
from flows.events import MessageCreated
from storage.db import upgrade
from storage.models import Answer, Contact, InboundMessage, OutboundMessage, TelegramGroup
from tests.support import CATALOGUE
from tests.telegram.conftest import (
    BLOCKED,
    BOT_ID,
    BOT_USERNAME,
    GROUP,
    SECRET,
    TOKEN,
    TOO_MANY,
    USER,
    FakeBotApi,
    TelegramBot,
    telegram_settings,
)


async def count(tg: TelegramBot, model: type) -> int:
    async with tg.services.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


def labels(rows: list[list[dict[str, str]]]) -> list[str]:
    return [b["text"] for row in rows for b in row]


async def onboard(tg: TelegramBot) -> None:
    await tg.say("/start")
    await tg.press("Yes")
    await tg.dispatch()
    await tg.press("English")
    await tg.dispatch()


async def test_missing_or_wrong_secret_is_refused_and_nothing_is_stored(tg: TelegramBot) -> None:
    for secret in (None, "wrong", SECRET + "x", ""):
        response = await tg.post(tg.text("/start"), secret=secret)
        assert response.status_code == 403
    assert await count(tg, InboundMessage) == 0
    assert await tg.dispatch() == 0
    assert tg.fake.methods() == []


async def test_start_sends_an_inline_keyboard(tg: TelegramBot) -> None:
    sent = await tg.say("/start")
    assert len(sent) == 1
    assert sent[0]["chat_id"] == str(USER)
    assert labels(sent[0]["reply_markup"]["inline_keyboard"]) == ["Yes, I agree", "No thanks"]


async def test_redelivered_update_sends_nothing_more(tg: TelegramBot) -> None:
    update = tg.text("/start")
    first = await tg.post(update)
    again = await tg.post(update)
    assert first.json()["outcome"] == "message"
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    await tg.dispatch()
    assert len(tg.fake.sent("sendMessage")) == 1
    assert await count(tg, InboundMessage) == 1

    message_id, _ = tg.latest_keyboard()
    tap = tg.tap(message_id, "c:0")
    await tg.post(tap)
    await tg.post(tap)
    await tg.dispatch()
    assert len(tg.fake.sent("answerCallbackQuery")) == 1
    assert len(tg.fake.sent("sendMessage")) == 2  # the language question, once


async def test_onboarding_by_buttons(tg: TelegramBot) -> None:
    await tg.say("/start")
    response = await tg.press("Yes")
    assert response.json()["outcome"] == "answered"
    assert len(tg.fake.sent("answerCallbackQuery")) == 1
    await tg.dispatch()
    _, rows = tg.latest_keyboard()
    assert labels(rows) == ["English", "Cymraeg"]
    await tg.press("Cymraeg")
    await tg.dispatch()
    assert "cod post" in tg.fake.sent("sendMessage")[-1]["text"]
    assert len(tg.fake.sent("answerCallbackQuery")) == 2
    async with tg.services.sessions() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
    assert contact.consent_at is not None and contact.language == "cy"


async def test_multi_choice_toggles_with_a_budget(tg: TelegramBot) -> None:
    await onboard(tg)
    sent = await tg.say("VOTE")
    rows = sent[-1]["reply_markup"]["inline_keyboard"]
    assert labels(rows) == [
        "⬜ Park benches (4,000)",
        "⬜ Street lights (5,000)",
        "⬜ Community garden (3,000)",
        "Done: 0 of 10,000",
    ]
    assert all(len(b["callback_data"].encode()) <= 64 for row in rows for b in row)

    await tg.press("⬜ Park")
    edits = tg.fake.sent("editMessageReplyMarkup")
    assert labels(edits[-1]["reply_markup"]["inline_keyboard"])[0] == "✅ Park benches (4,000)"
    assert labels(edits[-1]["reply_markup"]["inline_keyboard"])[-1] == "Done: 4,000 of 10,000"
    await tg.press("⬜ Street")
    assert labels(tg.latest_keyboard()[1])[-1] == "Done: 9,000 of 10,000"

    refused = await tg.press("⬜ Community")  # 12,000 would be over the budget
    assert refused.json()["outcome"] == "refused"
    assert "10,000" in tg.fake.sent("answerCallbackQuery")[-1]["text"]
    assert len(tg.fake.sent("editMessageReplyMarkup")) == 2

    await tg.press("✅ Park")  # untick
    assert labels(tg.latest_keyboard()[1])[-1] == "Done: 5,000 of 10,000"
    await tg.press("⬜ Community")
    assert labels(tg.latest_keyboard()[1])[-1] == "Done: 8,000 of 10,000"
    assert tg.fake.sent("sendMessage")[-1] == sent[-1]  # toggles send no new messages

    await tg.press("Done")
    await tg.dispatch()
    assert tg.fake.sent("sendMessage")[-1]["text"] == "Thanks, your vote is in."
    async with tg.services.sessions() as s:
        answer = (await s.execute(select(Answer).where(Answer.key == "projects"))).scalar_one()
    assert answer.value == ["lights", "garden"]


async def test_a_second_quick_tap_on_the_old_keyboard_loses_no_tick(tg: TelegramBot) -> None:
    """Tap Park, then Street on the keyboard as first shown (before the redraw arrived): the
    second tap's data would untick Park, so it changes nothing and says so."""
    await onboard(tg)
    await tg.say("VOTE")
    message_id, old = tg.latest_keyboard()
    await tg.press("⬜ Park")
    street = old[1][0]["callback_data"]
    response = await tg.post(tg.tap(message_id, street))
    assert response.status_code == 200 and response.json()["outcome"] == "stale"
    assert tg.fake.sent("answerCallbackQuery")[-1]["text"].startswith(
        "That tap was on an older copy of this list"
    )
    shown = labels(tg.latest_keyboard()[1])
    assert shown[:2] == ["✅ Park benches (4,000)", "⬜ Street lights (5,000)"]
    done_on_old = await tg.post(tg.tap(message_id, old[-1][0]["callback_data"]))
    assert done_on_old.json()["outcome"] == "stale"  # Done with nothing ticked: not sent
    await tg.press("⬜ Street")
    await tg.press("Done")
    await tg.dispatch()
    async with tg.services.sessions() as s:
        answer = (await s.execute(select(Answer).where(Answer.key == "projects"))).scalar_one()
    assert answer.value == ["park", "lights"]


async def test_done_with_nothing_ticked_is_refused(tg: TelegramBot) -> None:
    await onboard(tg)
    await tg.say("VOTE")
    response = await tg.press("Done")
    assert response.json()["outcome"] == "refused"
    assert "1" in tg.fake.sent("answerCallbackQuery")[-1]["text"]


async def test_stale_button_gets_a_closed_answer_not_an_error(tg: TelegramBot) -> None:
    await tg.say("/start")
    consent_message, _ = tg.latest_keyboard()
    await tg.press("Yes")
    await tg.dispatch()
    sends = len(tg.fake.sent("sendMessage"))

    response = await tg.post(tg.tap(consent_message, "c:1"))  # the old consent keyboard
    assert response.status_code == 200 and response.json()["outcome"] == "closed"
    assert tg.fake.sent("answerCallbackQuery")[-1]["text"] == "That question has closed."
    unknown = await tg.post(tg.tap(99999, "c:0"))  # a keyboard we have no record of
    assert unknown.json()["outcome"] == "closed"
    garbage = await tg.post(tg.tap(consent_message, "zz:not-ours"))
    assert garbage.json()["outcome"] == "closed"
    await tg.dispatch()
    assert len(tg.fake.sent("sendMessage")) == sends
    async with tg.services.sessions() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
    assert contact.consent_at is not None  # the stale "No thanks" changed nothing


def member_update(tg: TelegramBot, status: str) -> dict[str, Any]:
    return {
        "update_id": tg.next_id(),
        "my_chat_member": {
            "chat": {"id": GROUP, "type": "supergroup", "title": "Riverside neighbours"},
            "from": {"id": USER, "is_bot": False, "first_name": "Sam"},
            "date": 1767600000,
            "old_chat_member": {
                "status": "left",
                "user": {"id": BOT_ID, "is_bot": True, "first_name": "civicbot"},
            },
            "new_chat_member": {
                "status": status,
                "user": {"id": BOT_ID, "is_bot": True, "first_name": "civicbot"},
            },
        },
    }


def group_text(tg: TelegramBot, text: str) -> dict[str, Any]:
    return {
        "update_id": tg.next_id(),
        "message": {
            "message_id": tg.next_id(),
            "date": 1767600000,
            "chat": {"id": GROUP, "type": "supergroup", "title": "Riverside neighbours"},
            "from": {"id": USER, "is_bot": False, "first_name": "Sam"},
            "text": text,
        },
    }


async def test_group_is_recorded_and_unaddressed_messages_are_ignored(tg: TelegramBot) -> None:
    added = await tg.post(member_update(tg, "member"))
    assert added.json()["outcome"] == "group joined"
    async with tg.services.sessions() as s:
        group = await s.get(TelegramGroup, str(GROUP))
    assert group is not None and group.title == "Riverside neighbours" and group.active

    chatter = await tg.post(group_text(tg, "Bins are late again"))
    assert chatter.json()["outcome"] == "ignored: not addressed to the bot"
    other_bot = await tg.post(group_text(tg, "/start@some_other_bot"))
    assert other_bot.json()["outcome"] == "ignored: not addressed to the bot"
    assert await tg.dispatch() == 0

    await tg.post(group_text(tg, f"/start@{BOT_USERNAME}"))
    await tg.dispatch()
    hint = tg.fake.sent("sendMessage")[-1]
    assert hint["chat_id"] == str(GROUP) and f"t.me/{BOT_USERNAME}" in hint["text"]
    async with tg.services.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Contact))).scalar_one() == 0

    await tg.post(member_update(tg, "left"))
    async with tg.services.sessions() as s:
        group = await s.get(TelegramGroup, str(GROUP))
    assert group is not None and not group.active


async def test_rate_limited_send_waits_and_retries(tg: TelegramBot) -> None:
    tg.fake.fail("sendMessage", TOO_MANY)
    await tg.post(tg.text("/start"))
    await tg.dispatch()
    async with tg.services.sessions() as s:
        row = (await s.execute(select(OutboundMessage))).scalar_one()
    assert row.status == "queued" and "rate limit" in (row.error or "")
    assert (row.next_attempt_at - tg.clock.now()).total_seconds() >= 1  # retry_after honoured
    assert await tg.dispatch() == 0  # not due yet
    tg.clock.advance(seconds=2)
    await tg.dispatch()
    async with tg.services.sessions() as s:
        row = (await s.execute(select(OutboundMessage))).scalar_one()
    assert row.status == "sent" and row.attempts == 2
    assert len(tg.fake.sent("sendMessage")) == 2


async def test_blocked_by_the_user_opts_the_contact_out(tg: TelegramBot) -> None:
    tg.fake.fail("sendMessage", BLOCKED)
    await tg.post(tg.text("/start"))
    await tg.dispatch()
    async with tg.services.sessions() as s:
        row = (await s.execute(select(OutboundMessage))).scalar_one()
        contact = (await s.execute(select(Contact))).scalar_one()
    assert row.status == "failed" and "blocked" in (row.error or "")
    assert contact.opted_out_at is not None
    await tg.post(tg.text("hello"))  # an opted-out contact hears nothing until START
    assert await tg.dispatch() == 0


async def test_bad_request_is_permanent(tg: TelegramBot) -> None:
    not_found = {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
    tg.fake.fail("sendMessage", not_found)
    await tg.post(tg.text("/start"))
    await tg.dispatch()
    async with tg.services.sessions() as s:
        row = (await s.execute(select(OutboundMessage))).scalar_one()
        contact = (await s.execute(select(Contact))).scalar_one()
    assert row.status == "failed" and row.attempts == 1 and contact.opted_out_at is None


async def test_malformed_update_is_a_400_not_a_500(tg: TelegramBot) -> None:
    response = await tg.client.post(
        "/webhooks/telegram",
        content=b"{not json",
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    assert response.status_code == 400
    response = await tg.post({"no_update_id": True})
    assert response.status_code == 400


async def test_polling_mode_feeds_the_same_pipeline(tg: TelegramBot) -> None:
    import asyncio

    tg.fake.updates.append(tg.text("/start"))
    stop = asyncio.Event()
    router = tg.services.telegram
    assert router is not None
    original = router.channel.get_updates

    async def get_once(offset: int | None, timeout: int = 30) -> list[dict[str, Any]]:
        batch = await original(offset, 0)
        if not batch:
            stop.set()
        return batch

    async def handle(data: dict[str, Any]) -> None:
        assert router is not None
        await (await router.handle(data)).run_follow_ups()

    router.channel.get_updates = get_once  # type: ignore[method-assign]
    await run_polling(router.channel, handle, stop)
    # the commands in English, then in Welsh (for Telegram set to Welsh), then polling
    methods = ["deleteWebhook", "setMyCommands", "setMyCommands", "getUpdates"]
    assert tg.fake.methods()[:4] == methods
    await tg.dispatch()
    assert "reply_markup" in tg.fake.sent("sendMessage")[-1]


async def test_polling_stops_promptly_mid_long_poll(tg: TelegramBot) -> None:
    import asyncio

    stop = asyncio.Event()
    router = tg.services.telegram
    assert router is not None
    waiting = asyncio.Event()

    async def hang(offset: int | None, timeout: int = 30) -> list[dict[str, Any]]:
        waiting.set()
        await asyncio.Event().wait()  # a long poll that never answers
        return []

    async def handle(data: dict[str, Any]) -> None:
        raise AssertionError("no update was fetched")

    router.channel.get_updates = hang  # type: ignore[method-assign]
    task = asyncio.create_task(run_polling(router.channel, handle, stop))
    await waiting.wait()
    stop.set()
    await asyncio.wait_for(task, timeout=5)


async def test_a_failure_while_handling_is_a_503_and_the_redelivery_counts(
    tmp_path: Path, database_url: str, fake_api: FakeBotApi, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #9, defect 2: any ValueError while handling was a 400, and Telegram does not send
    a 4xx again, so a processing bug lost the message. Now only an unparseable body is 400."""

    class Flaky(TelegramChannel):
        failures = 1

        def render(self, message: MessageCreated, language: str = "en") -> dict[str, Any]:
            if self.failures:
                self.failures -= 1
                raise ValueError(f"a bug while rendering {message.text!r}")
            return super().render(message, language)

    flaky = Flaky(token=TOKEN, catalogue=CATALOGUE, api_base=fake_api.url)
    settings = telegram_settings(database_url, fake_api.url)
    services = build_services(settings, clock=FixedClock(), channels={"telegram": flaky})
    await upgrade(services.db)
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        bot = TelegramBot(services, client, fake_api, FixedClock())
        update = bot.text("/start")
        failed = await bot.post(update)
        assert failed.status_code == 503
        # logged with where it failed, but not its message (it quotes what was being sent)
        assert "update 1 failed: ValueError" in caplog.text and "Traceback" in caplog.text
        assert "Welcome to civicbot" not in caplog.text
        assert await count(bot, InboundMessage) == 0  # nothing of it was kept
        again = await bot.post(update)  # Telegram delivers it again
        assert again.status_code == 200 and again.json()["outcome"] == "message"
        await bot.dispatch()
        assert len(fake_api.sent("sendMessage")) == 1
    await services.close()


async def test_polling_retries_a_failed_update_instead_of_skipping_it(tg: TelegramBot) -> None:
    """Issue #9, defect 3: in polling mode an update was skipped after any exception."""
    import asyncio

    tg.fake.updates.append(tg.text("/start"))
    router = tg.services.telegram
    assert router is not None
    stop = asyncio.Event()
    attempts: list[int] = []
    original = router.channel.get_updates

    async def get_once(offset: int | None, timeout: int = 30) -> list[dict[str, Any]]:
        batch = await original(offset, 0)
        if not batch and attempts:
            stop.set()
        return batch

    async def handle(data: dict[str, Any]) -> None:
        assert router is not None
        attempts.append(data["update_id"])
        if len(attempts) < 3:  # the database is briefly down
            raise ConnectionError("database unavailable")
        await (await router.handle(data)).run_follow_ups()

    router.channel.get_updates = get_once  # type: ignore[method-assign]
    await run_polling(router.channel, handle, stop, first_wait=0.01)
    assert len(attempts) == 3 and len(set(attempts)) == 1
    await tg.dispatch()
    assert len(tg.fake.sent("sendMessage")) == 1  # handled once it worked, and only once
