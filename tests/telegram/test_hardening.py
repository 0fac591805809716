"""Hostile or malformed webhook bodies (400, nothing stored) and FORGET reaching every inbound row
that holds a Telegram user's data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.web.telegram import MAX_BODY, SECRET_HEADER
from storage.models import Contact, InboundMessage, TelegramGroup
from storage.polls import TelegramPollAnswer
from tests.telegram.conftest import BOT_ID, GROUP, SECRET, USER, TelegramBot, polls_of
from tests.telegram.test_polls import poll_answer
from tests.telegram.test_webhook import group_text, member_update

SIGNED = {SECRET_HEADER: SECRET, "Content-Type": "application/json"}
CHAT = {"id": USER, "type": "private", "first_name": "Sam"}
FROM = {"id": USER, "is_bot": False, "first_name": "Sam"}


def message(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"message_id": 7, "date": 1767600000, "chat": CHAT, "from": FROM}
    body.update(fields)
    return {"update_id": 1, "message": body}


def callback(**fields: Any) -> dict[str, Any]:
    query: dict[str, Any] = {
        "id": "cq-1",
        "from": FROM,
        "chat_instance": "ci-1",
        "data": "c:0",
        "message": {"message_id": 7, "date": 1767600000, "chat": CHAT, "text": "q"},
    }
    query.update(fields)
    return {"update_id": 1, "callback_query": query}


def answer(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "poll_id": "poll-1",
        "user": FROM,
        "option_ids": [0],
        "option_persistent_ids": ["0"],
    }
    body.update(fields)
    return {"update_id": 1, "poll_answer": body}


def group(**fields: Any) -> dict[str, Any]:
    chat: dict[str, Any] = {"id": GROUP, "type": "supergroup", "title": "Riverside"}
    chat.update(fields)
    return {
        "update_id": 1,
        "message": {"message_id": 7, "date": 1767600000, "chat": chat, "from": FROM, "text": "hi"},
    }


def membership(**fields: Any) -> dict[str, Any]:
    """A ``my_chat_member`` update; a field given as None is left out."""
    change: dict[str, Any] = {
        "chat": {"id": GROUP, "type": "supergroup", "title": "Riverside"},
        "from": FROM,
        "date": 1767600000,
        "old_chat_member": {"status": "left", "user": {**FROM, "id": BOT_ID}},
        "new_chat_member": {"status": "member", "user": {**FROM, "id": BOT_ID}},
    }
    change.update(fields)
    return {"update_id": 1, "my_chat_member": {k: v for k, v in change.items() if v is not None}}


LONG_ID = int("1" * 65)  # 65 digits: longer than an address may be

MALFORMED: dict[str, Any] = {
    "message is a string": {"update_id": 1, "message": "x"},
    "message is a list": {"update_id": 1, "message": ["x"]},
    "callback_query is a number": {"update_id": 1, "callback_query": 5},
    "chat is a string": message(chat="x", text="hi"),
    "chat missing": {"update_id": 1, "message": {"message_id": 7, "date": 1, "text": "hi"}},
    "text is a number": message(text=123),
    "text is a list": message(text=["a"]),
    "text is an object": message(text={"a": 1}),
    "caption is a number": message(caption=5),
    "update_id is true": {"update_id": True, "message": message(text="hi")["message"]},
    "update_id is a string": {"update_id": "1", "message": message(text="hi")["message"]},
    "update_id over 128 characters": {
        "update_id": int("9" * 129),
        "message": message(text="hi")["message"],
    },
    "chat id over 64 characters": message(chat={**CHAT, "id": LONG_ID}, text="hi"),
    "chat id is a long string": message(chat={**CHAT, "id": "x" * 65}, text="hi"),
    "chat id is a string": message(chat={**CHAT, "id": "5550001"}, text="hi"),
    "callback data is a number": callback(data=123),
    "callback data is a list": callback(data=["a"]),
    "callback id is a number": callback(id=5),
    "callback chat id over 64 characters": callback(
        message={"message_id": 7, "date": 1, "chat": {**CHAT, "id": LONG_ID}, "text": "q"}
    ),
    "callback message_id is a string": callback(
        message={"message_id": "7", "date": 1, "chat": CHAT, "text": "q"}
    ),
    "poll user id over 64 characters": answer(user={**FROM, "id": LONG_ID}),
    "poll id is a number": answer(poll_id=5),
    "poll id over 64 characters": answer(poll_id="p" * 65),
    # PostgreSQL refuses NUL in text: ids and codes with control characters are not Telegram's
    "poll id with a NUL": answer(poll_id="p\x00"),
    "callback data with a NUL": callback(data="v:a\x00"),
    "callback id with a newline": callback(id="4\n2"),
    "poll option ids are strings": answer(option_ids=["a"]),
    "poll option ids are a string": answer(option_ids="ab"),
    "poll option id is huge": answer(option_ids=[10**30]),
    "group chat id over 32 characters": group(id=-int("1" * 40)),
    "group title is a number": group(title=5),
    "membership without new_chat_member": membership(new_chat_member=None),
    "membership in a private chat without new_chat_member": membership(
        chat=CHAT, new_chat_member=None
    ),
    "membership chat title is a list": {
        "update_id": 1,
        "my_chat_member": {
            "chat": {"id": GROUP, "type": "supergroup", "title": ["x"]},
            "from": FROM,
            "date": 1767600000,
            "old_chat_member": {"status": "left", "user": {**FROM, "id": BOT_ID}},
            "new_chat_member": {"status": "member", "user": {**FROM, "id": BOT_ID}},
        },
    },
}


async def count(tg: TelegramBot, model: type) -> int:
    async with tg.services.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_update_is_400_and_nothing_is_stored(
    tg: TelegramBot, body: dict[str, Any]
) -> None:
    response = await tg.post(body)
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "not a Telegram update"}
    assert await count(tg, InboundMessage) == 0
    assert await count(tg, Contact) == 0
    assert await count(tg, TelegramGroup) == 0
    assert await tg.dispatch() == 0


async def test_well_formed_neighbours_of_the_malformed_bodies_still_pass(tg: TelegramBot) -> None:
    """The checks are not too strict: the same shapes with proper values are accepted."""
    ok = [
        message(text="hi"),
        {**message(caption="a photo"), "update_id": 2},
        {**callback(), "update_id": 3},
        {**answer(), "update_id": 4},
        {**group(), "update_id": 5},
        {**membership(), "update_id": 6},
    ]
    for body in ok:
        response = await tg.post(body)
        assert response.status_code == 200, (body, response.text)
    assert await count(tg, InboundMessage) == len(ok)
    assert await count(tg, TelegramGroup) == 1


async def test_deeply_nested_json_is_a_400(tg: TelegramBot) -> None:
    """100,000 levels: Python's JSON parser gives up with RecursionError, not a 500."""
    for body in (b"[" * 100_000, b'{"a":' * 100_000, b'{"update_id": 1, "message": ' * 20_000):
        response = await tg.client.post("/webhooks/telegram", content=body, headers=SIGNED)
        assert response.status_code == 400, response.text
    assert await count(tg, InboundMessage) == 0


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


