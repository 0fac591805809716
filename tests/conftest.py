"""Shared fixtures: real databases (a SQLite file, and PostgreSQL when reachable), services
built from Settings like production does, and a fixed clock.

PostgreSQL: ``CIVICBOT_TEST_POSTGRES_URL`` (default ``postgresql+asyncpg://root@127.0.0.1:5432/test``)
names a server where a throwaway database is created for the test session. Off CI, an
unreachable server skips the PostgreSQL half of the contract tests with the reason; with ``CI``
set it fails them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services, build_services
from bot.settings import Settings
from storage.db import create_engine, upgrade

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PG_URL = os.environ.get(
    "CIVICBOT_TEST_POSTGRES_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the expected replies in tests/golden/*.yaml from what the bot says now",
    )


async def _admin(sql: str) -> None:
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def _run_in_thread(sql: str) -> None:
    """Run admin SQL from sync code even while an event loop is running in this thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _admin(sql)).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"civicbot_test_{uuid.uuid4().hex[:10]}"
    try:
        _run_in_thread(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {PG_URL} ({exc.__class__.__name__}: {exc})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI requires it")
        pytest.skip(f"{reason}; set CIVICBOT_TEST_POSTGRES_URL to run these tests")
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    _run_in_thread(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each kind: a new SQLite file, or a wiped PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'civicbot.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()
    yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'civicbot.db'}"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "public_url": "http://testserver",
        "run_dispatcher": False,
        "simulator": "on",  # the public URL is not loopback, and these tests drive it
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


async def start_services(settings: Settings, clock: FixedClock) -> Services:
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    return services


@pytest.fixture
async def services(sqlite_url: str, clock: FixedClock) -> AsyncIterator[Services]:
    """Services on a fresh SQLite file, migrated, with demo wards loaded."""
    services = await start_services(make_settings(sqlite_url), clock)
    await load_demo_wards(services)
    yield services
    await services.close()


@pytest.fixture
async def any_services(database_url: str, clock: FixedClock) -> AsyncIterator[Services]:
    """Like ``services``, once on SQLite and once on PostgreSQL."""
    services = await start_services(make_settings(database_url), clock)
    await load_demo_wards(services)
    yield services
    await services.close()


async def load_demo_wards(services: Services) -> None:
    from admin.wards_import import read_wards_csv
    from storage import repositories as repo

    parsed = read_wards_csv(REPO / "admin" / "data" / "demo_wards.csv")
    async with services.sessions() as session, session.begin():
        await repo.upsert_wards(session, wards=parsed.wards, postcodes=parsed.postcodes)


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(services)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def any_client(any_services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """Like ``client``, once on SQLite and once on PostgreSQL."""
    app = build_app(any_services)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
