"""The ideas conversation (IDEA / SYNIAD) in a round's proposals phase, on SQLite and
PostgreSQL: a title, then what and where, stored as a proposal; outside the phase, out of
scope, or when the phase ends mid-conversation, a clear answer and nothing stored."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select

from bot.clock import FixedClock
from bot.services import Services
from storage.pb_rounds import PbProposal, ProposalStatus
from tests.rounds.conftest import Resident
from tests.rounds.vote_support import add_round

Bot = tuple[Services, httpx.AsyncClient]


async def proposals(services: Services) -> list[PbProposal]:
    async with services.sessions() as session:
        found = await session.execute(select(PbProposal).order_by(PbProposal.id))  # type: ignore[arg-type]
        return list(found.scalars())


async def test_an_idea_in_the_proposals_phase(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), proposals=True)
    sms = Resident(client, "sms", "+447700900301")
    await sms.join()
    [ask] = await sms.say("IDEA")
    assert ask.startswith("Riverside fund: what is your idea? Give it a short title")
    [reply] = await sms.say("x" * 121)
    assert reply.startswith("Please give a title of up to 120 characters.")
    [ask] = await sms.say("Benches by the river")
    assert ask == "What would it be, and where? (up to 1000 characters)"
    [thanks] = await sms.say("Six benches along the towpath between the two bridges")
    assert thanks.startswith("Thank you, your idea is in.")
    assert thanks.endswith("Send IDEA for another, until 11/01/2026 09:00.")
    [idea] = await proposals(services)
    assert (idea.round_id, idea.title, idea.status) == (
        "riverside-2027",
        "Benches by the river",
        ProposalStatus.NEW,
    )
    assert idea.content == "Six benches along the towpath between the two bridges"
    assert idea.ward_code == "DEMO-CATHAYS" and idea.contact_id is not None


async def test_welsh_and_out_of_scope(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), proposals=True, wards=["DEMO-SPLOTT"])
    cathays = Resident(client, "sms", "+447700900302")
    await cathays.join("cathays", language="cy")
    [reply] = await cathays.say("SYNIAD")
    assert reply.startswith("Mae'n ddrwg gen i, dim ond ar gyfer trigolion Sblot y mae")
    splott = Resident(client, "telegram", "5550301")
    await splott.join("splott", language="cy")
    [ask] = await splott.say("SYNIAD")
    assert ask.startswith("Cronfa Glan-yr-afon: beth yw eich syniad?")
    await splott.say("Coed")
    [thanks] = await splott.say("Coed ar Heol y Sblot")
    assert thanks.startswith("Diolch, mae eich syniad i mewn.")
    assert [(p.title, p.ward_code) for p in await proposals(services)] == [("Coed", "DEMO-SPLOTT")]


async def test_outside_the_phase(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    sms = Resident(client, "sms", "+447700900303")
    await sms.join()
    none = (
        "We aren't collecting ideas for local projects right now. We'll let you know when we are."
    )
    assert await sms.say("IDEA") == [none]
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now())  # voting, no ideas phase
    assert await sms.say("IDEA") == [none]
    async with services.sessions() as session, session.begin():
        later = await add_round(session, now=clock.now(), round_id="later", proposals=True)
        later.proposals_close = clock.now() + timedelta(minutes=30)
    await sms.say("IDEA")
    await sms.say("A mural")
    clock.advance(hours=1)  # the ideas phase ends while the person is writing
    [reply] = await sms.say("On the wall of the library")
    assert reply.startswith("Sorry, the time for ideas has just ended")
    assert await proposals(services) == []
