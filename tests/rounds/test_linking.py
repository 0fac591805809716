"""Linking a Telegram user's phone by a code sent by SMS, through the simulator (its
Telegram style links to its SMS style), on SQLite and PostgreSQL: wrong codes, expiry and
tries; the contacts merged with their ballots (the latest counts); ``verification: phone``
rounds; concurrent YES from SMS and Telegram for one linked person; FORGET deletes codes."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlmodel import SQLModel

from bot.clock import FixedClock
from bot.services import Services
from flows.rounds.linking import normalise_phone
from storage.models import ChannelIdentity, Contact, OutboundMessage
from storage.pb_rounds import PbBallot
from storage.phone_links import PhoneCode
from tests.conftest import load_demo_wards
from tests.rounds.conftest import API, Resident
from tests.rounds.vote_support import add_round
from tests.telegram.conftest import USER, TelegramBot

Bot = tuple[Services, httpx.AsyncClient]
PHONE = "+447700900501"


async def code_sent(client: httpx.AsyncClient, phone: str = PHONE) -> str:
    response = await client.get(API, params={"channel": "sms", "address": phone})
    texts = [m["text"] for m in response.json()["messages"]]
    found = re.search(r"Your civicbot code is ([0-9]{6})\.", texts[-1])
    assert found, texts
    return found.group(1)


async def stored(services: Services) -> list[PbBallot]:
    async with services.sessions() as session:
        query = select(PbBallot).order_by(PbBallot.id)  # type: ignore[arg-type]
        return list((await session.execute(query)).scalars())


async def contacts_of(services: Services) -> dict[tuple[str, str], int]:
    async with services.sessions() as session:
        rows = (await session.execute(select(ChannelIdentity))).scalars()
        return {(i.channel, i.address): i.contact_id for i in rows}


async def link(tg: Resident, client: httpx.AsyncClient, phone: str = "07700 900501") -> None:
    [ask] = await tg.say("LINK")
    assert ask.startswith("What is your mobile number?")
    [sent] = await tg.say(phone)
    assert sent.startswith("We've texted a 6-digit code to +447700900501.")
    [done] = await tg.say(await code_sent(client))
    assert done == "Thanks, your phone number is linked. Send VOTE to vote."


def test_phone_numbers() -> None:
    assert normalise_phone("07700 900501") == PHONE
    assert normalise_phone("+44 7700 900501") == PHONE
    assert normalise_phone("12") is None
    assert normalise_phone("call me") is None


async def test_linking_merges_contacts_and_keeps_the_latest_ballot(
    bot: Bot, clock: FixedClock
) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now())
        await add_round(session, now=clock.now(), round_id="parks", title=("Parks", "Parciau"))
    sms = Resident(client, "sms", PHONE)
    await sms.join()
    for answer in ("VOTE", "2", "1", "YES"):  # which vote: 2 Riverside fund (1 is Parks)
        await sms.say(answer)
    clock.advance(minutes=5)
    tg = Resident(client, "telegram", "700501")
    await tg.join()
    for answer in ("VOTE", "2", "2 3", "YES", "VOTE", "1", "4", "YES"):  # both, later
        await tg.say(answer)
    assert sorted((b.round_id, b.vote) for b in await stored(services)) == [
        ("parks", ["par4"]),
        ("riverside-2027", ["riv1"]),
        ("riverside-2027", ["riv2", "riv3"]),
    ]
    before = await stored(services)
    telegram_contact = (await contacts_of(services))[("sim-telegram", "700501")]
    # a wrong code, then a bad number, then the right code
    [ask] = await tg.say("LINK")
    [bad, again] = await tg.say("call me")
    assert bad.startswith("That doesn't look like a mobile number.") and again == ask
    await tg.say("07700 900501")
    [wrong, _] = await tg.say("000000" if await code_sent(client) != "000000" else "111111")
    assert wrong.startswith("That code isn't right.")
    [done] = await tg.say(await code_sent(client))
    assert done == "Thanks, your phone number is linked. Send VOTE to vote."
    ids = await contacts_of(services)
    assert ids[("sim-telegram", "700501")] == ids[("sim-sms", PHONE)]
    after = await stored(services)
    riverside = [b for b in after if b.round_id == "riverside-2027"]
    assert [b.vote for b in riverside] == [["riv2", "riv3"]]  # the Telegram one: later
    assert {b.contact_id for b in after} == {ids[("sim-sms", PHONE)]}
    keys = {b.vote[0]: b.voter_key for b in before}
    assert riverside[0].voter_key == keys["riv2"]
    async with services.sessions() as session:
        [code] = (
            (await session.execute(select(PhoneCode).where(PhoneCode.confirmed_at.is_not(None))))
            .scalars()
            .all()
        )  # type: ignore[union-attr]
    assert code.code_hash and len(code.code_hash) == 64 and code.phone == PHONE
    # nothing is left with the Telegram contact, which is erased as FORGET erases a person
    async with services.sessions() as session:
        for table in SQLModel.metadata.sorted_tables:
            column = table.c.get("contact_id")
            if column is not None and table.name != "contacts":
                left = select(func.count()).select_from(table).where(column == telegram_contact)
                assert (await session.execute(left)).scalar() == 0, table.name
        old_contact = await session.get(Contact, telegram_contact)
        assert old_contact is not None and old_contact.erased_at is not None
    # by SMS there is nothing to link; on Telegram it is done
    assert await sms.say("LINK") == ["You're texting from your phone, so there's nothing to link."]
    assert await tg.say("LINK") == ["Your phone number is linked already."]


async def test_codes_expire_and_allow_five_tries(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    tg = Resident(client, "telegram", "700502")
    await tg.join()
    await tg.say("LINK")
    await tg.say("07700 900502")
    code = await code_sent(client, "+447700900502")
    clock.advance(minutes=11)
    [reply] = await tg.say(code)
    assert reply.startswith("That code has expired or had too many tries.")
    await tg.say("LINK")
    await tg.say("07700 900502")
    code = await code_sent(client, "+447700900502")
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(4):
        [reply, _] = await tg.say(wrong)
        assert reply.startswith("That code isn't right.")
    [reply] = await tg.say(wrong)
    assert reply.startswith("That code has expired or had too many tries.")
    await tg.say("LINK")
    await tg.say("07700 900502")  # a third code: the earlier ones no longer work
    [reply, _] = await tg.say(code)
    assert reply.startswith("That code isn't right.")
    await tg.say("MENU")  # (LINK at the code question asks for the code again)
    await tg.say("LINK")
    [reply] = await tg.say("07700 900502")  # a fourth code within the hour
    assert reply.startswith("We've sent several codes already.")
    assert await contacts_of(services) == {("sim-telegram", "700502"): 1}


async def test_a_phone_verified_round(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), verification="phone")
    sms = Resident(client, "sms", "+447700900503")
    await sms.join()
    [question] = await sms.say("VOTE")
    assert question.startswith("Riverside fund: choose 1 to 3 projects.")
    tg = Resident(client, "telegram", "700503")
    await tg.join()
    [reply] = await tg.say("VOTE")
    assert reply.startswith("This vote asks Telegram voters to confirm a phone number first.")
    await link(tg, client, "07700 900501")
    [question] = await tg.say("VOTE")
    assert question.startswith("Riverside fund: choose 1 to 3 projects.")
    await tg.say("2")
    [cast] = await tg.say("YES")
    assert "Receipt:" in cast


async def test_concurrent_yes_from_sms_and_telegram_leaves_one_ballot(
    bot: Bot, clock: FixedClock
) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now())
    sms = Resident(client, "sms", PHONE)
    await sms.join()
    tg = Resident(client, "telegram", "700504")
    await tg.join()
    await link(tg, client)
    for r, numbers in ((sms, "1 2"), (tg, "3")):
        await r.say("VOTE")
        await r.say(numbers)
    replies = await asyncio.gather(sms.say("YES"), tg.say("YES"))
    assert all("Receipt:" in r[0] for r in replies), replies
    [ballot] = await stored(services)
    assert ballot.vote in (["riv1", "riv2"], ["riv3"])
    async with services.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(PbBallot))
    assert count == 1


async def test_forget_deletes_phone_codes(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    tg = Resident(client, "telegram", "700505")
    await tg.join()
    await tg.say("LINK")
    await tg.say("07700 900505")
    await tg.say("FORGET")
    await tg.say("YES")
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(PhoneCode)) == 0


# ---- Telegram's request-contact button, through the webhook and the Bot API fake ----------


def shared_contact(tg: TelegramBot, phone: str, owner: int) -> dict[str, Any]:
    update = tg.text("")
    message = update["message"]
    del message["text"]
    message["contact"] = {"phone_number": phone, "first_name": "Sam", "user_id": owner}
    return update


async def test_telegram_contact_button_only_takes_the_senders_own_contact(
    tg: TelegramBot,
) -> None:
    await load_demo_wards(tg.services)
    for text in ("HI", "1", "1", "CF10 1EP"):
        await tg.say(text)
    [ask] = await tg.say("LINK")
    assert ask["text"].startswith("What is your mobile number? Type it, or tap the button")
    assert ask["reply_markup"]["keyboard"] == [
        [{"text": "Share my phone number", "request_contact": True}]
    ]
    before = len(tg.fake.sent("sendMessage"))
    response = await tg.post(shared_contact(tg, "447700900602", owner=USER + 1))
    assert response.status_code == 200
    await tg.dispatch()
    refused = [m["text"] for m in tg.fake.sent("sendMessage")[before:]]
    assert refused[0] == (
        "That contact isn't yours. Share your own number with the button, or type it."
    )
    async with tg.services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(PhoneCode)) == 0
    before = len(tg.fake.sent("sendMessage"))
    response = await tg.post(shared_contact(tg, "447700900601", owner=USER))
    assert response.status_code == 200
    await tg.dispatch()
    [sent] = [m["text"] for m in tg.fake.sent("sendMessage")[before:]]
    assert sent.startswith("We've texted a 6-digit code to +447700900601.")
    async with tg.services.sessions() as session:
        query = select(OutboundMessage).where(OutboundMessage.channel == "sms")  # type: ignore[arg-type]
        [sms] = (await session.execute(query)).scalars().all()
    assert sms.address == "+447700900601"
    found = re.search(r"code is ([0-9]{6})", sms.content["text"])
    assert found
    [done] = await tg.say(found.group(1))
    assert done["text"] == "Thanks, your phone number is linked. Send VOTE to vote."
    async with tg.services.sessions() as session:
        rows = (await session.execute(select(ChannelIdentity))).scalars().all()
    assert {(i.channel, i.address) for i in rows} == {
        ("telegram", str(USER)),
        ("sms", "+447700900601"),
    }
    assert len({i.contact_id for i in rows}) == 1
