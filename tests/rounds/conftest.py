"""Fixtures for the PB voting tests: services with the simulator API on SQLite and
PostgreSQL, demo wards loaded, and a simulated resident."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services, build_services
from storage.db import upgrade
from tests.conftest import load_demo_wards, make_settings
from tests.telegram.conftest import fake_api, tg  # noqa: F401 - the Bot API fake's fixtures

API = "/simulator/api/messages"
POSTCODES = {"cathays": "CF10 1EP", "splott": "CF24 2DG", "riverside": "CF11 6AA"}


@pytest.fixture
async def bot(
    database_url: str, clock: FixedClock
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    # many simulated residents from one test client: lift the per-address limit
    settings = make_settings(database_url, run_scheduler=False, simulator_per_minute=100_000)
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    await load_demo_wards(services)
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield services, client
    await services.close()


class Resident:
    """One simulated resident on a simulator channel."""

    def __init__(self, client: httpx.AsyncClient, channel: str, address: str) -> None:
        self.client, self.channel, self.address = client, channel, address
        self.latest: tuple[str, list[dict[str, str]]] | None = None

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(
            API, json={"channel": self.channel, "address": self.address, **body}
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        for reply in data["replies"]:
            if reply["buttons"]:
                self.latest = (reply["id"], reply["buttons"])
        return data

    async def say(self, text: str) -> list[str]:
        return [r["text"] for r in (await self.post({"text": text}))["replies"]]

    async def tap(self, label: str, message_id: str | None = None) -> dict[str, Any]:
        assert self.latest is not None, "no keyboard to tap"
        kept_id, buttons = self.latest
        found = [b for b in buttons if b["label"].startswith(label)]
        assert found, f"no button {label!r} in {[b['label'] for b in buttons]}"
        data = await self.post({"choice": found[0]["data"], "message_id": message_id or kept_id})
        if data.get("edited"):
            self.latest = (data["edited"]["id"], data["edited"]["buttons"])
        return data

    async def join(self, ward: str = "cathays", language: str = "en") -> None:
        await self.say("HI")
        await self.say("1")
        await self.say("1" if language == "en" else "2")
        await self.say(POSTCODES[ward])
