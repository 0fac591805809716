"""Fixtures for scale-out: a wiped, migrated PostgreSQL database (these tests are about
several processes sharing one PostgreSQL, which SQLite does not do), and services built on it
under different worker names, as separate processes would be."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from bot.clock import Clock
from bot.services import Services, build_services
from storage.db import create_engine, upgrade
from tests.conftest import make_settings
from tests.scale.support import stop_group
from tests.sms.conftest import fake_twilio  # noqa: F401  (the fake Twilio server fixture)


@pytest.fixture
async def pg_url(postgres_url: str) -> AsyncIterator[str]:
    """The session's PostgreSQL database, wiped and migrated to the latest revision."""
    engine = create_engine(postgres_url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await upgrade(engine)
    await engine.dispose()
    yield postgres_url


Builder = Callable[..., Services]


@pytest.fixture
async def build(pg_url: str) -> AsyncIterator[Builder]:
    """``build(name, clock=..., **settings)``: services on the shared database, as one worker
    process named ``name`` would have them; closed at the end."""
    made: list[Services] = []

    def make(name: str, *, clock: Clock | None = None, **overrides: Any) -> Services:
        settings = make_settings(pg_url, worker_name=name, **overrides)
        services = build_services(settings, clock=clock)
        made.append(services)
        return services

    yield make
    for services in made:
        await services.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the test starts, each in its own process group (``start_new_session``):
    stopped, then killed, group by group at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop_group(process)
