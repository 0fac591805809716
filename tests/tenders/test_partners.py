"""INTERESTED / PARTNERS / INTRODUCE between two simulated organisations (one by SMS, one
on Telegram): interest is marked, partners are listed with the lots they cover, and no
contact detail passes until both sides have said yes. Bad references get a clear answer;
a cancelled tender tells those interested; FORGET removes the organisation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services
from storage.tenders import TenderOrg, TenderProcess
from tests.conftest import load_demo_wards, make_settings, start_services
from tests.support import dump_database
from tests.tenders.support import AFTER_PAGE, register, say, shared, subscribe, thread

LOTS = "sell2wales_release_2025_carmarthenshire_verge_cutting_20lots.json"
GREEN = "Jo Green, jo@greenfutures.example"
RIVER = "Sam Jones, 07700 900555"


@pytest.fixture
async def bot(
    database_url: str, clock: FixedClock
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    clock.current = AFTER_PAGE
    services = await start_services(make_settings(database_url, run_scheduler=False), clock)
    await load_demo_wards(services)
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield services, client
    await services.close()


async def everything_sent_to(services: Services, address: str) -> str:
    dump = await dump_database(services.sessions)
    return "\n".join(line for line in dump.splitlines() if line.startswith("outbound_messages")
                     and f'"{address}"' in line)


async def test_interest_partners_and_introductions(
    bot: tuple[Services, httpx.AsyncClient], tmp_path: Path
) -> None:
    services, client = bot
    await services.tenders.import_files([shared(LOTS)])
    async with services.sessions() as s:
        ref = (await s.execute(select(TenderProcess))).scalars().one().id
    # River (SMS): construction; Green (Telegram): environment - the verge-cutting lots.
    await register(client, "river", "River Works Co-op", kind="3", details=RIVER)
    await subscribe(client, "river", "15", "1")
    await register(client, "green", "Green Futures CIC", kind="2", details=GREEN,
                   channel="telegram")
    await subscribe(client, "green", "11", "11", channel="telegram")

    assert (await say(client, "river", "INTERESTED 999"))[-1].startswith(
        "Sorry, there is no tender 999"
    )
    assert "no tender ABC" in (await say(client, "river", "INTERESTED abc"))[-1]
    assert (await say(client, "river", f"PARTNERS {ref}"))[-1].startswith(
        "No other organisation has listed"
    )
    assert (await say(client, "river", f"INTERESTED {ref}"))[-1].startswith(
        f"Noted: you are interested in tender {ref}"
    )
    assert "already" in (await say(client, "river", f"interested {ref}"))[-1]
    await say(client, "green", f"DIDDORDEB {ref}", channel="telegram")

    listing = (await say(client, "river", f"PARTNERS {ref}"))[-1]
    assert "1 Green Futures CIC (community interest company) - Environment" in listing
    assert "Wales" in listing
    assert "covers lots you don't" not in listing  # both cover the lots (environment+construction)
    assert GREEN not in listing and "jo@" not in listing

    replies = await say(client, "river", f"INTRODUCE {ref} 5")
    assert "from 1 to 1" in replies[-1]
    replies = await say(client, "river", f"INTRODUCE {ref} 1")
    assert "Ask Green Futures CIC to swap contact details" in replies[-1]
    await say(client, "river", "1")  # yes, ask them
    assert "already asked" in (await say(client, "river", f"INTRODUCE {ref} 1"))[-1]

    # Until Green says yes, nobody has anybody's details.
    assert GREEN not in await everything_sent_to(services, "river")
    assert RIVER not in await everything_sent_to(services, "green")
    assert await services.tenders.deliver_introductions() == 1
    asked = (await thread(client, "green", "telegram"))[-1]
    assert "River Works Co-op (co-operative), also interested in tender" in asked
    assert RIVER not in asked
    assert GREEN not in await everything_sent_to(services, "river")

    replies = await say(client, "green", "1", channel="telegram")  # yes, swap
    assert f"Here are River Works Co-op's details: {RIVER}" in replies[0]
    assert await services.tenders.deliver_introductions() == 1
    told = (await thread(client, "river"))[-1]
    assert told.startswith("Green Futures CIC agreed to swap contact details") and GREEN in told
    assert await services.tenders.deliver_introductions() == 0  # once


async def test_a_no_shares_nothing_and_cancellation_tells_the_interested(
    bot: tuple[Services, httpx.AsyncClient], tmp_path: Path
) -> None:
    services, client = bot
    await services.tenders.import_files([shared(LOTS)])
    async with services.sessions() as s:
        process = (await s.execute(select(TenderProcess))).scalars().one()
    ref = process.id
    await register(client, "a", "Alpha Trust", details="alpha@example.org")
    await subscribe(client, "a", "15", "1")
    await register(client, "b", "Beta Group", kind="5", details="beta@example.org")
    await subscribe(client, "b", "4", "1")  # health: lots it doesn't cover
    await say(client, "a", f"INTERESTED {ref}")
    await say(client, "b", f"INTERESTED {ref}")
    listing = (await say(client, "b", f"PARTNERS {ref}"))[-1]
    assert "1 Alpha Trust (charity) - Building and repairs" in listing
    assert "covers lots you don't: 2, 1" in listing or "covers lots you don't: 1, 2" in listing
    await say(client, "b", f"INTRODUCE {ref} 1", "1")
    await services.tenders.deliver_introductions()
    assert (await say(client, "a", "2"))[-1].startswith("OK, nothing was shared")
    await services.tenders.deliver_introductions()
    told = (await thread(client, "b"))[-1]
    assert told.startswith("Alpha Trust didn't take up the introduction")
    assert "alpha@example.org" not in await everything_sent_to(services, "b")
    assert "beta@example.org" not in await everything_sent_to(services, "a")

    # The buyer cancels: both interested organisations are told, once.
    source = json.loads(shared(LOTS).read_text())
    source["id"], source["date"] = "cancel-1", "2025-02-10T00:00:00Z"
    source["tender"]["status"] = "cancelled"
    (tmp_path / "cancel.json").write_text(json.dumps(source))
    await services.tenders.import_files([tmp_path / "cancel.json"])
    run = await services.tenders.send_alerts()
    assert run.cancelled == 2
    assert (await thread(client, "a"))[-1].startswith(f"Tender {ref} (")
    assert "has been cancelled" in (await thread(client, "b"))[-1]
    assert (await services.tenders.send_alerts()).cancelled == 0

    # FORGET takes the organisation, its subscriptions and interest with it.
    await say(client, "a", "FORGET", "YES")
    async with services.sessions() as s:
        names = [o.name for o in (await s.execute(select(TenderOrg))).scalars()]
    assert names == ["Beta Group"]
    assert "alpha@example.org" not in await dump_database(services.sessions)
