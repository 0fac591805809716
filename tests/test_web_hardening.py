"""The web app under hostile use (issue #10): failures answered and logged without what people
sent, no redirects built from the Host header, the simulator only where it is meant to be,
bodies limited while they are read, and floods from one sender cut off before the pipeline."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services, build_services
from bot.settings import SettingsError, load_settings
from bot.web.limits import InboundLimiter, Verdict, client_key
from bot.web.simulator import MAX_BODY, MAX_TEXT
from channels.base import InboundMessage
from flows.broadcasts import BroadcastError, BroadcastSpec, Segment
from storage.db import create_engine, upgrade
from storage.models import InboundMessage as InboundRow
from tests.conftest import load_demo_wards, make_settings

API = "/simulator/api/messages"
PRIVATE = {"channel": "sms", "address": "+447700900555", "text": "my private words"}


def client_for(services: Services) -> httpx.AsyncClient:
    return client_of(build_app(services))


def client_of(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client of ``app`` whose requests come from ``address``."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(address, 1234))
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


def test_the_limiter_allows_a_burst_then_one_message_per_share_of_a_minute() -> None:
    clock = FixedClock()
    limiter = InboundLimiter(3, clock)
    assert [limiter.take("a") for _ in range(5)] == [
        Verdict.ALLOWED,
        Verdict.ALLOWED,
        Verdict.ALLOWED,
        Verdict.REFUSED,  # the first refusal is the one worth logging
        Verdict.STILL_REFUSED,
    ]
    assert limiter.take("b") is Verdict.ALLOWED  # others are not held back
    assert limiter.retry_after("a") == 20
    clock.advance(seconds=19)
    assert limiter.take("a") is Verdict.STILL_REFUSED
    clock.advance(seconds=1)
    assert limiter.take("a") is Verdict.ALLOWED
    assert limiter.take("a") is Verdict.REFUSED
    clock.advance(seconds=-3600)  # a clock set back gives no credit, and no error
    assert limiter.take("a") is Verdict.STILL_REFUSED


def test_the_limiter_forgets_idle_senders_and_holds_at_most_max_keys() -> None:
    clock = FixedClock()
    limiter = InboundLimiter(2, clock, max_keys=100)
    for k in range(50):
        limiter.take(f"old-{k}")
    clock.advance(seconds=60)  # full again: no different from never seen
    limiter.take("new")
    assert len(limiter) == 1
    for k in range(1000):
        limiter.take(f"many-{k}")
    assert len(limiter) == 100


def test_the_limiter_logs_a_pseudonym_not_the_number() -> None:
    limiter = InboundLimiter(2, FixedClock())
    name = limiter.pseudonym("+447700900555")
    assert name == limiter.pseudonym("+447700900555") != limiter.pseudonym("+447700900556")
    assert "900555" not in name and "4477" not in name
    assert InboundLimiter(2, FixedClock()).pseudonym("+447700900555") != name  # per process


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_by_its_64(host: str | None, key: str) -> None:
    assert client_key(host) == key


async def count_inbound(services: Services) -> int:
    async with services.sessions() as s:
        return len((await s.execute(select(InboundRow.id))).all())


async def test_a_flood_of_new_residents_from_one_address_gets_429(
    any_services: Services, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """600 simulated residents were made in 12.6 s from one address; now 60 a minute."""
    limit = any_services.settings.simulator_per_minute
    app = build_app(any_services)
    async with client_of(app, "198.51.100.7") as client:
        for k in range(limit):
            body = {"channel": "sms", "address": f"+4477009{k:05d}", "text": "HI"}
            assert (await client.post(API, json=body)).status_code == 200, k
        refused = await client.post(API, json=PRIVATE)
        assert refused.status_code == 429
        assert "at most 60 a minute" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        assert (await client.post(API, json=PRIVATE)).status_code == 429
        async with client_of(app, "203.0.113.9") as elsewhere:
            assert (await elsewhere.post(API, json=PRIVATE)).status_code == 200
        clock.advance(seconds=1)
        assert (await client.post(API, json=PRIVATE)).status_code == 200
    assert await count_inbound(any_services) == limit + 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # one line for the flood, not one a message
    assert "198.51.100.7" not in caplog.text
