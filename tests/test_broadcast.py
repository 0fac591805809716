"""The one broadcast path: who gets a broadcast (consent, opt-out, erasure, ward, channel,
language), in which language, once per contact however often it is sent, flows the system
starts, scheduled broadcasts, the dry-run estimate, and ``civicbot broadcast send``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bot.app import build_app
from bot.cli import app as cli
from bot.clock import FixedClock
from bot.services import Services, build_services
from flows.broadcasts import BroadcastError, BroadcastSpec, Groups, Segment
from storage import repositories as repo
from storage.broadcasts import BroadcastRecipient
from storage.db import upgrade
from storage.models import OutboundMessage, Priority
from tests.conftest import REPO, load_demo_wards, make_settings
from tests.support import ballot_flows, load_projects

API = "/simulator/api/messages"
TEXT = {"en": "The library reopens on Monday.", "cy": "Mae'r llyfrgell yn ailagor ddydd Llun."}


@pytest.fixture
async def bot(
    database_url: str, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    settings = make_settings(
        database_url, flows_dir=ballot_flows(tmp_path / "flows"), run_scheduler=False
    )
    services = build_services(settings, clock=clock, actions={"load_projects": load_projects})
    await upgrade(services.db)
    await load_demo_wards(services)
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield services, client
    await services.close()


async def resident(
    client: httpx.AsyncClient,
    address: str,
    *texts: str,
    channel: str = "sms",
) -> list[str]:
    replies: list[str] = []
    for text in texts:
        body = {"channel": channel, "address": address, "text": text}
        response = await client.post(API, json=body)
        assert response.status_code == 200, response.text
        replies += [r["text"] for r in response.json()["replies"]]
    return replies


JOIN_EN = ("HI", "1", "1", "CF10 1EP")  # consent, English, Cathays
JOIN_CY = ("HELO", "1", "2", "CF24 2DG")  # consent, Cymraeg, Splott


async def thread(client: httpx.AsyncClient, address: str, channel: str = "sms") -> list[str]:
    response = await client.get(API, params={"channel": channel, "address": address})
    assert response.status_code == 200
    return [m["text"] for m in response.json()["messages"]]


async def broadcast_rows(services: Services) -> list[OutboundMessage]:
    async with services.sessions() as s:
        query = select(OutboundMessage).where(OutboundMessage.priority == Priority.BULK)  # type: ignore[arg-type]
        return list((await s.execute(query)).scalars())


async def test_each_consented_resident_once_in_their_language(
    bot: tuple[Services, httpx.AsyncClient],
) -> None:
    services, client = bot
    await resident(client, "en-1", *JOIN_EN)
    await resident(client, "cy-1", *JOIN_CY)
    await resident(client, "tg-1", *JOIN_EN, channel="telegram")
    await resident(client, "stopped", *JOIN_EN, "STOP")
    await resident(client, "undecided", "HI")  # never consented
    await resident(client, "declined", "HI", "2")
    await resident(client, "erased", *JOIN_EN, "FORGET", "YES")

    spec = BroadcastSpec(text=TEXT, segment=Segment(), actor="test")
    sent = await services.broadcasts.send(spec)
    assert (sent.queued, sent.already) == (3, 0)
    rows = await broadcast_rows(services)
    assert sorted((r.channel, r.address, r.content["text"]) for r in rows) == [
        ("sim-sms", "cy-1", TEXT["cy"]),
        ("sim-sms", "en-1", TEXT["en"]),
        ("sim-telegram", "tg-1", TEXT["en"]),
    ]
    # The same broadcast again (a re-run command, a double click) reaches nobody twice.
    again = await services.broadcasts.send(spec)
    assert (again.broadcast_id, again.queued, again.already) == (sent.broadcast_id, 0, 3)
    assert len(await broadcast_rows(services)) == 3
    # A resident who joins later gets it on the next send, once.
    await resident(client, "late", *JOIN_EN)
    later = await services.broadcasts.send(spec)
    assert (later.queued, later.already) == (1, 3)
    async with services.sessions() as s:
        recipients = (await s.execute(select(BroadcastRecipient))).scalars().all()
    assert len(recipients) == 4 and all(r.outbound_id is not None for r in recipients)
    # It arrives in the simulator without a prompt.
    assert (await thread(client, "cy-1"))[-1] == TEXT["cy"]
    assert (await thread(client, "tg-1", "telegram"))[-1] == TEXT["en"]


async def test_a_stop_after_queueing_is_honoured_when_sending(
    bot: tuple[Services, httpx.AsyncClient],
) -> None:
    services, client = bot
    await resident(client, "en-1", *JOIN_EN)
    await services.broadcasts.send(BroadcastSpec(text=TEXT, segment=Segment(), actor="t"))
    await resident(client, "en-1", "STOP")
    while await services.dispatcher.run_once():
        pass
    [row] = await broadcast_rows(services)
    assert row.status == "cancelled"


async def test_segments_by_ward_channel_and_language(
    bot: tuple[Services, httpx.AsyncClient],
) -> None:
    services, client = bot
    await resident(client, "en-1", *JOIN_EN)
    await resident(client, "cy-1", *JOIN_CY)
    await resident(client, "tg-1", *JOIN_EN, channel="telegram")

    async def who(segment: Segment, key: str) -> list[str]:
        before = {r.id for r in await broadcast_rows(services)}
        await services.broadcasts.send(BroadcastSpec(text=TEXT, segment=segment, key=key))
        return sorted(r.address or "" for r in await broadcast_rows(services) if r.id not in before)

    assert await who(Segment(wards=("DEMO-SPLOTT",)), "w") == ["cy-1"]
    assert await who(Segment(channels=("telegram",)), "c") == ["tg-1"]
    assert await who(Segment(languages=("en",), channels=("sms",)), "l") == ["en-1"]
    with pytest.raises(BroadcastError, match="nobody would get it"):
        await services.broadcasts.send(BroadcastSpec(text=TEXT, segment=Segment(wards=("X",))))
    with pytest.raises(BroadcastError, match="unknown channel"):
        await services.broadcasts.send(
            BroadcastSpec(text=TEXT, segment=Segment(channels=("fax",)))
        )
    with pytest.raises(BroadcastError, match="English text is empty"):
        await services.broadcasts.send(BroadcastSpec(text={"cy": "x"}, segment=Segment()))


async def test_a_flow_started_for_everyone_never_hijacks_a_question(
    bot: tuple[Services, httpx.AsyncClient],
) -> None:
    services, client = bot
    await resident(client, "idle", *JOIN_EN)
    await resident(client, "busy", *JOIN_EN, "POSTCODE")  # now asked for a postcode
    spec = BroadcastSpec(flow_id="ballot", segment=Segment(), key="ballot-open", actor="t")
    sent = await services.broadcasts.send(spec)
    assert sent.queued == 2
    assert (await thread(client, "idle"))[-1].startswith("Choose up to 5 projects for Riverside")
    assert (await thread(client, "busy"))[-1] == (
        "Riverside fund: reply VOTE when you're ready. "
        "Your last question is still waiting for an answer."
    )
    # their postcode question is still open, and VOTE later opens the ballot
    assert (await resident(client, "busy", "CF10 1EP"))[0] == "Thanks. CF10 1EP is in Cathays ward."
    assert (await resident(client, "busy", "VOTE"))[0].startswith("Choose up to 5")
    again = await services.broadcasts.send(spec)
    assert (again.queued, again.already) == (0, 2)


async def test_a_scheduled_broadcast_goes_at_its_time(
    bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, client = bot
    await resident(client, "en-1", *JOIN_EN)
    spec = BroadcastSpec(
        text=TEXT, segment=Segment(), send_at=clock.now() + timedelta(hours=2), actor="t"
    )
    sent = await services.broadcasts.send(spec)
    assert sent.scheduled and sent.queued == 0
    assert await services.broadcasts.send_due() == 0
    clock.advance(hours=2)
    assert await services.broadcasts.send_due() == 1
    assert [r.content["text"] for r in await broadcast_rows(services)] == [TEXT["en"]]
    assert await services.broadcasts.send_due() == 0


async def test_groups_get_both_languages_once(
    bot: tuple[Services, httpx.AsyncClient],
) -> None:
    services, _ = bot
    with pytest.raises(BroadcastError, match="nobody would get it"):  # no Telegram here
        await services.broadcasts.send(BroadcastSpec(text=TEXT, groups=Groups()))


async def test_dry_run_counts_segments_and_cost(
    database_url: str, clock: FixedClock
) -> None:
    settings = make_settings(
        database_url,
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_from_number="+447700900000",
        twilio_api_base="http://127.0.0.1:9",  # never called: nothing is sent here
    )
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    try:
        now = clock.now()
        async with services.sessions() as s, s.begin():
            for n, language in enumerate(["en", "en", "cy"]):
                _, contact = await repo.lock_identity(
                    s, channel="sms", address=f"+4477009000{n:02d}", now=now, language=language
                )
                contact.consent_at = now
        long_cy = "Mae'r llyfrgell yn ailagor ddydd Llun gyda ŵyl fach. " * 2  # UCS-2: 2 parts
        audience = await services.broadcasts.preview(
            BroadcastSpec(text={"en": "Library open Monday.", "cy": long_cy}, segment=Segment())
        )
    finally:
        await services.close()
    assert [(x.channel, x.language, x.recipients, x.segments) for x in audience.lines] == [
        ("sms", "cy", 1, 2),
        ("sms", "en", 2, 1),
    ]
    assert audience.sms_segments == 4 and audience.estimated_cost == Decimal("0.16")


def test_cli_broadcast_send(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"}
    runner = CliRunner()

    def civicbot(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == code, result.output
        return result

    civicbot("db", "upgrade")
    civicbot("wards", "load", str(REPO / "admin" / "data" / "demo_wards.csv"))
    send = ("broadcast", "send", "--text-en", TEXT["en"], "--text-cy", TEXT["cy"])
    empty = civicbot(*send, code=2)
    assert "nobody would get it" in empty.output

    async def join() -> None:
        services = build_services(make_settings(env["CIVICBOT_DATABASE_URL"]))
        transport = httpx.ASGITransport(app=build_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await resident(client, "en-1", *JOIN_EN)
            await resident(client, "cy-1", *JOIN_CY)
            await resident(client, "tg-1", *JOIN_EN, channel="telegram")
        await services.close()

    import asyncio

    asyncio.run(join())
    dry = civicbot(*send, "--dry-run").output
    assert "sim-sms       cy                  1             1" in dry
    assert "sim-sms       en                  1             1" in dry
    assert "sim-telegram  en                  1             -" in dry
    assert "recipients: 3" in dry and "estimated cost: 0.00 GBP" in dry
    first = civicbot(*send)
    broadcast_id = first.stdout.strip()
    assert broadcast_id.isdigit()
    again = civicbot(*send)
    assert again.stdout.strip() == broadcast_id  # the same broadcast: nobody gets it twice
    assert "queued for 0 resident(s); 3 had it already" in again.output
    ward = civicbot(*send, "--ward", "DEMO-SPLOTT", "--channel", "sms")
    assert ward.stdout.strip() != broadcast_id and "queued for 1" in ward.output
    bad = civicbot("broadcast", "send", "--text-en", "x", "--channel", "fax", code=2)
    assert "use sms or telegram" in bad.output
