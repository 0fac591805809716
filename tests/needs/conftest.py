"""Fixtures for the needs tests: services on SQLite and PostgreSQL with the simulator API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services, build_services
from storage.db import upgrade
from tests.conftest import load_demo_wards, make_settings


@pytest.fixture
async def bot(
    database_url: str, clock: FixedClock
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    # hundreds of simulated residents from one test client: lift the per-address limit
    settings = make_settings(database_url, run_scheduler=False, simulator_per_minute=100_000)
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    await load_demo_wards(services)
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield services, client
    await services.close()


@pytest.fixture
async def sqlite_bot(
    sqlite_url: str, clock: FixedClock
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    settings = make_settings(sqlite_url, run_scheduler=False, simulator_per_minute=100_000)
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    await load_demo_wards(services)
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield services, client
    await services.close()