async def test_a_stored_update_is_bounded_and_clean(tg: TelegramBot) -> None:
    """A private message replying to a chain 400 messages deep was stored whole: a value so
    deep the JSON decoder could not read it back in a deeper call stack; and its NULs went
    to PostgreSQL as they came."""
    chained: dict[str, Any] = {"message_id": 1, "date": 1, "chat": CHAT, "text": "first"}
    for k in range(2, 400):
        chained = {"message_id": k, "date": 1, "chat": CHAT, "reply_to_message": chained}
    update = message(text="hi", reply_to_message=chained)
    update["message"]["from"] = {**FROM, "first_name": "Sam\x00"}
    response = await tg.post(update)
    assert response.status_code == 200, response.text
    [row] = await inbound_rows(tg)
    assert row.raw is not None and depth(row.raw) <= 12
    assert row.raw["message"]["from"]["first_name"] == "Sam"
    assert "\\u0000" not in json.dumps(row.raw)


async def test_an_oversized_update_is_refused_while_it_is_read(tg: TelegramBot) -> None:
    """A 100 MB body without a Content-Length is cut off just past the 1 MB limit, not read."""
    pulled = 0

    async def hundred_megabytes() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(1600):
            pulled += 1
            yield b" " * 65536

    response = await tg.client.post(
        "/webhooks/telegram", content=hundred_megabytes(), headers=SIGNED
    )
    assert response.status_code == 413
    assert pulled * 65536 <= MAX_BODY + 65536
    declared = await tg.client.post(
        "/webhooks/telegram", content=b" " * (MAX_BODY + 1), headers=SIGNED
    )
    assert declared.status_code == 413
    assert await count(tg, InboundMessage) == 0


async def inbound_rows(tg: TelegramBot) -> list[InboundMessage]:
    async with tg.services.sessions() as s:
        return list((await s.execute(select(InboundMessage))).scalars())


async def test_forget_reaches_poll_answers_stale_taps_and_group_messages(
    tg: TelegramBot,
) -> None:
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
    assert poll.telegram_poll_id is not None
    # Before they ever talk to the bot: group chatter and an answer to a poll we don't know.
    await tg.post(group_text(tg, "Sam here, my flat is 4B"))
    unknown = await tg.post(poll_answer(tg.update_ids, "poll-unknown", USER, [0]))
    assert unknown.json()["outcome"] == "ignored: unknown poll"
    stranger_tap = await tg.post(tg.tap(99999, "c:0"))
    assert stranger_tap.json()["outcome"] == "closed"

    voted = await tg.post(poll_answer(tg.update_ids, poll.telegram_poll_id, USER, [1]))
    assert voted.json()["outcome"] == "poll answered"
    await tg.say("/start")
    consent_message, _ = tg.latest_keyboard()
    await tg.press("Yes")
    await tg.dispatch()
    stale = await tg.post(tg.tap(consent_message, "c:1"))
    assert stale.json()["outcome"] == "closed"

    async with tg.services.sessions() as s:
        contact_id = (await s.execute(select(Contact.id))).scalar_one()
    rows = await inbound_rows(tg)
    personal = [r for r in rows if r.address == str(USER)]
    assert len(personal) >= 4  # the vote, /start, the consent tap and the stale tap
    assert all(r.contact_id == contact_id for r in personal)
    for row in rows:  # nothing the pipeline did not handle keeps the update itself
        if row.contact_id is None:
            assert row.raw is not None and set(row.raw) == {"update_id", "kind"}
            assert row.text == ""

    await tg.say("FORGET")
    await tg.press("Yes")
    await tg.dispatch()

    rows = await inbound_rows(tg)
    assert rows
    for row in rows:
        stored = json.dumps(row.raw)
        assert row.address != str(USER)
        assert str(USER) not in stored
        assert "Sam" not in stored and "Voter" not in stored and "4B" not in stored
        assert row.text in (None, "")
        assert row.contact_id is None
    async with tg.services.sessions() as s:
        vote = (await s.execute(select(TelegramPollAnswer))).scalar_one()
    assert vote.contact_id is None and vote.option_ids == [1]  # still counted
