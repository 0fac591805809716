"""A round's life: a draft can change; once voting opens the rules are locked (only a later
voting_close, with a reason, audited and announced); the scheduler opens and closes rounds at
their phase times across restarts, once; close freezes ballots and stores the results in one
transaction; each announcement reaches residents in scope once, in their language."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from bot.app import build_app
from bot.clock import FixedClock
from bot.scheduler import build_scheduler
from bot.services import Services, build_services
from flows.needs.definition import DefinitionError
from flows.rounds.service import LOCKED, RoundError
from storage.db import upgrade
from storage.groups import assign_group, record_group
from storage.models import AuditLog
from storage.pb_rounds import PbProject, PbProposal, RoundStatus
from tests.conftest import load_demo_wards, make_settings
from tests.rounds.pbcore_support import PROJECTS, bulk_to, cast, contact_of, resident, round_yaml
from tests.telegram.conftest import TelegramBot, fake_api, tg  # noqa: F401, F811 (fixtures)

OPEN = datetime(2026, 2, 1, 9, tzinfo=UTC)


async def audit_actions(services: Services) -> list[str]:
    async with services.sessions() as session:
        rows = (await session.execute(select(AuditLog).order_by(AuditLog.id))).scalars()  # type: ignore[arg-type]
        return [r.action for r in rows if r.action.startswith("pb_")]


async def test_a_draft_changes_until_voting_opens_then_the_rules_are_locked(
    bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, client = bot
    rounds = services.rounds
    await resident(client, "cathays", "DEMO-CATHAYS")
    await resident(client, "splott-cy", "DEMO-SPLOTT", welsh=True)
    await resident(client, "elsewhere", "DEMO-GABALFA")
    scope = "[DEMO-CATHAYS, DEMO-SPLOTT]"
    row = await rounds.create(round_yaml(wards=scope), actor="test")
    assert row.status == RoundStatus.DRAFT
    with pytest.raises(RoundError, match="exists already"):
        await rounds.create(round_yaml(wards=scope), actor="test")
    # before voting opens: anything may change
    row, done = await rounds.update(
        row.id, round_yaml(wards=scope, budget=70000, rule="greedy"), actor="test"
    )
    assert (done, row.budget, row.rule) == ("updated", 70000, "greedy")
    with pytest.raises(DefinitionError):
        await rounds.update(row.id, round_yaml(wards=scope, budget=0), actor="test")
    with pytest.raises(RoundError, match="the file is for round 'other'"):
        await rounds.update(row.id, round_yaml("other", wards=scope), actor="test")

    clock.current = OPEN
    assert await rounds.run_due() == (1, 0)
    before = await rounds.show(row.id)
    assert before["status"] == "voting"
    # the invitation went to residents in scope, in their language, and to nobody else
    assert any("Reply VOTE" in t for t in await bulk_to(services, "cathays"))
    assert any("Atebwch PLEIDLAIS" in t for t in await bulk_to(services, "splott-cy"))
    assert await bulk_to(services, "elsewhere") == []

    locked = round_yaml(wards=scope, budget=70000, rule="greedy")
    for change in (
        locked.replace("budget: 70000", "budget: 90000"),
        locked.replace("rule: greedy", "rule: mes"),
        locked.replace("max: 3", "max: 2"),
        locked.replace("cost: 9000", "cost: 9500"),
        locked.replace(scope, "all"),
        locked.replace("verification: none", "verification: phone"),
        # a later close together with another change is refused whole
        locked.replace("budget: 70000", "budget: 90000").replace("02-28", "03-07"),
    ):
        with pytest.raises(RoundError, match=LOCKED):
            await rounds.update(row.id, change, actor="test", reason="because")
    assert await rounds.show(row.id) == before
    with pytest.raises(RoundError, match="may only move later"):
        await rounds.update(row.id, locked.replace("02-28", "02-20"), actor="t", reason="x")
    later = locked.replace("02-28", "03-07")
    with pytest.raises(RoundError, match="needs --reason"):
        await rounds.update(row.id, later, actor="test")
    assert await rounds.show(row.id) == before
    row, done = await rounds.update(
        row.id, later, actor="test", reason="the library was closed for a week"
    )
    assert row.voting_close == datetime(2026, 3, 7, 21, tzinfo=UTC)
    assert "voting now closes 07/03/2026 21:00" in done
    assert any("the library was closed for a week" in t for t in await bulk_to(services, "cathays"))
    actions = await audit_actions(services)
    assert actions == [
        "pb_round_created",
        "pb_round_updated",
        "pb_round_opened",
        "pb_round_voting_close_moved",
    ]


async def test_the_scheduler_opens_and_closes_on_time_across_a_restart(
    database_url: str, clock: FixedClock
) -> None:
    settings = make_settings(database_url, run_scheduler=False, simulator_per_minute=100_000)
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    await load_demo_wards(services)
    assert "pb_rounds_open_close_due" in {job.id for job in build_scheduler(services).get_jobs()}
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await resident(client, "a", "DEMO-CATHAYS")
        await resident(client, "b", "DEMO-SPLOTT", welsh=True)
    await services.rounds.create(round_yaml(), actor="test")
    assert await services.rounds.run_due() == (0, 0)
    clock.current = OPEN
    await services.close()

    services = build_services(settings, clock=clock)  # a restart: nothing kept in memory
    assert await services.rounds.run_due() == (1, 0)
    assert await services.rounds.run_due() == (0, 0)  # once
    invitations = await bulk_to(services, "a")
    assert len(invitations) == 1
    a, b = await contact_of(services, "a"), await contact_of(services, "b")
    await cast(services, "riverside-2027", a, ["1", "2"], now=OPEN)
    await cast(services, "riverside-2027", b, ["2", "5"], now=OPEN)
    clock.current = datetime(2026, 2, 28, 21, tzinfo=UTC)
    await services.close()

    services = build_services(settings, clock=clock)
    assert await services.rounds.run_due() == (0, 1)
    assert await services.rounds.run_due() == (0, 0)
    row = await services.rounds.get("riverside-2027")
    assert row.status == RoundStatus.CLOSED and row.closed_at == clock.current
    assert row.voting_close == clock.current and row.announced == ["results", "voting"]
    results = await services.rounds.results("riverside-2027")
    assert results["voters"] == 2 and results["selected"] == ["1", "2", "5"]
    # each voter's result once, in their language
    [result_a] = [t for t in await bulk_to(services, "a") if "Results" in t]
    assert "funded 1 Benches, 2 Trees, 5 Bike racks" in result_a
    [result_b] = [t for t in await bulk_to(services, "b") if "Canlyniadau" in t]
    assert "1 Meinciau, 2 Coed, 5 Raciau beiciau" in result_b
    await services.close()


async def test_close_is_refused_before_voting_and_after_close_and_changes_nothing(
    bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, _ = bot
    rounds = services.rounds
    await rounds.create(round_yaml(), actor="test")
    with pytest.raises(RoundError, match="has not opened; nothing to close"):
        await rounds.close("riverside-2027", actor="test")
    with pytest.raises(RoundError, match="has not closed"):
        await rounds.results("riverside-2027")
    with pytest.raises(RoundError, match="can't be exported yet"):
        await rounds.export("riverside-2027")
    with pytest.raises(RoundError, match="no PB round 'nope'"):
        await rounds.open("nope", actor="test")
    # a facilitator opens it early: voting_open becomes now, so ballots can be cast now
    row = await rounds.open("riverside-2027", actor="test")
    assert row.status == RoundStatus.VOTING and row.voting_open == clock.now()
    with pytest.raises(RoundError, match="voting has opened already"):
        await rounds.open("riverside-2027", actor="test")
    with pytest.raises(RoundError, match=LOCKED):
        await rounds.update("riverside-2027", round_yaml(budget=61000), actor="t", reason="x")
    row = await rounds.close("riverside-2027", actor="test")
    assert row.status == RoundStatus.CLOSED and row.voting_close == clock.now()
    assert row.results is not None and row.results["voters"] == 0
    with pytest.raises(RoundError, match="has closed already"):
        await rounds.close("riverside-2027", actor="test")
    with pytest.raises(RoundError, match="has closed"):
        await rounds.update("riverside-2027", round_yaml(), actor="test")


async def test_ideas_are_announced_listed_and_accepted_before_voting(
    bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, client = bot
    rounds = services.rounds
    await resident(client, "ideas", "DEMO-CATHAYS", welsh=True)
    ideas = 'proposals_open: "2026-01-05T09:00Z", proposals_close: "2026-01-20T09:00Z", '
    await rounds.create(round_yaml(proposals=ideas), actor="test")
    assert await rounds.announce() == 1
    assert await rounds.announce() == 0
    assert any("Atebwch SYNIAD" in t for t in await bulk_to(services, "ideas"))
    contact = await contact_of(services, "ideas")
    async with services.sessions() as session, session.begin():  # as the ideas chat stores one
        session.add(
            PbProposal(
                round_id="riverside-2027",
                contact_id=contact,
                ward_code="DEMO-CATHAYS",
                title="Skate park",
                content="By the river, for teenagers",
                created_at=clock.now(),
            )
        )
    [proposal] = await rounds.proposals("riverside-2027")
    assert proposal.id is not None
    with pytest.raises(RoundError, match="more than the budget"):
        await rounds.accept_proposal(
            "riverside-2027", proposal.id, cost=10**6, project_id="6", actor="t"
        )
    with pytest.raises(RoundError, match="has a project '1' already"):
        await rounds.accept_proposal(
            "riverside-2027", proposal.id, cost=5000, project_id="1", actor="t"
        )
    with pytest.raises(RoundError, match="no idea 99"):
        await rounds.accept_proposal("riverside-2027", 99, cost=5000, project_id="6", actor="t")
    project = await rounds.accept_proposal(
        "riverside-2027", proposal.id, cost=15000, project_id="6", actor="test"
    )
    assert project.position == 6 and project.proposal_id == proposal.id
    assert any('"Skate park" nawr yn brosiect 6' in t for t in await bulk_to(services, "ideas"))
    with pytest.raises(RoundError, match="is project 6 already"):
        await rounds.accept_proposal(
            "riverside-2027", proposal.id, cost=15000, project_id="7", actor="t"
        )
    # the accepted idea is on the ballot, last
    shown = await rounds.show("riverside-2027")
    assert [p["id"] for p in shown["projects"]] == ["1", "2", "3", "4", "5", "6"]
    # updating the draft from a file without the idea's project is refused; with it, kept
    with pytest.raises(RoundError, match="project 6 came from idea"):
        await rounds.update("riverside-2027", round_yaml(proposals=ideas), actor="test")
    with_idea = round_yaml(
        proposals=ideas, projects=[*PROJECTS, ("6", "Skate park", "Parc sglefrio", 15000)]
    )
    await rounds.update("riverside-2027", with_idea, actor="test")
    async with services.sessions() as session:
        kept = await session.get(PbProject, ("riverside-2027", "6"))
    assert kept is not None and kept.proposal_id == proposal.id
    clock.current = OPEN
    await rounds.run_due()
    [other] = [await _new_idea(services, contact, clock)]
    with pytest.raises(RoundError, match=LOCKED):
        await rounds.accept_proposal("riverside-2027", other, cost=100, project_id="7", actor="t")


async def _new_idea(services: Services, contact: int, clock: FixedClock) -> int:
    async with services.sessions() as session, session.begin():
        row = PbProposal(
            round_id="riverside-2027", contact_id=contact, title="Late idea", created_at=clock.now()
        )
        session.add(row)
        await session.flush()
        assert row.id is not None
        return row.id


async def test_groups_in_scope_get_the_phase_announcements_and_the_result(
    tg: TelegramBot,  # noqa: F811 (the fixture imported above)
) -> None:
    services, clock = tg.services, tg.clock
    await load_demo_wards(services)
    async with services.sessions() as session, session.begin():
        for chat, ward in (("-1001", "DEMO-CATHAYS"), ("-1002", "DEMO-GABALFA")):
            await record_group(
                session,
                chat_id=chat,
                title=f"{ward} residents",
                kind="supergroup",
                active=True,
                now=clock.now(),
            )
            await assign_group(session, chat_id=chat, ward_code=ward, now=clock.now())
    ideas = 'proposals_open: "2026-01-05T09:00Z", proposals_close: "2026-01-20T09:00Z", '
    await services.rounds.create(
        round_yaml(wards="[DEMO-CATHAYS]", proposals=ideas, rule="greedy"), actor="test"
    )
    await services.rounds.run_due()
    clock.current = OPEN
    await services.rounds.run_due()
    await cast(services, "riverside-2027", None, ["1", "2"], now=OPEN)
    await services.rounds.close("riverside-2027", actor="test")
    posts = await bulk_to(services, "-1001")
    assert len(posts) == 3
    ideas_post, invite, result = posts
    assert "Reply IDEA" in ideas_post and "Atebwch SYNIAD" in ideas_post
    assert "Reply VOTE" in invite and "Atebwch PLEIDLAIS" in invite
    assert "funded 1 Benches, 2 Trees" in result and "ariannwyd 1 Meinciau, 2 Coed" in result
    assert await bulk_to(services, "-1002") == []  # a group outside the round's wards


async def test_concurrent_closes_close_once(
    bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, _ = bot
    await services.rounds.create(round_yaml(), actor="test")
    clock.current = OPEN
    await services.rounds.run_due()
    for vote in (["1", "2"], ["2", "3"], ["5"]):
        await cast(services, "riverside-2027", None, vote, now=OPEN)
    clock.current = datetime(2026, 2, 28, 21, tzinfo=UTC)

    async def close() -> str:
        try:
            await services.rounds.close("riverside-2027", actor="facilitator")
        except RoundError as exc:
            return str(exc)
        return "closed"

    outcomes = await asyncio.gather(close(), close(), services.rounds.run_due())
    closes = [o for o in outcomes[:2] if o == "closed"] + ([1] if outcomes[2] == (0, 1) else [])
    assert len(closes) == 1, outcomes
    assert (await audit_actions(services)).count("pb_round_closed") == 1
    results = await services.rounds.results("riverside-2027")
    assert results["voters"] == 3


async def test_a_round_the_scheduler_missed_is_opened_and_closed_on_its_next_run(
    bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, _ = bot
    await services.rounds.create(round_yaml(), actor="test")
    clock.current = datetime(2026, 3, 1, tzinfo=UTC)  # after voting_close: nobody opened it
    with pytest.raises(RoundError, match="has passed: update the round"):
        await services.rounds.open("riverside-2027", actor="facilitator")
    assert await services.rounds.run_due() == (1, 1)
    row = await services.rounds.get("riverside-2027")
    assert row.status == RoundStatus.CLOSED and row.results is not None
    assert row.announced == ["results"]  # no invitation to a vote that has closed


async def test_results_not_sent_at_close_are_sent_by_the_next_scheduler_run(
    bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, client = bot
    await resident(client, "voter", "DEMO-CATHAYS")
    await services.rounds.create(round_yaml(), actor="test")
    clock.current = OPEN
    await services.rounds.run_due()
    await cast(services, "riverside-2027", await contact_of(services, "voter"), ["1"], now=OPEN)
    # as if the close's process stopped after committing, before sending anything
    await services.rounds.close("riverside-2027", actor="test", announce=False)
    assert not any(t.startswith("Results") for t in await bulk_to(services, "voter"))
    assert await services.rounds.run_due() == (0, 0)
    assert [t for t in await bulk_to(services, "voter") if t.startswith("Results")]
    assert await services.rounds.announce() == 0
