"""The simulator's JSON API and health check, including hostile input."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from bot.services import Services
from storage.models import InboundMessage

API = "/simulator/api/messages"


async def say(client: httpx.AsyncClient, text: str, **extra: object) -> dict[str, object]:
    body = {"channel": "sms", "address": "+447700900123", "text": text, **extra}
    response = await client.post(API, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


def reply_texts(data: dict[str, object]) -> list[str]:
    return [r["text"] for r in data["replies"]]  # type: ignore[attr-defined, index]


async def test_onboarding_stop_start_and_redelivery(client: httpx.AsyncClient) -> None:
    first = await say(client, "hi", id="m-1")
    assert "Reply 1 or 2" in reply_texts(first)[0]
    assert first["duplicate"] is False
    again = await say(client, "hi", id="m-1")
    assert (again["replies"], again["duplicate"]) == ([], True)
    await say(client, "1")
    await say(client, "English")
    done = reply_texts(await say(client, "cf10 1ep"))
    assert done[0] == "Thanks. CF10 1EP is in Cathays ward."
    assert reply_texts(await say(client, "STOP"))[0].startswith("You've unsubscribed")
    for text in ["hello", "MENU", "HELP", "1", "STOP"]:
        assert reply_texts(await say(client, text)) == []
    back = reply_texts(await say(client, "START"))
    assert back[0] == (
        "Welcome back! You'll get civicbot messages again. Text STOP at any time to stop."
    )
    assert back[1].startswith("What would you like to do?")  # and the menu, at once


async def test_telegram_style_has_telegrams_own_buttons(client: httpx.AsyncClient) -> None:
    data = await say(client, "hi", channel="telegram")
    reply = data["replies"][0]  # type: ignore[index]
    assert reply["choices"] == ["Yes, I agree", "No thanks"]
    assert reply["buttons"] == [
        {"label": "Yes, I agree", "data": "c:0"},
        {"label": "No thanks", "data": "c:1"},
    ]
    assert "Reply 1 or 2" not in reply["text"]
    tapped = await say(client, "", channel="telegram", choice="c:0", message_id=reply["id"])
    assert "Which language" in reply_texts(tapped)[0]
    assert tapped["notice"] is None
    stale = await say(client, "", channel="telegram", choice="c:0", message_id=reply["id"])
    assert reply_texts(stale) == []
    assert stale["notice"] == "That question has closed."


async def test_taps_in_the_engines_own_form_still_work(client: httpx.AsyncClient) -> None:
    """Tools written before keyboards carried short codes sent ``flow:node:option``."""
    await say(client, "hi", channel="telegram")
    tapped = await say(client, "", channel="telegram", choice="onboarding:consent:yes")
    assert "Which language" in reply_texts(tapped)[0]
    stale = await say(client, "", channel="telegram", choice="onboarding:consent:yes")
    assert stale["notice"] == "That question has closed."


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": "a", "text": "hi"}, "channel"),
        ({"channel": "fax", "address": "a", "text": "hi"}, "channel"),
        ({"channel": "sms", "text": "hi"}, "address"),
        ({"channel": "sms", "address": "", "text": "hi"}, "address"),
        ({"channel": "sms", "address": "\x00\x01", "text": "hi"}, "address"),
        ({"channel": "sms", "address": "\u200b", "text": "hi"}, "address"),
        ({"channel": "sms", "address": "\u200e\u00a0\ufeff", "text": "hi"}, "address"),
        ({"channel": "sms", "address": "a" * 65, "text": "hi"}, "address"),
        ({"channel": "sms", "address": "a", "text": 5}, "text"),
        ({"channel": "sms", "address": "a", "text": "x" * 20_001}, "text"),
        ({"channel": "sms", "address": "a", "text": "hi", "id": ""}, "id"),
        ({"channel": "sms", "address": "a", "text": "hi", "colour": "red"}, "colour"),
    ],
)
async def test_bad_fields_get_a_clear_422(
    client: httpx.AsyncClient, services: Services, body: dict[str, object], field: str
) -> None:
    response = await client.post(API, json=body)
    assert response.status_code == 422
    assert field in response.json()["detail"]
    async with services.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(InboundMessage))).scalar() == 0


@pytest.mark.parametrize("field", ["id", "message_id", "choice"])
@pytest.mark.parametrize("value", ["m-\x00", "m\n1", "\x85"])
async def test_control_characters_in_an_id_are_a_422_on_every_database(
    any_client: httpx.AsyncClient,
    any_services: Services,
    caplog: pytest.LogCaptureFixture,
    field: str,
    value: str,
) -> None:
    """A NUL in the simulator's id was a 500 on PostgreSQL; no id may carry a control
    character, and what the person wrote is never logged."""
    body = {"channel": "telegram", "address": "+447700900999", "text": "my private words"}
    response = await any_client.post(API, json={**body, field: value})
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]
    async with any_services.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(InboundMessage))).scalar() == 0
    assert "private words" not in caplog.text and "900999" not in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"channel": "sms", "address": "a", "text": "\xff\xfe"}',
        b'"just a string"',
        b"{" * 5000,
    ],
)
async def test_malformed_bodies_get_a_4xx(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post(API, content=content, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize(
    "text",
    [
        "x" * 10_000,
        "hi\x00there\x07\x1b[31m",
        "🗳️🏘️ 👍🏽",
        "",
        "   ",
        "Robert'); DROP TABLE contacts;--",
        "<script>alert(1)</script>",
        "ŵŷ Cymraeg",
    ],
)
async def test_hostile_text_gets_a_reply_and_is_stored_cleanly(
    client: httpx.AsyncClient, services: Services, text: str
) -> None:
    data = await say(client, text)
    assert reply_texts(data), "every inbound message from a new contact gets an answer"
    async with services.sessions() as s:
        stored = (await s.execute(select(InboundMessage.text))).scalar_one()
    assert stored is not None and "\x00" not in stored


async def test_an_escaped_lone_surrogate_is_refused_not_stored(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = b'{"channel": "sms", "address": "a", "text": "\\ud800 hi"}'
    response = await client.post(API, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    async with services.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(InboundMessage))).scalar() == 0


async def test_health_and_pages(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    page = await client.get("/simulator")
    assert page.status_code == 200 and "civicbot simulator" in page.text
    assert (await client.get("/static/simulator.js")).status_code == 200
    assert (await client.get("/")).status_code in (302, 307)
    assert (await client.get("/nowhere")).status_code == 404


async def test_health_reports_a_dead_database(
    client: httpx.AsyncClient, services: Services
) -> None:
    from storage.db import create_engine

    await services.db.dispose()
    services.db = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "detail": "database unreachable"}


async def test_forget_removes_the_number_everywhere_even_after_stop(
    client: httpx.AsyncClient, services: Services
) -> None:
    from storage.models import ChannelIdentity, Contact, OutboundMessage

    for text in ["hi", "1", "1", "CF10 1EP", "STOP"]:
        await say(client, text)
    assert reply_texts(await say(client, "FORGET")) == []
    await services.dispatcher.run_once()
    async with services.sessions() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        assert contact.erased_at is not None and contact.postcode is None
        assert (await s.execute(select(ChannelIdentity))).scalars().all() == []
        addresses = (await s.execute(select(InboundMessage.address))).scalars().all()
        addresses += (await s.execute(select(OutboundMessage.address))).scalars().all()
    assert "+447700900123" not in addresses


async def test_the_erased_reply_forgets_its_address_once_sent(
    client: httpx.AsyncClient, services: Services
) -> None:
    from storage.models import OutboundMessage

    for text in ["hi", "1", "1", "CF10 1EP", "FORGET"]:
        await say(client, text)
    assert reply_texts(await say(client, "YES"))[0].startswith("Done: your personal data")
    await services.dispatcher.run_once()
    async with services.sessions() as s:
        rows = (await s.execute(select(OutboundMessage))).scalars().all()
    assert all(r.address is None and r.content == {} for r in rows)
    # Replies still queued when the data was erased went with the rest of the person's
    # messages; only the confirmation is left, sent and blanked.
    assert [r.status for r in rows] == ["sent"]
