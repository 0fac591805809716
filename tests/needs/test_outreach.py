"""Done when: ``needs remind --dry-run`` and the real run agree; a second run sends nothing
new; nobody opted out receives anything. And: FORGET removes a respondent's demographics
and free text, while their ranked picks stay counted, detached from them."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from bot.cli import app as cli
from bot.services import Services
from storage.models import Answer, OutboundMessage, Priority
from storage.needs import NeedsProfile, NeedsProfileAnswer, NeedsResponse
from tests.needs.support import API, join, say, set_up
from tests.support import dump_database


def civicbot(url: str, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"CIVICBOT_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    return result.stdout


async def invitations(services: Services) -> dict[str | None, int]:
    async with services.sessions() as session:
        query = select(OutboundMessage).where(OutboundMessage.priority == Priority.BULK)  # type: ignore[arg-type]
        rows = (await session.execute(query)).scalars().all()
    found: dict[str | None, int] = {}
    for row in rows:
        found[row.address] = found.get(row.address, 0) + 1
    return found


async def test_remind_reaches_under_represented_non_respondents_once(
    bot: tuple[Services, httpx.AsyncClient], database_url: str
) -> None:
    services, client = bot
    ident = await set_up(services, closes_at="2099-12-31T21:00:00Z")
    # Four Cathays residents answer, all aged 25-44: Cathays is over-represented and the
    # other age bands are under-represented.
    for i in range(4):
        answers = ("NEEDS", "1 2", "SKIP", "1", "2", "3", "4")
        await say(client, f"r{i}", *join("DEMO-CATHAYS"), *answers)
    await say(client, "splott", *join("DEMO-SPLOTT"))  # an under-represented ward
    await say(client, "stopped", *join("DEMO-BUTETOWN"), "STOP")  # opted out
    await say(client, "cathays-65", *join("DEMO-CATHAYS"), "ABOUT ME", "1", "4", "3", "6")
    await say(client, "cathays-quiet", *join("DEMO-CATHAYS"))  # nothing known: not targeted
    await say(client, "undecided", "HI")  # never consented

    dry = await asyncio.to_thread(
        civicbot, database_url, "needs", "remind", ident, "--under-represented", "--dry-run"
    )
    assert "recipients: 2" in dry and "dry run: nothing was sent" in dry
    assert "DEMO-SPLOTT (under-represented)" in dry and "DEMO-CATHAYS " in dry
    assert "age_band=65+" in dry
    assert "estimated cost: 0.00 GBP" in dry  # simulated SMS costs nothing
    assert await invitations(services) == {}

    real = await asyncio.to_thread(
        civicbot, database_url, "needs", "remind", ident, "--under-represented"
    )
    assert "recipients: 2" in real and "invited 2 resident(s)" in real
    assert await invitations(services) == {"splott": 1, "cathays-65": 1}
    thread = (await client.get(API, params={"channel": "sms", "address": "splott"})).json()
    assert "Which of these matter most to you?" in thread["messages"][-1]["text"]

    again = await asyncio.to_thread(
        civicbot, database_url, "needs", "remind", ident, "--under-represented"
    )
    assert "nothing sent: nobody new to remind" in again
    dry_again = await asyncio.to_thread(
        civicbot, database_url, "needs", "remind", ident, "--under-represented", "--dry-run"
    )
    assert "recipients: 0" in dry_again
    assert await invitations(services) == {"splott": 1, "cathays-65": 1}

    # The invited resident answers from the invitation itself.
    replies = await say(client, "splott", "3 1", "SKIP", "2")
    assert replies[-1].startswith("No problem, we won't ask")
    report = await services.needs.report(ident)
    assert report["responses"] == 5


async def test_forget_erases_demographics_and_free_text_but_the_picks_stay_counted(
    bot: tuple[Services, httpx.AsyncClient],
) -> None:
    services, client = bot
    ident = await set_up(services)
    free_text = "Our street floods every winter, 14 Example Road"
    await say(client, "keep", *join("DEMO-SPLOTT"), "NEEDS", "2", "SKIP", "2")
    await say(
        client, "forget", *join("DEMO-CATHAYS"), "NEEDS", "4 1", free_text, "1", "1", "1", "2"
    )
    before = await services.needs.report(ident)
    assert before["responses"] == 2
    async with services.sessions() as session:
        mine = (await session.execute(select(NeedsResponse))).scalars().all()
    assert {r.free_text for r in mine} == {None, free_text}

    assert (await say(client, "forget", "FORGET", "YES"))[-1].startswith("Done")

    after = await services.needs.report(ident)
    assert after["responses"] == 2  # still counted
    scores = {n["category"]: n["score"] for n in after["needs"]}
    assert scores == {n["category"]: n["score"] for n in before["needs"]}
    assert scores["buses"] == 3 and scores["youth"] == 2 and scores["care"] == 3
    age = {g["group"]: g["responses"] for g in after["groups"] if g["dimension"] == "age_band"}
    assert sum(age.values()) == 0  # their "about you" answers are gone
    async with services.sessions() as session:
        rows = (await session.execute(select(NeedsResponse))).scalars().all()
        detached = [r for r in rows if r.contact_id is None]
        assert len(detached) == 1
        assert detached[0].picks == ["buses", "youth"]
        assert detached[0].free_text is None and detached[0].demographics is None
        assert detached[0].respondent_key is None and detached[0].ward_code == "DEMO-CATHAYS"
        assert (await session.execute(select(NeedsProfileAnswer))).scalars().all() == []
        profiles = (await session.execute(select(NeedsProfile))).scalars().all()
        assert len(profiles) == 1 and profiles[0].declined_at is not None  # the other one
        answers = (await session.execute(select(Answer))).scalars().all()
        kept = [a for a in answers if a.contact_id is None]  # the forgotten person's
        assert kept and not [a for a in kept if a.key in ("about_answer", "free_text")]
    dump = await dump_database(services.sessions)
    assert free_text not in dump
    assert "Example Road" not in dump
