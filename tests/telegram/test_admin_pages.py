"""The admin pages with Telegram on, against the fake Bot API: a resident found by their
Telegram name, a group put in a ward, a poll created from the page, its live counts, closed
from the page with the result posted to the group. The public URL is https here, so the
session cookie is Secure and the client talks https."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.app import build_app
from storage.admin import Role
from storage.models import ChannelIdentity
from storage.polls import TelegramPoll
from tests.admin_support import Admin, make_user
from tests.telegram.conftest import GROUP, USER, TelegramBot
from tests.telegram.test_polls import poll_answer
from tests.telegram.test_webhook import member_update

FACILITATOR = "fac@council.example"


@pytest.fixture
async def staff(tg: TelegramBot) -> AsyncIterator[Admin]:
    await make_user(tg.services.sessions, FACILITATOR, Role.FACILITATOR, tg.clock.now())
    transport = httpx.ASGITransport(app=build_app(tg.services))
    async with httpx.AsyncClient(transport=transport, base_url="https://bot.example.org") as c:
        admin = Admin(c)
        assert (await admin.login(FACILITATOR)).status_code == 303
        yield admin


async def test_find_a_resident_by_telegram_name(tg: TelegramBot, staff: Admin) -> None:
    update = tg.text("HI")
    update["message"]["from"].update(last_name="Price", username="sam_p")
    assert (await tg.post(update)).status_code == 200
    async with tg.services.sessions() as session:
        identity = await session.get(ChannelIdentity, 1)
    assert identity is not None and identity.display_name == "Sam Price (@sam_p)"
    for typed in ("sam", "PRICE", "@sam_p", str(USER)):
        page = await staff.client.get("/admin/contacts", params={"q": typed})
        assert "1 contact found" in page.text, typed
        assert "Sam Price (@sam_p)" in page.text
    contact = await staff.client.get(f"/admin/contacts/{identity.contact_id}")
    assert "Sam Price (@sam_p)" in contact.text and "telegram" in contact.text
    assert "100%" not in contact.text  # (no poll here)
    nobody = await staff.client.get("/admin/contacts", params={"q": "Dafydd"})
    assert "No contact matches" in nobody.text


async def test_a_poll_from_the_admin_pages(tg: TelegramBot, staff: Admin) -> None:
    await tg.post(member_update(tg, "member"))
    assigned = await staff.post(f"/admin/groups/{GROUP}/ward", {"ward_code": ""})
    assert assigned.status_code == 303
    form = await staff.client.get("/admin/polls/new")
    assert str(GROUP) in form.text
    bad = await staff.post(
        "/admin/polls/new",
        {"chat_id": str(GROUP), "question": "Fix first?", "options": "Only one"},
    )
    assert bad.status_code == 400 and "Enter 2 to 12 options" in bad.text
    too_long = await staff.post(
        "/admin/polls/new",
        {"chat_id": str(GROUP), "question": "Q" * 301, "options": "A\nB"},
    )
    assert too_long.status_code == 400 and tg.fake.sent("sendPoll") == []
    response = await staff.post(
        "/admin/polls/new",
        {
            "chat_id": str(GROUP),
            "question": "What should we fix first?",
            "options": "Potholes\nStreet lights\n\nBins\n",
        },
    )
    assert response.status_code == 303, response.text
    sent = tg.fake.sent("sendPoll")[-1]
    assert sent["question"] == "What should we fix first?"
    assert [o["text"] if isinstance(o, dict) else o for o in sent["options"]] == [
        "Potholes",
        "Street lights",
        "Bins",
    ]
    location = response.headers["location"]
    poll_id = int(re.search(r"/admin/polls/(\d+)", location).group(1))  # type: ignore[union-attr]
    async with tg.services.sessions() as session:
        poll = await session.get(TelegramPoll, poll_id)
    assert poll is not None and poll.telegram_poll_id is not None
    for user, options in [(1, [0]), (2, [1]), (3, [1])]:
        await tg.post(poll_answer(tg.update_ids, poll.telegram_poll_id, user, options))
    page = await staff.client.get(location)
    assert re.search(r"Street lights</th><td[^>]*>2</td><td[^>]*>67%", page.text)
    assert "3 people have voted" in page.text and 'data-refresh="5"' in page.text

    closed = await staff.post(f"/admin/polls/{poll_id}/close")
    assert closed.status_code == 303
    assert tg.fake.sent("stopPoll")
    await tg.dispatch()
    result = tg.fake.sent("sendMessage")[-1]["text"]
    assert "What should we fix first?" in result and "Street lights" in result
    page = await staff.client.get(location)
    assert "Result" in page.text and "closed" in page.text and "Close poll" not in page.text
    again = await staff.post(f"/admin/polls/{poll_id}/close")
    assert again.status_code == 409 and "closed at" in again.text
