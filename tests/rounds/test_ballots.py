"""Ballot checking for each ballot type (pure), and casting: one ballot per (round, contact)
on SQLite and PostgreSQL, replaced on a re-vote with its voter key kept, refused after the
close, and one ballot left by two casts for one person at once (PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bot.clock import FixedClock
from bot.services import Services
from flows.rounds.ballots import (
    RECEIPT_ALPHABET,
    Ballot,
    Code,
    Problem,
    RoundClosed,
    Rules,
    ballot_of,
    cast_ballot,
    check_ids,
    parse_ballot,
)
from storage.pb_rounds import PbBallot, PbProject, PbRound, RoundStatus
from tests.rounds.vote_support import add_contact, add_round

PROJECTS = [
    PbProject(round_id="r", id=f"p{k}", position=k, cost=cost, title={"en": f"P{k}"})
    for k, cost in enumerate((9_000, 12_000, 20_000, 16_000, 8_000, 30_000), start=1)
]
APPROVAL = Rules("approval", least=1, most=3)
KNAPSACK = Rules("knapsack", least=1, most=None, budget=50_000)
RANKED = Rules("ranked", least=1, most=3)
CUMULATIVE = Rules("cumulative", least=1, most=None, points=10)


def code(result: Ballot | Problem) -> str:
    assert isinstance(result, Problem), result
    return result.code.value


def test_approval_takes_numbers_in_the_order_given() -> None:
    ballot = parse_ballot("2 5, 1", APPROVAL, PROJECTS)
    assert ballot == Ballot((1, 2, 5))  # stored in ballot order
    assert isinstance(ballot, Ballot)
    assert ballot.vote(PROJECTS) == ["p1", "p2", "p5"]
    assert parse_ballot("2 and 5", APPROVAL, PROJECTS) == Ballot((2, 5))


@pytest.mark.parametrize(
    ("text", "expected", "values"),
    [
        ("", "empty", {}),
        ("   ", "empty", {}),
        ("YES", "nothing_chosen", {}),
        ("ie", "nothing_chosen", {}),
        ("2 7", "not_on_list", {"item": 7, "count": 6}),
        ("0", "not_on_list", {"item": 0, "count": 6}),
        ("2 2", "repeated", {"item": 2}),
        ("2 park 5", "not_numbers", {"item": "park"}),
        ("two", "not_numbers", {"item": "two"}),
        ("1 2 3 4", "too_many", {"max": 3}),
        ("²", "not_numbers", {"item": "²"}),
    ],
)
def test_approval_problems(text: str, expected: str, values: dict[str, object]) -> None:
    result = parse_ballot(text, APPROVAL, PROJECTS)
    assert code(result) == expected
    assert isinstance(result, Problem) and result.values == values
    assert result.key == f"pb_problem_{expected}"


def test_too_few() -> None:
    rules = Rules("approval", least=2, most=3)
    assert code(parse_ballot("4", rules, PROJECTS)) == "too_few"


def test_knapsack_within_budget_and_by_how_much_over() -> None:
    assert parse_ballot("1 2 3", KNAPSACK, PROJECTS) == Ballot((1, 2, 3))  # 41,000
    over = parse_ballot("3 6 1", KNAPSACK, PROJECTS)  # 59,000
    assert isinstance(over, Problem) and over.code is Code.OVER_BUDGET
    assert over.values == {"total": 59_000, "budget": 50_000, "over": 9_000}
    exactly = Rules("knapsack", budget=41_000)
    assert parse_ballot("1 2 3", exactly, PROJECTS) == Ballot((1, 2, 3))


def test_ranked_keeps_the_order_up_to_top() -> None:
    assert parse_ballot("5 1 3", RANKED, PROJECTS) == Ballot((5, 1, 3))
    assert code(parse_ballot("5 1 3 2", RANKED, PROJECTS)) == "too_many"
    assert code(parse_ballot("5 5", RANKED, PROJECTS)) == "repeated"


def test_cumulative_points_form() -> None:
    ballot = parse_ballot("2x3 5x7", CUMULATIVE, PROJECTS)
    assert ballot == Ballot((2, 5), (3, 7))
    assert parse_ballot("2:3, 5 x 2", CUMULATIVE, PROJECTS) == Ballot((2, 5), (3, 2))
    assert parse_ballot("5x1 2x4", CUMULATIVE, PROJECTS) == Ballot((2, 5), (4, 1))
    assert parse_ballot("4X10", CUMULATIVE, PROJECTS) == Ballot((4,), (10,))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 5", "points_form"),
        ("2x", "points_form"),
        ("2x3 park", "not_numbers"),
        ("2x3 2x4", "repeated"),
        ("9x3", "not_on_list"),
        ("2x0", "points_zero"),
        ("2x6 5x5", "points_over"),
        ("YES", "nothing_chosen"),
        ("", "empty"),
    ],
)
def test_cumulative_problems(text: str, expected: str) -> None:
    assert code(parse_ballot(text, CUMULATIVE, PROJECTS)) == expected


def test_selection_by_ids_checked_the_same_way() -> None:
    assert check_ids(["p3", "p1"], RANKED, PROJECTS) == Ballot((3, 1))
    assert check_ids(["p3", "p1"], APPROVAL, PROJECTS) == Ballot((1, 3))
    assert code(check_ids([], APPROVAL, PROJECTS)) == "nothing_chosen"
    assert code(check_ids(["p9"], APPROVAL, PROJECTS)) == "not_on_list"
    assert code(check_ids(["p6", "p3", "p1"], KNAPSACK, PROJECTS)) == "over_budget"


def test_rules_from_a_round() -> None:
    def rules(ballot: dict[str, object]) -> Rules:
        round_ = PbRound(id="r", budget=50_000, ballot=ballot, rule="greedy")
        return Rules.of(round_)

    assert rules({"type": "approval", "min": 1, "max": 3}) == APPROVAL
    assert rules({"type": "knapsack"}) == KNAPSACK
    assert rules({"type": "ranked", "top": 3}) == RANKED
    assert rules({"type": "cumulative", "points": 10}) == CUMULATIVE
    with pytest.raises(ValueError, match="unknown ballot type"):
        rules({"type": "borda"})


# ---- casting --------------------------------------------------------------------------------


async def test_cast_inserts_then_replaces_keeping_the_voter_key(
    any_services: Services, clock: FixedClock
) -> None:
    now = clock.now()
    async with any_services.sessions() as session, session.begin():
        round_ = await add_round(session, now=now)
        contact = await add_contact(session, now=now)
        first = await cast_ballot(
            session,
            round=round_,
            contact=contact,
            vote=["riv1"],
            points=None,
            channel="sms",
            now=now,
        )
    assert not first.replaced
    assert len(first.receipt) == 6 and set(first.receipt) <= set(RECEIPT_ALPHABET)
    async with any_services.sessions() as session, session.begin():
        second = await cast_ballot(
            session,
            round="riverside-2027",
            contact=contact,
            vote=["riv2", "riv5"],
            points=None,
            channel="telegram",
            now=now + timedelta(minutes=5),
        )
    assert second.replaced and second.voter_key == first.voter_key
    async with any_services.sessions() as session:
        assert contact.id is not None
        stored = await ballot_of(session, round_id="riverside-2027", contact_id=contact.id)
        count = await session.scalar(select(func.count()).select_from(PbBallot))
    assert count == 1 and stored is not None
    assert stored.vote == ["riv2", "riv5"] and stored.points is None
    assert stored.voter_key == first.voter_key and stored.receipt == second.receipt
    assert stored.channel == "telegram" and stored.ward_code == "DEMO-CATHAYS"


async def test_cumulative_points_stored(any_services: Services, clock: FixedClock) -> None:
    now = clock.now()
    async with any_services.sessions() as session, session.begin():
        round_ = await add_round(session, now=now, ballot={"type": "cumulative", "points": 10})
        contact = await add_contact(session, now=now)
        await cast_ballot(
            session,
            round=round_,
            contact=contact,
            vote=["riv2", "riv5"],
            points=[3, 7],
            channel="sms",
            now=now,
        )
    async with any_services.sessions() as session:
        assert contact.id is not None
        stored = await ballot_of(session, round_id=round_.id, contact_id=contact.id)
    assert stored is not None and stored.vote == ["riv2", "riv5"] and stored.points == [3, 7]


@pytest.mark.parametrize("when", ["closed", "after_close", "not_open", "draft"])
async def test_no_ballot_outside_voting(
    any_services: Services, clock: FixedClock, when: str
) -> None:
    now = clock.now()
    async with any_services.sessions() as session, session.begin():
        round_ = await add_round(session, now=now)
        contact = await add_contact(session, now=now)
        if when == "closed":
            round_.status = RoundStatus.CLOSED
        elif when == "draft":
            round_.status = RoundStatus.DRAFT
    at = {
        "after_close": round_.voting_close,
        "not_open": round_.voting_open - timedelta(seconds=1),
    }.get(when, now)
    async with any_services.sessions() as session, session.begin():
        with pytest.raises(RoundClosed):
            await cast_ballot(
                session,
                round=round_.id,
                contact=contact,
                vote=["riv1"],
                points=None,
                channel="sms",
                now=at,
            )
    async with any_services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(PbBallot)) == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_concurrent_casts_for_one_contact_leave_one_ballot(
    any_services: Services, clock: FixedClock
) -> None:
    """Two sessions cast for one contact at once: the second waits on the first's row and
    replaces it when the first commits; one ballot, one voter key, the later vote."""
    now = clock.now()
    async with any_services.sessions() as session, session.begin():
        round_ = await add_round(session, now=now)
        contact = await add_contact(session, now=now)
    first_session = any_services.sessions()
    second_session = any_services.sessions()
    try:
        await first_session.begin()
        first = await cast_ballot(
            first_session,
            round=round_.id,
            contact=contact,
            vote=["riv1"],
            points=None,
            channel="sms",
            now=now,
        )

        async def second_cast() -> bool:
            async with second_session.begin():
                cast = await cast_ballot(
                    second_session,
                    round=round_.id,
                    contact=contact,
                    vote=["riv3"],
                    points=None,
                    channel="telegram",
                    now=now,
                )
            return cast.replaced

        task = asyncio.create_task(second_cast())
        await asyncio.sleep(0.3)  # let the second reach the conflicting row (no assertion on time)
        await first_session.commit()
        replaced = await task
    finally:
        await first_session.close()
        await second_session.close()
    assert not first.replaced and replaced
    async with any_services.sessions() as session:
        rows = (await session.execute(select(PbBallot))).scalars().all()
    assert [(b.vote, b.voter_key) for b in rows] == [(["riv3"], first.voter_key)]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_close_waits_for_a_cast_in_progress(
    any_services: Services, clock: FixedClock
) -> None:
    """A close (an update of the round row) waits for a cast holding the round's shared
    lock; once the close is committed a cast is refused."""
    now = clock.now()
    async with any_services.sessions() as session, session.begin():
        round_ = await add_round(session, now=now)
        contact = await add_contact(session, now=now)
        late = await add_contact(session, now=now)
    casting = any_services.sessions()
    closing = any_services.sessions()
    try:
        await casting.begin()
        await cast_ballot(
            casting,
            round=round_.id,
            contact=contact,
            vote=["riv1"],
            points=None,
            channel="sms",
            now=now,
        )

        async def close() -> int:
            async with closing.begin():
                await closing.execute(
                    update(PbRound)
                    .where(PbRound.id == round_.id)  # type: ignore[arg-type]
                    .values(status=RoundStatus.CLOSED)
                )
                return int(await closing.scalar(select(func.count()).select_from(PbBallot)) or 0)

        task = asyncio.create_task(close())
        await asyncio.sleep(0.3)
        await casting.commit()
        seen_by_close = await task
    finally:
        await casting.close()
        await closing.close()
    assert seen_by_close == 1  # the close saw the ballot cast before it
    async with any_services.sessions() as session, session.begin():
        with pytest.raises(RoundClosed):
            await cast_ballot(
                session,
                round=round_.id,
                contact=late,
                vote=["riv2"],
                points=None,
                channel="sms",
                now=now,
            )
