"""Fixtures for the admin web app: the whole FastAPI app (as `civicbot serve` builds it) on
each database, a client that keeps cookies, and one account per role."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services
from storage.admin import Role
from tests.admin_support import Admin, make_user

ADMIN, FACILITATOR, VIEWER = "admin@council.example", "fac@council.example", "view@council.example"


@pytest.fixture
async def accounts(any_services: Services, clock: FixedClock) -> Services:
    for email, role in (
        (ADMIN, Role.ADMIN),
        (FACILITATOR, Role.FACILITATOR),
        (VIEWER, Role.VIEWER),
    ):
        await make_user(any_services.sessions, email, role, clock.now())
    return any_services


@pytest.fixture
async def http(accounts: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(accounts), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def browser(http: httpx.AsyncClient) -> Admin:
    return Admin(http)
