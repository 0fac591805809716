"""What residents meet: out of scope, no ward, closed, nothing open; answering again (the
latest answer counts, "about you" asked once); a later "about you" change leaves earlier
responses as they were; hostile free text stored as text; Welsh."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from bot.clock import FixedClock
from bot.services import Services
from storage.needs import NeedsResponse
from tests.needs.support import join, say, set_up


async def responses(services: Services) -> list[NeedsResponse]:
    async with services.sessions() as session:
        query = select(NeedsResponse).order_by(NeedsResponse.id)  # type: ignore[arg-type]
        return list((await session.execute(query)).scalars())


async def test_outside_no_ward_closed_and_nothing_open(
    sqlite_bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, client = sqlite_bot
    assert (await say(client, "early", *join("DEMO-CATHAYS"), "NEEDS"))[-1].startswith(
        "There's no needs survey open right now."
    )
    await set_up(services, wards="[DEMO-CATHAYS, DEMO-GABALFA]")
    assert (await say(client, "splott", *join("DEMO-SPLOTT"), "NEEDS"))[-1] == (
        "Sorry, What should our area fix first? is only for residents of Cathays, Gabalfa, "
        "and your ward isn't one of them."
    )
    nowhere = await say(client, "nowhere", "HI", "1", "1", "CF99 9ZZ", "2", "NEEDS")
    assert nowhere[-1].startswith("What should our area fix first?: to take part we need")
    assert (await say(client, "early", "NEEDS"))[-1].startswith("What should our area fix")
    await services.needs.close("spring-2027", actor="test")  # closed while they answer
    closed = await say(client, "early", "1", "SKIP")
    assert closed[-1].startswith("What should our area fix first? closed on 05/01/2026 09:00")
    clock.advance(days=200)
    assert (await say(client, "late", *join("DEMO-CATHAYS"), "NEEDS"))[-1] == (
        "What should our area fix first? closed on 05/01/2026 09:00. Thank you to everyone "
        "who took part."
    )
    assert await responses(services) == []


async def test_the_latest_answer_counts_and_about_you_is_asked_once(
    sqlite_bot: tuple[Services, httpx.AsyncClient],
) -> None:
    services, client = sqlite_bot
    ident = await set_up(services)
    await say(client, "a", *join("DEMO-RIVERSIDE"), "NEEDS", "1 2", "SKIP", "1", "1", "3", "2")
    again = await say(client, "a", "NEEDS", "3", "Buses please")
    assert again[-1].startswith("Thank you, your priorities are in. You can change them until")
    [row] = await responses(services)
    assert row.picks == ["parks"] and row.free_text == "Buses please"
    assert row.demographics == {
        "age_band": "16-24",
        "disability": "prefer_not_to_say",
        "ethnic_group": "Black, Black British, Black Welsh, Caribbean or African",
    }
    report = await services.needs.report(ident)
    scores = {n["category"]: n["score"] for n in report["needs"]}
    assert report["responses"] == 1 and scores["parks"] == 3 and scores["youth"] == 0


async def test_a_later_change_does_not_rewrite_earlier_responses(
    sqlite_bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, client = sqlite_bot
    first = await set_up(services, about_you="[age_band]")
    await say(client, "b", *join("DEMO-SPLOTT"), "NEEDS", "1", "SKIP", "1", "1")
    changed = await say(client, "b", "ABOUT ME", "2", "3", "4")
    assert changed[-1].startswith("Thank you. Your answers count for the surveys you answer")
    await services.needs.define(
        (await _yaml("autumn", "2026-01-05T09:30:00Z")), announce=False, actor="test"
    )
    clock.advance(minutes=40)
    await say(client, "b", "NEEDS", "2", "SKIP")  # about you is known: not asked again
    by_assessment = {r.assessment_id: r.demographics for r in await responses(services)}
    assert by_assessment == {
        first: {"age_band": "16-24"},
        "autumn": {"age_band": "25-44", "disability": "prefer_not_to_say"},
    }


async def _yaml(ident: str, opens_at: str) -> str:
    from tests.needs.support import assessment_yaml

    return assessment_yaml(ident, opens_at=opens_at, about_you="[age_band, disability]")


async def test_hostile_free_text_is_stored_as_text(
    sqlite_bot: tuple[Services, httpx.AsyncClient],
) -> None:
    services, client = sqlite_bot
    await set_up(services)
    await say(client, "h", *join("DEMO-BUTETOWN"), "NEEDS", "5 4 3")
    too_long = await say(client, "h", "x" * 501)
    assert too_long[0].startswith("Sorry, that's too long. Please keep it under 500 characters.")
    hostile = "{title} {picks} '); DROP TABLE needs_responses; -- <script>alert(1)</script>"
    done = await say(client, "h", hostile, "2")
    assert done[-1].startswith("No problem, we won't ask.")
    [row] = await responses(services)
    assert row.free_text == hostile and row.picks == ["housing", "buses", "parks"]


async def test_in_welsh(sqlite_bot: tuple[Services, httpx.AsyncClient]) -> None:
    services, client = sqlite_bot
    await set_up(services)
    asked = await say(client, "cy", *join("DEMO-SPLOTT", language="2"), "ANGHENION")
    assert asked[-1].startswith(
        "Beth ddylai ein hardal ei drwsio gyntaf?\nPa rai o'r rhain sydd bwysicaf i chi?"
    )
    assert "1 Clybiau ieuenctid" in asked[-1] and "Atebwch gyda hyd at 3 rhif" in asked[-1]
    consent = await say(client, "cy", "2 2 9", "2 1", "HEPGOR")
    assert consent[0].startswith("Mae'n ddrwg gen i, nid yw 9 ar y rhestr")
    assert consent[-1].startswith("Diolch, mae eich blaenoriaethau i mewn.")
    disability = await say(client, "cy", "1", "5")
    assert "1 Anabl o dan y Ddeddf Cydraddoldeb" in disability[-1]  # a long question: paged
    assert "3 Gwell gen i beidio â dweud" in (await say(client, "cy", "MWY"))[-1]
    [row] = await responses(services)
    assert row.picks == ["care", "youth"] and row.free_text is None
