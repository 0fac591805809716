"""The voting conversation through the simulator API on SQLite and PostgreSQL: each ballot
type on SMS and Telegram, read-back and YES, receipts, re-votes, bad input (which leaves the
stored ballot as it was), residents out of scope, several rounds, and after the close."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from bot.clock import FixedClock
from bot.services import Services
from storage.pb_rounds import PbBallot, PbProposal, PbRound, RoundStatus
from tests.rounds.conftest import Resident
from tests.rounds.vote_support import add_round

Bot = tuple[Services, httpx.AsyncClient]


async def ballots(services: Services) -> list[PbBallot]:
    async with services.sessions() as session:
        found = await session.execute(select(PbBallot).order_by(PbBallot.id))  # type: ignore[arg-type]
        return list(found.scalars())


def receipt(text: str) -> str:
    found = re.search(r"Receipt: ([A-Z0-9]{6})", text) or re.search(
        r"Derbynneb: ([A-Z0-9]{6})", text
    )
    assert found, text
    return found.group(1)


async def test_knapsack_by_sms_with_bad_input_and_a_revote(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), ballot={"type": "knapsack"})
    sms = Resident(client, "sms", "+447700900001")
    await sms.join()
    [question] = await sms.say("VOTE")
    assert question.startswith("Riverside fund: choose projects whose costs fit the budget")
    assert "1 Benches (9,000)" in question and "Budget: 50,000" in question
    [reply] = await sms.say("YES")
    assert reply.startswith("You haven't chosen anything yet.")
    [reply] = await sms.say("3 6 1")
    assert reply.startswith("Those come to 59,000, which is 9,000 over the budget of 50,000.")
    [reply] = await sms.say("2 9")
    assert reply.startswith("Sorry, 9 isn't on the list. Please use numbers from 1 to 6.")
    [reply] = await sms.say("1 park")
    assert reply.startswith('Sorry, I couldn\'t match "1 park" to an option.')
    assert await ballots(services) == []
    [readback] = await sms.say("1 2 5")
    assert readback == (
        "You chose 1, 2, 5 (Benches; Bike racks; Bins): £29,000 of £50,000. "
        "Reply YES to cast, or send new numbers."
    )
    # new numbers at the read-back: checked, and read back again
    [reply] = await sms.say("3 6 1")
    assert reply.startswith("Those come to £59,000, which is £9,000 over the budget of £50,000.")
    assert reply.endswith("£29,000 of £50,000. Reply YES to cast, or send new numbers.")
    [reply] = await sms.say("2 2")
    assert reply.startswith("You gave 2 twice.")
    [reply] = await sms.say("3 4")
    assert reply.startswith("You chose 3, 4 (Play area; Street trees): £36,000 of £50,000.")
    assert await ballots(services) == []
    [cast] = await sms.say("YES")
    assert cast.startswith("Your vote in Riverside fund is cast. Receipt: ")
    [first] = await ballots(services)
    assert first.vote == ["riv3", "riv4"] and first.receipt == receipt(cast)
    assert first.channel == "sim-sms" and first.ward_code == "DEMO-CATHAYS"

    # voting again: said so, and the ballot is replaced (same voter key, new receipt)
    [question] = await sms.say("VOTE")
    assert question.startswith("You have voted in this round already: a new vote replaces it.")
    await sms.say("5")
    [bad] = await sms.say("9")  # a bad new choice keeps the one read back, and the stored one
    assert bad.startswith("Sorry, 9 isn't on the list.") and "You chose 5 (Bins)" in bad
    assert [b.vote for b in await ballots(services)] == [["riv3", "riv4"]]
    [again] = await sms.say("YES")
    assert again.startswith("Your new vote in Riverside fund replaces your earlier one.")
    [second] = await ballots(services)
    assert second.vote == ["riv5"] and second.voter_key == first.voter_key
    assert second.receipt == receipt(again) != first.receipt


async def test_approval_limits_and_help(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), ballot={"type": "approval", "min": 2, "max": 3})
    sms = Resident(client, "sms", "+447700900002")
    await sms.join()
    [question] = await sms.say("VOTE")
    assert question.startswith("Riverside fund: choose 2 to 3 projects.")
    [reply] = await sms.say("1 2 3 4")
    assert reply.startswith("Please choose no more than 3.")
    [reply] = await sms.say("1")
    assert reply.startswith("Please choose at least 2.")
    [help_text, again] = await sms.say("HELP")
    assert help_text.startswith("Reply with the numbers of the projects you choose")
    assert again.startswith("Riverside fund: choose 2 to 3 projects.")
    [readback] = await sms.say("6, 1")
    assert readback.startswith("You chose 1, 6 (Benches; Skate park).")  # in ballot order
    [reply] = await sms.say("4")  # one is too few at the read-back too
    assert reply.startswith("Please choose at least 2.") and "You chose 1, 6" in reply
    [cast] = await sms.say("yes")
    assert "Receipt:" in cast
    [ballot] = await ballots(services)
    assert ballot.vote == ["riv1", "riv6"]


async def test_ranked_keeps_the_order(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), ballot={"type": "ranked", "top": 3})
    sms = Resident(client, "sms", "+447700900003")
    await sms.join()
    [question] = await sms.say("VOTE")
    assert question.startswith("Riverside fund: rank up to 3 projects, best first.")
    [reply] = await sms.say("5 2 3 1")
    assert reply.startswith("Please choose no more than 3.")
    [readback] = await sms.say("5 2 3")
    assert readback.startswith("Your order, best first: 5, 2, 3 (Bins; Bike racks; Play area).")
    await sms.say("YES")
    [ballot] = await ballots(services)
    assert ballot.vote == ["riv5", "riv2", "riv3"] and ballot.points is None


async def test_cumulative_points(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), ballot={"type": "cumulative", "points": 10})
    sms = Resident(client, "sms", "+447700900004")
    await sms.join()
    [question] = await sms.say("VOTE")
    assert question.startswith("Riverside fund: you have 10 points to share between projects.")
    assert "2x3 5x7" in question and "\n1 Benches (£9,000)\n" in question
    [reply] = await sms.say("2 5")
    assert reply.startswith('Sorry, I couldn\'t read "2".') and "you have 10 points" in reply
    [reply] = await sms.say("2x6 5x5")
    assert reply.startswith("That is 11 points, and you have 10.")
    [reply] = await sms.say("2x0")
    assert reply.startswith("Project 2 has no points")
    [reply] = await sms.say("YES")
    assert reply.startswith("You haven't chosen anything yet.")
    [help_text, _] = await sms.say("HELP")
    assert help_text.startswith("Give your points as project number x points")
    [readback] = await sms.say("2x3 5x7")
    assert readback == (
        "You gave 3 to 2 (Bike racks), 7 to 5 (Bins): 10 of 10 points. "
        "Reply YES to cast, or send new points."
    )
    [readback] = await sms.say("4:2")
    assert readback.startswith("You gave 2 to 4 (Street trees): 2 of 10 points.")
    await sms.say("YES")
    [ballot] = await ballots(services)
    assert ballot.vote == ["riv4"] and ballot.points == [2]


async def test_telegram_taps_running_total_and_an_old_keyboard(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), ballot={"type": "knapsack"})
    tg = Resident(client, "telegram", "5001")
    await tg.join()
    await tg.say("VOTE")
    assert tg.latest is not None
    first_keyboard = tg.latest
    assert first_keyboard[1][-1]["label"] == "Done: 0 of 50,000"
    await tg.tap("⬜ Benches")
    data = await tg.tap("⬜ Skate")
    assert data["edited"]["buttons"][-1]["label"] == "Done: 39,000 of 50,000"
    data = await tg.tap("⬜ Play")
    assert data["notice"].startswith("Those come to 59,000, which is 9,000 over")
    data = await tg.tap("Done")
    [readback] = [r["text"] for r in data["replies"]]
    assert readback.startswith("You chose 1, 6 (Benches; Skate park): £39,000 of £50,000.")
    [cast] = await tg.say("YES")
    assert "Receipt:" in cast
    [stored] = await ballots(services)
    assert stored.vote == ["riv1", "riv6"] and stored.channel == "sim-telegram"
    # a tap on the first keyboard after the vote: that question has closed, nothing changes
    old = await tg.post({"choice": first_keyboard[1][1]["data"], "message_id": first_keyboard[0]})
    assert old["notice"] == "That question has closed."
    # with the same list asked again, a Done on the old keyboard with a selection that
    # keyboard no longer showed is out of date: nothing is read back or cast
    await tg.say("VOTE")
    old = await tg.post({"choice": "d:1", "message_id": first_keyboard[0]})
    assert old["replies"] == []
    assert old["notice"].startswith("That tap was on an older copy of this list")
    [after] = await ballots(services)
    assert (after.vote, after.receipt) == (stored.vote, stored.receipt)


async def test_welsh_reprompts_in_welsh(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), ballot={"type": "knapsack"})
    sms = Resident(client, "sms", "+447700900005")
    await sms.join(language="cy")
    [question] = await sms.say("PLEIDLAIS")
    assert question.startswith("Cronfa Glan-yr-afon: dewiswch brosiectau")
    assert "1 Meinciau (9,000)" in question
    [readback] = await sms.say("1 2")
    assert readback.startswith("Fe ddewisoch 1, 2 (Meinciau; Raciau beiciau): £21,000 o £50,000.")
    [reply] = await sms.say("1 ysgol")
    assert reply.startswith("Mae'n ddrwg gen i, nid yw \"ysgol\" yn rhif o'r rhestr.")
    [cast] = await sms.say("IE")
    assert cast.startswith("Mae eich pleidlais yn Cronfa Glan-yr-afon wedi'i bwrw. Derbynneb: ")


async def test_out_of_scope_and_several_rounds(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    now = clock.now()
    async with services.sessions() as session, session.begin():
        await add_round(session, now=now, wards=["DEMO-SPLOTT"])
    outside = Resident(client, "sms", "+447700900006")
    await outside.join("cathays")
    [reply] = await outside.say("VOTE")
    assert reply == (
        "Sorry, Riverside fund is only for residents of Splott, and your ward isn't one of them."
    )
    async with services.sessions() as session, session.begin():
        await add_round(
            session,
            now=now,
            round_id="splott-parks",
            wards=["DEMO-SPLOTT", "DEMO-CATHAYS"],
            title=("Parks fund", "Cronfa parciau"),
        )
    splott = Resident(client, "sms", "+447700900007")
    await splott.join("splott")
    [which] = await splott.say("VOTE")
    assert which.startswith("Which vote?") and "Riverside fund" in which and "Parks fund" in which
    [question] = await splott.say("2")
    assert question.startswith("Parks fund: choose 1 to 3 projects.")
    await splott.say("1")
    await splott.say("YES")
    [reply] = await outside.say("VOTE")  # only the round covering Cathays: no question which
    assert reply.startswith("Parks fund: choose 1 to 3 projects.")
    assert [(b.round_id, b.vote) for b in await ballots(services)] == [("splott-parks", ["spl1"])]


async def test_after_the_close(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        round_ = await add_round(session, now=clock.now())
    sms = Resident(client, "sms", "+447700900008")
    await sms.join()
    await sms.say("VOTE")
    await sms.say("1 2")
    await sms.say("YES")
    await sms.say("VOTE")
    await sms.say("3")
    # a facilitator closes the round while a new choice waits for YES
    async with services.sessions() as session, session.begin():
        stored = await session.get(PbRound, round_.id)
        assert stored is not None
        stored.status = RoundStatus.CLOSED
        stored.closed_at = clock.now()
    [reply] = await sms.say("YES")
    assert reply == (
        "Voting in Riverside fund has closed (05/01/2026 09:00). "
        "The results will be sent to everyone who voted."
    )
    [kept] = await ballots(services)
    assert kept.vote == ["riv1", "riv2"]
    async with services.sessions() as session, session.begin():
        stored = await session.get(PbRound, round_.id)
        assert stored is not None
        stored.results = {"round": stored.id, "selected": ["riv1", "riv3"]}
    [reply] = await sms.say("VOTE")
    assert reply.endswith("has closed (05/01/2026 09:00). Funded: Benches; Play area.")
    # and past the closing time, closed or not yet
    clock.advance(days=8)
    [reply] = await sms.say("PLEIDLAIS")
    assert reply.startswith("Voting in Riverside fund has closed")


async def test_menu_offers_voting(bot: Bot, clock: FixedClock) -> None:
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now() - timedelta(minutes=1))
    sms = Resident(client, "sms", "+447700900009")
    await sms.join()
    [menu] = await sms.say("MENU")
    line = next(x for x in menu.splitlines() if x.endswith("Vote on local projects"))
    [question] = await sms.say(line.split()[0])
    assert question.startswith("Riverside fund: choose 1 to 3 projects.")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_nothing_open(bot: Bot) -> None:
    _, client = bot
    sms = Resident(client, "sms", "+447700900010")
    await sms.join()
    assert await sms.say("VOTE") == [
        "There's no vote open right now. We'll let you know when there is."
    ]


async def test_forget_keeps_the_ballot_counted_without_the_person(
    bot: Bot, clock: FixedClock
) -> None:
    """FORGET detaches the ballot (no contact, no channel; the choice, the ward, the voter
    key and the receipt stay) and blanks the person's ideas."""
    services, client = bot
    async with services.sessions() as session, session.begin():
        await add_round(session, now=clock.now(), ballot={"type": "ranked", "top": 3})
        await add_round(session, now=clock.now(), round_id="ideas", proposals=True)
    sms = Resident(client, "sms", "+447700900011")
    await sms.join()
    await sms.say("VOTE")
    await sms.say("3 1")
    [cast] = await sms.say("YES")
    await sms.say("IDEA")
    await sms.say("A mural")
    await sms.say("On the library wall")
    [before] = await ballots(services)
    assert before.contact_id is not None
    await sms.say("FORGET")
    await sms.say("YES")
    [after] = await ballots(services)
    assert after.contact_id is None and after.channel is None
    assert (after.vote, after.voter_key, after.ward_code, after.receipt) == (
        ["riv3", "riv1"],
        before.voter_key,
        "DEMO-CATHAYS",
        receipt(cast),
    )
    async with services.sessions() as session:
        [idea] = (await session.execute(select(PbProposal))).scalars().all()
    assert (idea.contact_id, idea.title, idea.content, idea.round_id) == (None, "", "", "ideas")
    # the same phone starts afresh: a new contact, and may vote again in the round
    await sms.join()
    [question] = await sms.say("VOTE")
    assert not question.startswith("You have voted")
