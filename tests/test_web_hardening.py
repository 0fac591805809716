"""The web app under hostile use (issue #10): failures answered and logged without what people
sent, no redirects built from the Host header, the simulator only where it is meant to be,
bodies limited while they are read, and floods from one sender cut off before the pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.app import build_app
from bot.services import Services
from storage.db import create_engine

API = "/simulator/api/messages"
PRIVATE = {"channel": "sms", "address": "+447700900555", "text": "my private words"}


def client_for(services: Services) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(services), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def quiet_client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(services) as client:
        yield client


async def test_an_unhandled_failure_is_a_quiet_500(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """The database goes away mid-request: a plain 500, and the log says where it failed but
    not what the person sent (the server's own traceback would print the error's message)."""
    dead = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    services.sessions.configure(bind=dead)
    async with client_for(services) as client:
        response = await client.post(API, json=PRIVATE)
    await dead.dispose()
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "POST /simulator/api/messages failed" in caplog.text and "Traceback" in caplog.text
    assert "private words" not in caplog.text and "900555" not in caplog.text


async def test_an_exceptions_message_is_never_logged(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(services)

    async def boom() -> None:
        contacts: dict[str, int] = {}
        contacts[PRIVATE["address"]] += 1  # a KeyError naming the number

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert "KeyError" in caplog.text and "900555" not in caplog.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", API + "/"), ("GET", "/healthz/"), ("GET", "/simulator/"), ("GET", "/docs/")],
)
async def test_no_redirect_is_built_from_the_host_header(
    quiet_client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await quiet_client.request(
        method, path, json=PRIVATE, headers={"Host": "evil.example"}
    )
    assert response.status_code == 404
    assert "location" not in response.headers
