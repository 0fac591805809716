"""Helpers for the voting tests: a round written straight into storage (the voting side
needs only the stored round, whichever way it was created), and contacts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import Services
from storage.models import Contact
from storage.pb_rounds import PbProject, PbRound, RoundStatus

COSTS = (9_000, 12_000, 20_000, 16_000, 8_000, 30_000)
TITLES = (
    ("Benches", "Meinciau"),
    ("Bike racks", "Raciau beiciau"),
    ("Play area", "Ardal chwarae"),
    ("Street trees", "Coed stryd"),
    ("Bins", "Biniau"),
    ("Skate park", "Parc sglefrio"),
)


async def add_round(
    session: AsyncSession,
    *,
    now: datetime,
    round_id: str = "riverside-2027",
    ballot: dict[str, Any] | None = None,
    wards: list[str] | None = None,
    budget: int = 50_000,
    status: str = RoundStatus.VOTING,
    verification: str = "none",
    proposals: bool = False,
    title: tuple[str, str] = ("Riverside fund", "Cronfa Glan-yr-afon"),
) -> PbRound:
    """A round with six projects, open for voting from an hour ago for a week (or, with
    ``proposals``, taking ideas now and voting later)."""
    voting_open = now + timedelta(days=7) if proposals else now - timedelta(hours=1)
    round_ = PbRound(
        id=round_id,
        title={"en": title[0], "cy": title[1]},
        wards=wards,
        budget=budget,
        ballot=ballot or {"type": "approval", "min": 1, "max": 3},
        rule="greedy",
        verification=verification,
        proposals_open=now - timedelta(days=1) if proposals else None,
        proposals_close=now + timedelta(days=6) if proposals else None,
        voting_open=voting_open,
        voting_close=voting_open + timedelta(days=7),
        status=RoundStatus.DRAFT if proposals else status,
        created_at=now,
        updated_at=now,
        opened_at=None if proposals else now,
    )
    session.add(round_)
    await session.flush()  # no ORM relationship orders the inserts
    for k, (cost, (en, cy)) in enumerate(zip(COSTS, TITLES, strict=True), start=1):
        session.add(
            PbProject(
                round_id=round_id,
                id=f"{round_id[:3]}{k}",
                position=k,
                title={"en": en, "cy": cy},
                summary={"en": f"{en} for the ward", "cy": f"{cy} i'r ward"},
                cost=cost,
            )
        )
    await session.flush()
    return round_


async def add_contact(
    session: AsyncSession, *, now: datetime, ward_code: str | None = "DEMO-CATHAYS"
) -> Contact:
    contact = Contact(language="en", ward_code=ward_code, created_at=now, consent_at=now)
    session.add(contact)
    await session.flush()
    return contact


BALLOTS: dict[str, dict[str, Any]] = {
    "approval": {"type": "approval", "min": 1, "max": 3},
    "knapsack": {"type": "knapsack"},
    "ranked": {"type": "ranked", "top": 3},
    "cumulative": {"type": "cumulative", "points": 10},
}


def golden_setup(kind: str) -> Callable[[Services], Awaitable[None]]:
    """A golden script's ``setup: [pb_<kind>]``: a round of that ballot type, voting open."""

    async def set_up(services: Services) -> None:
        async with services.sessions() as session, session.begin():
            await add_round(session, now=services.clock.now(), ballot=BALLOTS[kind])

    return set_up
