"""Fuzzing the Telegram webhook: generated updates of every kind (messages, taps, membership
changes, poll answers, kinds we do not use), well formed and mangled (wrong types, missing
fields, NUL, invalid UTF-8, deep nesting, oversized), nearly all with the right secret, on
SQLite and PostgreSQL; no 5xx, no traceback or personal data logged, and the database whole
afterwards (see tests/fuzzing.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import build_services
from bot.web.telegram import MAX_BODY, SECRET_HEADER
from storage.db import upgrade
from tests.fuzzing import (
    ANY_TEXT,
    FUZZ,
    FUZZ_TIMEOUT,
    JUNK,
    PLAIN_TEXT,
    RAW_JSON_BODIES,
    TELEGRAM_GROUPS,
    TELEGRAM_USERS,
    Harness,
    json_bodies,
    marked,
    or_junk,
    oversized,
    texts,
    weighted,
)
from tests.telegram.conftest import BOT_ID, BUDGET_FLOW, SECRET, FakeBotApi, telegram_settings

WEBHOOK = "/webhooks/telegram"
POLL_IDS = tuple(f"poll-{n}" for n in range(100, 110))
BOT = {"id": BOT_ID, "is_bot": True, "first_name": "civicbot"}
Wrap = Callable[[st.SearchStrategy[Any]], st.SearchStrategy[Any]]


def updates(wrap: Wrap) -> st.SearchStrategy[dict[str, Any]]:
    """Updates of every kind; ``wrap`` decides what each field may be (itself, or junk)."""
    user_ids = st.sampled_from(TELEGRAM_USERS)
    user = st.fixed_dictionaries(
        {
            "id": wrap(user_ids),
            "is_bot": wrap(st.booleans()),
            "first_name": wrap(marked(PLAIN_TEXT)),
        },
        optional={
            "username": wrap(marked(PLAIN_TEXT)),
            "language_code": wrap(st.sampled_from(["en", "cy", "fr", ""])),
        },
    )
    bot = st.just(BOT)
    chat_ids = weighted(
        (6, user_ids), (2, st.sampled_from(TELEGRAM_GROUPS)), (1, st.integers(-(2**70), 2**70))
    )
    chat = st.fixed_dictionaries(
        {
            "id": wrap(chat_ids),
            "type": wrap(weighted((4, st.just("private")), (1, st.sampled_from(CHAT_TYPES)))),
        },
        optional={"title": wrap(marked(PLAIN_TEXT))},
    )
    header = {
        "message_id": wrap(st.integers(1, 3000)),
        "date": wrap(st.integers(0, 2**31)),
        "chat": wrap(chat),
    }
    replied = st.fixed_dictionaries(header, optional={"from": wrap(st.one_of(user, bot))})
    message = st.fixed_dictionaries(
        header,
        optional={
            "from": wrap(user),
            "text": wrap(texts()),
            "caption": wrap(texts()),
            "reply_to_message": wrap(replied),
            "entities": wrap(st.just([])),
        },
    )
    data = st.one_of(
        st.sampled_from(["c:0", "c:1", "c:2", "t:1:0", "t:5:0", "p:0:1", "d:1", "d:0", "x"]),
        marked(PLAIN_TEXT),
    )
    callback = st.fixed_dictionaries(
        {
            "id": wrap(st.integers(1, 10**9).map(str)),
            "from": wrap(user),
            "chat_instance": wrap(PLAIN_TEXT),
        },
        optional={"data": wrap(data), "message": wrap(message)},
    )
    member = st.fixed_dictionaries(
        {"status": wrap(st.sampled_from(MEMBER_STATUSES)), "user": wrap(st.one_of(bot, user))}
    )
    membership = st.fixed_dictionaries(
        {"chat": wrap(chat), "from": wrap(user), "date": wrap(st.integers(0, 2**31))},
        optional={"old_chat_member": wrap(member), "new_chat_member": wrap(member)},
    )
    answer = st.fixed_dictionaries(
        {
            "poll_id": wrap(st.one_of(st.sampled_from(POLL_IDS), marked(PLAIN_TEXT))),
            "option_ids": wrap(st.lists(st.integers(-1, 12), max_size=4)),
        },
        optional={"user": wrap(user), "voter_chat": wrap(chat)},
    )
    update_ids = wrap(st.integers(1, 5000))

    def kind(name: str, body: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.builds(lambda uid, value: {"update_id": uid, name: value}, update_ids, body)

    return weighted(
        (6, kind("message", message)),
        (3, kind("callback_query", callback)),
        (2, kind("my_chat_member", membership)),
        (2, kind("poll_answer", answer)),
        (1, kind("edited_message", message)),
        (1, kind("channel_post", message)),
        (1, st.sampled_from(UNUSED_KINDS).flatmap(lambda name: kind(name, or_junk(message)))),
        (1, st.dictionaries(ANY_TEXT, JUNK, max_size=3)),
    )


CHAT_TYPES = ["private", "group", "supergroup", "channel", "sender", ""]
# Kinds of update civicbot does not ask for (Telegram sends them anyway if a deployment's
# allowed_updates is changed by hand): each must be acknowledged and ignored.
UNUSED_KINDS = [
    "edited_channel_post", "chat_member", "poll", "inline_query", "chosen_inline_result",
    "shipping_query", "pre_checkout_query", "chat_join_request", "message_reaction",
    "business_message",
]  # fmt: skip
MEMBER_STATUSES = ["member", "administrator", "restricted", "left", "kicked", "creator", "x"]


def nested_replies(depth: int) -> bytes:
    """A message replying to a message replying to ... ``depth`` deep (built as text: the
    JSON encoder itself would give up)."""
    head = '{"message_id": 1, "date": 1, "chat": {"id": 1, "type": "private"}, "text": "hi"'
    reply = head + ', "reply_to_message": '
    body = reply * depth + head + "}" + "}" * depth
    return f'{{"update_id": {depth}, "message": {body}}}'.encode()


BODIES = weighted(
    (12, json_bodies(updates(lambda s: s))),
    (4, json_bodies(updates(or_junk))),
    (1, st.integers(1, 5000).map(nested_replies)),
    (1, RAW_JSON_BODIES),
    (1, oversized(MAX_BODY)),
)
SECRETS = weighted((9, st.just(SECRET)), (1, st.sampled_from(["", "wrong", SECRET + "x"])))


@pytest.fixture
async def harness(
    tmp_path: Path, database_url: str, fake_api: FakeBotApi, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Harness]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "vote.yaml").write_text(BUDGET_FLOW)
    unlimited = {"telegram_rate_per_second": 10**6, "telegram_group_per_minute": 10**6}
    settings = telegram_settings(database_url, fake_api.url, flows_dir=flows, **unlimited)
    services = build_services(settings, clock=FixedClock())
    await upgrade(services.db)
    transport = httpx.ASGITransport(app=build_app(services), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        # a group with an open poll, for membership changes and poll answers to find
        added = {
            "update_id": 0,
            "my_chat_member": {
                "chat": {"id": TELEGRAM_GROUPS[0], "type": "supergroup", "title": "Riverside"},
                "from": {"id": TELEGRAM_USERS[0], "is_bot": False, "first_name": "Sam"},
                "date": 1767600000,
                "old_chat_member": {"status": "left", "user": BOT},
                "new_chat_member": {"status": "member", "user": BOT},
            },
        }
        assert (await client.post(WEBHOOK, json=added, headers={SECRET_HEADER: SECRET})).is_success
        assert services.polls is not None
        poll = await services.polls.send(
            chat_id=str(TELEGRAM_GROUPS[0]),
            question="What first?",
            options=["Potholes", "Lights", "Benches"],
            multiple=True,
            closes_at=None,
            actor="fuzz",
        )
        assert poll.telegram_poll_id in POLL_IDS
        harness = Harness(services, client, caplog)
        yield harness
        await harness.finish()
    await services.close()


@pytest.mark.timeout(FUZZ_TIMEOUT)
@FUZZ
@given(body=BODIES, secret=SECRETS)
async def test_telegram_webhook_fuzz(harness: Harness, body: bytes, secret: str) -> None:
    headers = {"Content-Type": "application/json", SECRET_HEADER: secret}
    await harness.send(WEBHOOK, body, headers)
