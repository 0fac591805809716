"""The scheduler opens assessments at their time (sending the invitation once, even across
a restart) and closes them at theirs, reading the deadlines from the database."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select

from bot.app import build_app
from bot.clock import FixedClock
from bot.scheduler import build_scheduler
from bot.services import Services, build_services
from storage.db import upgrade
from storage.models import OutboundMessage, Priority
from storage.needs import NeedsAssessment
from tests.conftest import load_demo_wards, make_settings
from tests.needs.support import CENSUS, assessment_yaml, join, say


async def bulk(services: Services) -> list[str | None]:
    async with services.sessions() as session:
        query = select(OutboundMessage).where(OutboundMessage.priority == Priority.BULK)  # type: ignore[arg-type]
        return sorted(r.address for r in (await session.execute(query)).scalars())


async def test_open_with_invitation_and_close_on_time_across_a_restart(
    database_url: str, clock: FixedClock
) -> None:
    settings = make_settings(database_url, run_scheduler=False)
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    await load_demo_wards(services)
    assert "needs_open_close_due" in {job.id for job in build_scheduler(services).get_jobs()}
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await say(client, "in", *join("DEMO-CATHAYS"))
        await say(client, "out", *join("DEMO-SPLOTT"))
        await say(client, "stopped", *join("DEMO-CATHAYS"), "STOP")
    await services.needs.load_census(CENSUS.read_text(), source="demo", actor="test")
    yaml = assessment_yaml(
        wards="[DEMO-CATHAYS]", opens_at="2026-01-06T09:00Z", closes_at="2026-01-08T09:00Z"
    )
    await services.needs.define(yaml, announce=True, actor="test")
    assert await services.needs.run_due() == (0, 0)
    assert await bulk(services) == []
    clock.advance(days=1, minutes=1)
    await services.close()

    services = build_services(settings, clock=clock)  # a restart: nothing kept in memory
    assert await services.needs.run_due() == (1, 0)
    assert await bulk(services) == ["in"]  # the invitation: in scope, not opted out
    await services.close()
    services = build_services(settings, clock=clock)
    assert await services.needs.run_due() == (0, 0)
    assert await bulk(services) == ["in"]
    clock.advance(days=2)
    assert await services.needs.run_due() == (0, 1)
    async with services.sessions() as session:
        row = await session.get(NeedsAssessment, "spring-2027")
    assert row is not None and row.opened_at is not None
    assert row.closed_at == row.closes_at
    assert (await services.needs.report("spring-2027"))["status"] == "closed"
    await services.close()


def test_demo_files_are_marked(tmp_path: Path) -> None:
    assert "INVENTED DEMO FIGURES" in CENSUS.read_text().splitlines()[0]
