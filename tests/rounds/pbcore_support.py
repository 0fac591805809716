"""Shared set-up for pbcore's rounds tests: a round file, residents joined through the
simulator, ballots stored as the voting conversation stores them (the shared contract: one
``PbBallot`` per contact, a random ``voter_key``), and the outbox."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

import httpx
from sqlalchemy import select

from bot.services import Services
from storage.models import ChannelIdentity, OutboundMessage, Priority
from storage.pb_rounds import PbBallot
from tests.needs.support import POSTCODES, say

PROJECTS = [
    ("1", "Benches", "Meinciau", 9000),
    ("2", "Trees", "Coed", 20000),
    ("3", "Lights", "Goleuadau", 50000),
    ("4", "Play area", "Ardal chwarae", 30000),
    ("5", "Bike racks", "Raciau beiciau", 4000),
]


def round_yaml(
    ident: str = "riverside-2027",
    *,
    wards: str = "all",
    budget: int = 60000,
    ballot: str = "{type: approval, min: 1, max: 3}",
    rule: str = "mes",
    voting_open: str = "2026-02-01T09:00:00Z",
    voting_close: str = "2026-02-28T21:00:00Z",
    proposals: str = "",
    projects: Sequence[tuple[str, str, str, int]] = PROJECTS,
) -> str:
    lines = "\n".join(
        f'  - {{id: "{pid}", title: {{en: "{en}", cy: "{cy}"}}, cost: {cost}, '
        f'summary: {{en: "About {en}", cy: "Am {cy}"}}}}'
        for pid, en, cy, cost in projects
    )
    return (
        f"id: {ident}\n"
        'title: {en: "Riverside neighbourhood fund", cy: "Cronfa cymdogaeth Glan-yr-afon"}\n'
        f"wards: {wards}\n"
        f"budget: {budget}\n"
        "currency: GBP\n"
        f"ballot: {ballot}\n"
        f"rule: {rule}\n"
        "verification: none\n"
        f'phases: {{{proposals}voting_open: "{voting_open}", voting_close: "{voting_close}"}}\n'
        f"projects:\n{lines}\n"
    )


async def resident(
    client: httpx.AsyncClient,
    address: str,
    ward: str,
    *,
    welsh: bool = False,
    channel: str = "sms",
) -> None:
    """A resident who consented, chose a language and gave a postcode in ``ward``."""
    await say(client, address, "HI", "1", "2" if welsh else "1", POSTCODES[ward], channel=channel)


async def contact_of(services: Services, address: str) -> int:
    async with services.sessions() as session:
        query = select(ChannelIdentity.contact_id).where(ChannelIdentity.address == address)  # type: ignore[arg-type]
        return int((await session.execute(query)).scalar_one())


async def cast(
    services: Services,
    round_id: str,
    contact_id: int | None,
    vote: Sequence[str],
    points: Sequence[int] | None = None,
    *,
    now: datetime,
    ward: str | None = None,
) -> None:
    """Store a ballot as the voting conversation does (pbvote's cast)."""
    async with services.sessions() as session, session.begin():
        session.add(
            PbBallot(
                round_id=round_id,
                contact_id=contact_id,
                voter_key=secrets.token_hex(8),
                vote=list(vote),
                points=None if points is None else list(points),
                ward_code=ward,
                channel="sim-sms",
                receipt=secrets.token_hex(3).upper(),
                cast_at=now,
                updated_at=now,
            )
        )


async def bulk_to(services: Services, address: str) -> list[str]:
    """The proactive (bulk) messages queued for ``address``, oldest first (a long SMS's
    later pages, sent on MORE, joined to its first)."""
    async with services.sessions() as session:
        query = (
            select(OutboundMessage)
            .where(OutboundMessage.priority == Priority.BULK, OutboundMessage.address == address)  # type: ignore[arg-type]
            .order_by(OutboundMessage.id)  # type: ignore[arg-type]
        )
        rows = (await session.execute(query)).scalars()
        return [
            "\n".join(
                [str(r.content.get("text", ""))]
                + [str(p["text"]) for p in r.content.get("more") or ()]
            )
            for r in rows
        ]
