"""Groups and native polls: registration, wards, sending, answers and retractions, closing on
time (the scheduler's job) and from the CLI, and the result post."""

from __future__ import annotations

import asyncio
import getpass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bot.app import build_app
from bot.cli import app as cli
from bot.clock import FixedClock
from bot.scheduler import build_scheduler
from bot.services import build_services
from flows.polls.service import PollError, PollService
from storage.models import AuditLog
from storage.polls import TelegramPoll, TelegramPollAnswer
from tests.telegram.conftest import (
    GROUP,
    SECRET,
    TOKEN,
    USER,
    FakeBotApi,
    TelegramBot,
    polls_of,
    telegram_settings,
)
from tests.telegram.test_webhook import member_update

runner = CliRunner()


def poll_answer(tg_ids: Any, poll_id: str, user: int, options: list[int]) -> dict[str, Any]:
    return {
        "update_id": next(tg_ids),
        "poll_answer": {
            "poll_id": poll_id,
            "user": {"id": user, "is_bot": False, "first_name": f"Voter {user}"},
            "option_ids": options,
            "option_persistent_ids": [str(i) for i in options],
        },
    }


async def test_poll_answers_retractions_and_closing_on_time(tg: TelegramBot) -> None:
    await tg.post(member_update(tg, "member"))
    updates = polls_of(tg)
    poll = await updates.send(
        chat_id=str(GROUP),
        question="What should we fix first?",
        options=["Potholes", "Street lights", "Bins"],
        multiple=False,
        closes_at=tg.clock.now() + timedelta(hours=1),
        actor="test",
    )
    sent = tg.fake.sent("sendPoll")[-1]
    assert sent["is_anonymous"] is False and sent["allows_multiple_answers"] is False
    assert sent["chat_id"] == str(GROUP)
    assert poll.telegram_poll_id is not None

    ids = tg.update_ids
    for user, options in [(1, [0]), (2, [1]), (3, [1]), (2, []), (2, [0]), (3, [])]:
        response = await tg.post(poll_answer(ids, poll.telegram_poll_id, user, options))
        assert response.status_code == 200
    redelivered = poll_answer(ids, poll.telegram_poll_id, 4, [2])
    await tg.post(redelivered)
    assert (await tg.post(redelivered)).json()["outcome"] == "duplicate"
    async with tg.services.sessions() as s:
        rows = list((await s.execute(select(TelegramPollAnswer))).scalars())
    assert sorted(r.option_ids for r in rows) == [[], [0], [0], [2]]  # 3 retracted

    assert await updates.close_due() == 0  # not yet due
    assert tg.fake.sent("stopPoll") == []
    tg.clock.advance(hours=1)
    assert await updates.close_due() == 1
    async with tg.services.sessions() as s:
        closed_by = (
            await s.execute(select(AuditLog.actor).where(AuditLog.action == "telegram_poll_closed"))
        ).scalar_one()
    assert closed_by == "scheduler"
    assert tg.fake.sent("stopPoll")[-1]["message_id"] == str(poll.message_id)
    await tg.dispatch()
    post = tg.fake.sent("sendMessage")[-1]
    assert post["chat_id"] == str(GROUP)
    assert post["text"] == (  # the default language first, then Welsh
        "Poll closed: What should we fix first?\n"
        "• Potholes: 2 (67%)\n"
        "• Street lights: 0 (0%)\n"
        "• Bins: 1 (33%)\n"
        "People who voted: 3\n\n"
        "Pôl wedi cau: What should we fix first?\n"
        "• Potholes: 2 (67%)\n"
        "• Street lights: 0 (0%)\n"
        "• Bins: 1 (33%)\n"
        "Nifer a bleidleisiodd: 3"
    )
    async with tg.services.sessions() as s:
        stored = await s.get(TelegramPoll, poll.id)
    assert stored is not None and stored.closed_at == tg.clock.now()
    assert stored.result == {"counts": [2, 0, 1], "voters": 3}
    assert await updates.close_due() == 0  # closed once
    late = await tg.post(poll_answer(ids, poll.telegram_poll_id, 5, [1]))
    assert late.json()["outcome"] == "ignored: poll closed"


