"""Helpers for tender tests: the shared real OCDS files, and a resident who registers an
organisation and subscribes by chat through the simulator API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SHARED_DATA

OCDS = SHARED_DATA / "ocds"
CF_PAGE = OCDS / "cf_ocds_search_2025-01-23_page1_100releases.json"
API = "/simulator/api/messages"
# The day after the Contracts Finder page was published, 09:00 UTC: its tenders are open.
AFTER_PAGE = datetime(2025, 1, 24, 9, 0, tzinfo=UTC)


def shared(name: str) -> Path:
    path = OCDS / name
    if not path.exists():
        pytest.skip(f"the shared reference data is missing ({path})")
    return path


def cf_releases() -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(shared(CF_PAGE.name).read_text(encoding="utf-8"))
    releases: list[dict[str, Any]] = data["releases"]
    return releases


async def say(
    client: httpx.AsyncClient, address: str, *texts: str, channel: str = "sms"
) -> list[str]:
    replies: list[str] = []
    for text in texts:
        response = await client.post(
            API, json={"channel": channel, "address": address, "text": text}
        )
        assert response.status_code == 200, response.text
        replies += [r["text"] for r in response.json()["replies"]]
    return replies


async def thread(client: httpx.AsyncClient, address: str, channel: str = "sms") -> list[str]:
    response = await client.get(API, params={"channel": channel, "address": address})
    assert response.status_code == 200
    return [m["text"] for m in response.json()["messages"]]


JOIN = ("HI", "1", "1", "CF10 1EP")


async def register(
    client: httpx.AsyncClient,
    address: str,
    name: str,
    *,
    kind: str = "1",
    listed: str = "1",
    details: str = "Sam Jones, sam@example.org",
    channel: str = "sms",
) -> list[str]:
    """Join, then TENDERS: the organisation's questions, up to the first subscription's."""
    await say(client, address, *JOIN, channel=channel)
    return await say(
        client, address, "TENDERS", name, kind, "SKIP", details, listed, channel=channel
    )


async def subscribe(
    client: httpx.AsyncClient,
    address: str,
    categories: str,
    regions: str,
    band: str = "1",
    vcse: str = "2",
    keywords: str = "NONE",
    frequency: str = "1",
    channel: str = "sms",
) -> list[str]:
    """Answer the subscription questions (the org must have just registered, or chosen Add)."""
    return await say(
        client, address, categories, regions, band, vcse, keywords, frequency, channel=channel
    )
