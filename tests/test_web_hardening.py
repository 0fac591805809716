"""The web app under hostile use (issue #10): failures answered and logged without what people
sent, no redirects built from the Host header, the simulator only where it is meant to be,
bodies limited while they are read, and floods from one sender cut off before the pipeline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services, build_services
from bot.settings import SettingsError, load_settings
from bot.web.simulator import MAX_BODY, MAX_TEXT
from channels.base import InboundMessage
from flows.broadcasts import BroadcastError, BroadcastSpec, Segment
from storage.db import create_engine, upgrade
from tests.conftest import load_demo_wards, make_settings

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


@pytest.mark.parametrize(
    ("public_url", "setting", "served"),
    [
        ("http://127.0.0.1:8000", None, True),
        ("http://127.8.0.1", None, True),
        ("http://localhost:8000", None, True),
        ("http://[::1]:8000", None, True),
        ("https://bot.example.org", None, False),
        ("http://10.0.0.5:8000", None, False),
        ("http://127.0.0.1.example.org", None, False),
        ("http://localhost.example.org", None, False),
        ("https://bot.example.org", "on", True),
        ("http://127.0.0.1:8000", "off", False),
    ],
)
def test_the_simulator_is_on_by_default_only_on_a_loopback_public_url(
    public_url: str, setting: str | None, served: bool
) -> None:
    values = {"public_url": public_url, **({"simulator": setting} if setting else {})}
    assert load_settings(_env_file=None, **values).simulator_enabled is served


def test_a_bad_simulator_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICBOT_SIMULATOR", "maybe")
    with pytest.raises(SettingsError, match="CIVICBOT_SIMULATOR"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    "path", ["/", "/simulator", "/static/simulator.js", "/docs", "/redoc", "/openapi.json"]
)
async def test_without_the_simulator_its_pages_and_the_api_docs_are_not_served(
    sqlite_url: str, path: str
) -> None:
    settings = make_settings(sqlite_url, public_url="https://bot.example.org", simulator=None)
    services = build_services(settings, clock=FixedClock())
    await upgrade(services.db)
    async with client_for(services) as client:
        assert (await client.get(path)).status_code == 404
        posted = await client.post(API, json=PRIVATE)
        assert posted.status_code == 404
        assert (await client.get("/healthz")).status_code == 200
    assert not [name for name in services.channels if name.startswith("sim-")]
    await services.close()


async def test_the_api_docs_are_served_with_the_simulator(quiet_client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await quiet_client.get(path)).status_code == 200, path
    post = (await quiet_client.get("/openapi.json")).json()["paths"][API]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"channel", "address", "text", "id"} <= set(schema["properties"])


async def test_without_the_simulator_broadcasts_skip_its_residents(
    database_url: str, clock: FixedClock
) -> None:
    services = build_services(make_settings(database_url), clock=clock)
    await upgrade(services.db)
    await load_demo_wards(services)
    for k, text in enumerate(("HI", "1", "1", "CF10 1EP")):
        await services.pipeline.handle(
            InboundMessage(channel="sim-sms", address="sim-1", provider_id=f"m{k}", text=text)
        )
    spec = BroadcastSpec(text={"en": "The library reopens."}, segment=Segment(), actor="t")
    assert (await services.broadcasts.preview(spec)).recipients == 1
    await services.close()

    off = make_settings(database_url, simulator="off")
    services = build_services(off, clock=clock)
    assert not [name for name in services.channels if name.startswith("sim-")]
    with pytest.raises(BroadcastError, match="nobody would get it"):
        await services.broadcasts.send(spec)
    await services.close()


async def test_the_simulators_body_limit_is_checked_while_reading(
    quiet_client: httpx.AsyncClient,
) -> None:
    """A 100 MB body used to be read and parsed whole (the server grew by 220 MB)."""
    pulled = 0

    async def hundred_megabytes() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'{"channel": "sms", "address": "a", "text": "'
        for _ in range(1600):
            pulled += 1
            yield b"x" * 65536

    response = await quiet_client.post(
        API, content=hundred_megabytes(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert pulled * 65536 <= MAX_BODY + 65536
    declared = await quiet_client.post(
        API, content=b" " * (MAX_BODY + 1), headers={"Content-Type": "application/json"}
    )
    assert declared.status_code == 413


async def test_the_longest_text_fits_the_body_limit_however_it_is_written(
    quiet_client: httpx.AsyncClient,
) -> None:
    body = json.dumps({**PRIVATE, "text": "\U0001f5f3" * MAX_TEXT})  # every emoji as \ud83d\uddf3
    assert len(body) > 200_000
    response = await quiet_client.post(
        API, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