async def test_poll_limits_are_checked_before_sending(tg: TelegramBot) -> None:
    await tg.post(member_update(tg, "member"))
    updates = polls_of(tg)
    bad: list[tuple[str, list[str], str]] = [
        ("x" * 301, ["a", "b"], "301 characters"),
        ("Q", ["only one"], "2 to 12 options"),
        ("Q", [str(n) for n in range(13)], "2 to 12 options"),
        ("Q", ["a", "b" * 101], "101 characters"),
        ("Q", ["same", "same"], "must differ"),
    ]
    for question, options, message in bad:
        with pytest.raises(PollError, match=message):
            await updates.send(
                chat_id=str(GROUP),
                question=question,
                options=options,
                multiple=False,
                closes_at=None,
                actor="test",
            )
    with pytest.raises(PollError, match="no Telegram group"):
        await updates.send(
            chat_id="-42",
            question="Q",
            options=["a", "b"],
            multiple=False,
            closes_at=None,
            actor="test",
        )
    assert tg.fake.sent("sendPoll") == []


async def test_a_poll_telegram_refuses_leaves_nothing_stored(tg: TelegramBot) -> None:
    await tg.post(member_update(tg, "member"))
    updates = polls_of(tg)
    tg.fake.fail("sendPoll", {"ok": False, "error_code": 400, "description": "Bad Request"})
    with pytest.raises(PollError, match="did not take the poll"):
        await updates.send(
            chat_id=str(GROUP),
            question="Q",
            options=["a", "b"],
            multiple=False,
            closes_at=None,
            actor="test",
        )
    async with tg.services.sessions() as session:
        assert list((await session.execute(select(TelegramPoll))).scalars()) == []
    # and the next one is stored with the ids Telegram gave it
    poll = await updates.send(
        chat_id=str(GROUP),
        question="Q",
        options=["a", "b"],
        multiple=False,
        closes_at=None,
        actor="test",
    )
    async with tg.services.sessions() as session:
        [stored] = (await session.execute(select(TelegramPoll))).scalars()
    assert stored.id == poll.id
    assert stored.telegram_poll_id is not None and stored.message_id is not None


async def test_a_poll_telegram_may_have_posted_is_kept_and_the_reply_says_so(
    tg: TelegramBot,
) -> None:
    await tg.post(member_update(tg, "member"))
    updates = polls_of(tg)
    tg.fake.fail("sendPoll", {"ok": False, "error_code": 502, "description": "Bad Gateway"})
    with pytest.raises(PollError, match="may or may not be in the group"):
        await updates.send(
            chat_id=str(GROUP),
            question="Q",
            options=["a", "b"],
            multiple=False,
            closes_at=None,
            actor="test",
        )
    async with tg.services.sessions() as session:
        [kept] = (await session.execute(select(TelegramPoll))).scalars()
    assert kept.telegram_poll_id is None and kept.message_id is None
    assert await updates.close_due() == 0  # never picked up without Telegram's ids


async def test_scheduler_has_its_jobs(tg: TelegramBot) -> None:
    scheduler = build_scheduler(tg.services)
    assert sorted(job.id for job in scheduler.get_jobs()) == [
        "needs_open_close_due",
        "pb_rounds_open_close_due",
        "purge_coordination",
        "purge_held_delivery_reports",
        "send_scheduled_broadcasts",
        "telegram_close_due_polls",
        "tender_alerts",
        "tender_fetch",
    ]


def test_cli_groups_assign_poll_and_close(tmp_path: Path, fake_api: FakeBotApi) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    env = {
        "CIVICBOT_DATABASE_URL": db,
        "CIVICBOT_PUBLIC_URL": "https://bot.example.org",
        "CIVICBOT_TELEGRAM_TOKEN": TOKEN,
        "CIVICBOT_TELEGRAM_WEBHOOK_SECRET": SECRET,
        "CIVICBOT_TELEGRAM_API_BASE": fake_api.url,
        "CIVICBOT_TELEGRAM_CHAT_INTERVAL_SECONDS": "0",
    }

    def civicbot(*args: str) -> str:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    civicbot("db", "upgrade")
    civicbot("wards", "load", str(Path("admin/data/demo_wards.csv").resolve()))
    assert "no groups yet" in civicbot("telegram", "groups")

    async def post(updates: list[dict[str, Any]]) -> None:
        settings = telegram_settings(db, fake_api.url)
        services = build_services(settings, clock=FixedClock())
        transport = httpx.ASGITransport(app=build_app(services))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                for update in updates:
                    response = await client.post(
                        "/webhooks/telegram",
                        json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                    )
                    assert response.status_code == 200
        finally:
            await services.close()

    class Ids:
        n = 1000

        def next_id(self) -> int:
            self.n += 1
            return self.n

    ids = Ids()
    asyncio.run(post([member_update(ids, "member")]))  # type: ignore[arg-type]
    listed = civicbot("telegram", "groups")
    assert str(GROUP) in listed and "Riverside neighbours" in listed

    civicbot("telegram", "assign", str(GROUP), "DEMO-CATHAYS")
    assert "DEMO-CATHAYS" in civicbot("telegram", "groups")
    wrong = runner.invoke(cli, ["telegram", "assign", str(GROUP), "NOPE"], env=env)
    assert wrong.exit_code == 2 and "no ward with code NOPE" in wrong.output

    too_few = runner.invoke(
        cli, ["telegram", "poll", "--chat", str(GROUP), "--question", "Q", "--option", "A"], env=env
    )
    assert too_few.exit_code == 2 and "2 to 12 options" in too_few.output
    naive = runner.invoke(
        cli,
        [
            "telegram",
            "poll",
            "--chat",
            str(GROUP),
            "--question",
            "Q",
            "--option",
            "A",
            "--option",
            "B",
            "--close-at",
            "2026-03-01T18:00",
        ],
        env=env,
    )
    assert naive.exit_code == 2 and "time zone" in naive.output
    assert fake_api.sent("sendPoll") == []

    out = civicbot(
        "telegram",
        "poll",
        "--chat",
        str(GROUP),
        "--question",
        "Which first?",
        "--option",
        "Park",
        "--option",
        "Lights",
        "--multiple",
        "--close-at",
        "2030-01-01T18:00:00Z",
    )
    assert out.startswith("poll 1 sent") and "2030-01-01 18:00" in out
    sent = fake_api.sent("sendPoll")[-1]
    assert sent["is_anonymous"] is False and sent["allows_multiple_answers"] is True
    poll_id = str(fake_api.calls[-1].result["poll"]["id"])

    counter = iter(range(2000, 3000))
    asyncio.run(
        post(
            [
                poll_answer(counter, poll_id, 11, [0, 1]),
                poll_answer(counter, poll_id, 12, [1]),
                poll_answer(counter, poll_id, 13, [0]),
                poll_answer(counter, poll_id, 13, []),
            ]
        )
    )
    out = civicbot("telegram", "close-poll", "1")
    assert "2 voted" in out and "[1, 2]" in out
    assert fake_api.sent("stopPoll")

    async def dispatch() -> None:  # what `civicbot serve` does with the queued result post
        services = build_services(telegram_settings(db, fake_api.url))  # the real clock
        try:
            await services.dispatcher.run_once()
        finally:
            await services.close()

    asyncio.run(dispatch())
    post_text = fake_api.sent("sendMessage")[-1]
    assert post_text["chat_id"] == str(GROUP) and "• Lights: 2 (67%)" in post_text["text"]
    again = runner.invoke(cli, ["telegram", "close-poll", "1"], env=env)
    assert again.exit_code == 2 and "closed at" in again.output

    async def actors() -> dict[str, str]:
        services = build_services(telegram_settings(db, fake_api.url))
        try:
            async with services.sessions() as session:
                rows = (await session.execute(select(AuditLog))).scalars().all()
            return {row.action: row.actor for row in rows}
        finally:
            await services.close()

    # Issue #9, defect 4: the audit log names who really acted (here the officer at the CLI)
    who = asyncio.run(actors())
    login = f"cli:{getpass.getuser()}"
    assert who["telegram_poll_sent"] == login and who["telegram_poll_closed"] == login
    assert who["telegram_group_assigned"] == login


def test_cli_webhook_commands(tmp_path: Path, fake_api: FakeBotApi) -> None:
    env = {
        "CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "CIVICBOT_PUBLIC_URL": "https://bot.example.org",
        "CIVICBOT_TELEGRAM_TOKEN": TOKEN,
        "CIVICBOT_TELEGRAM_WEBHOOK_SECRET": SECRET,
        "CIVICBOT_TELEGRAM_API_BASE": fake_api.url,
    }
    result = runner.invoke(cli, ["telegram", "set-webhook"], env=env)
    assert result.exit_code == 0, result.output
    hook = fake_api.sent("setWebhook")[-1]
    assert hook["url"] == "https://bot.example.org/webhooks/telegram"
    assert hook["secret_token"] == SECRET
    assert set(hook["allowed_updates"]) == {
        "message",
        "callback_query",
        "my_chat_member",
        "poll_answer",
    }
    commands = fake_api.sent("setMyCommands")[-1]["commands"]
    assert {c["command"] for c in commands} >= {"start", "help", "stop"}
    result = runner.invoke(cli, ["telegram", "delete-webhook"], env=env)
    assert result.exit_code == 0 and fake_api.sent("deleteWebhook")

    no_token = {**env, "CIVICBOT_TELEGRAM_TOKEN": ""}
    unset = runner.invoke(cli, ["telegram", "set-webhook"], env=no_token)
    assert unset.exit_code == 2 and "CIVICBOT_TELEGRAM_TOKEN" in unset.output
    runner.invoke(cli, ["db", "upgrade"], env=no_token)
    listed = runner.invoke(cli, ["telegram", "groups"], env=no_token)  # stored groups: no token
    assert listed.exit_code == 0 and "no groups yet" in listed.output


async def _voted_then_forgot(tg: TelegramBot) -> tuple[PollService, TelegramPoll]:
    """USER votes B in a group poll, then asks the bot privately to FORGET them."""
    await tg.post(member_update(tg, "member"))
    updates = polls_of(tg)
    poll = await updates.send(
        chat_id=str(GROUP),
        question="Q?",
        options=["A", "B"],
        multiple=False,
        closes_at=None,
        actor="test",
    )
    assert poll.telegram_poll_id is not None and poll.id is not None
    await tg.post(poll_answer(tg.update_ids, poll.telegram_poll_id, USER, [1]))
    await tg.say("/start")  # the voter talks to the bot privately: the same identity
    await tg.say("FORGET")
    await tg.press("Yes")
    return updates, poll


async def test_forget_detaches_poll_votes_but_keeps_them_counted(tg: TelegramBot) -> None:
    updates, poll = await _voted_then_forgot(tg)
    assert poll.id is not None
    async with tg.services.sessions() as s:
        row = (await s.execute(select(TelegramPollAnswer))).scalar_one()
    assert row.contact_id is None and row.option_ids == [1]
    closed = await updates.close(poll.id, actor="test")
    assert closed.result == {"counts": [0, 1], "voters": 1}


async def test_a_changed_vote_after_forget_replaces_the_detached_one(tg: TelegramBot) -> None:
    updates, poll = await _voted_then_forgot(tg)
    assert poll.telegram_poll_id is not None and poll.id is not None
    # Telegram still shows their vote; they change it, then take it back, then vote again
    await tg.post(poll_answer(tg.update_ids, poll.telegram_poll_id, USER, [0]))
    async with tg.services.sessions() as s:
        [row] = (await s.execute(select(TelegramPollAnswer))).scalars()
    assert row.option_ids == [0] and row.contact_id is not None
    await tg.post(poll_answer(tg.update_ids, poll.telegram_poll_id, USER, []))
    await tg.post(poll_answer(tg.update_ids, poll.telegram_poll_id, USER, [1]))
    await tg.post(poll_answer(tg.update_ids, poll.telegram_poll_id, USER + 1, [1]))
    closed = await updates.close(poll.id, actor="test")
    assert closed.result == {"counts": [0, 2], "voters": 2}
    async with tg.services.sessions() as s:
        rows = list((await s.execute(select(TelegramPollAnswer))).scalars())
    assert len(rows) == 2 and all(r.voter_key is None for r in rows)  # gone once closed


async def test_app_lifespan_starts_and_stops_the_scheduler(
    tmp_path: Path, fake_api: FakeBotApi
) -> None:
    settings = telegram_settings(
        f"sqlite+aiosqlite:///{tmp_path}/life.db", fake_api.url, run_scheduler=True
    )
    services = build_services(settings, clock=FixedClock())
    app = build_app(services)
    async with app.router.lifespan_context(app):
        pass  # migrated, scheduler started; leaving stops it and closes the services
    assert fake_api.methods() == []
