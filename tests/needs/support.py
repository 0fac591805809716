"""Shared set-up for the needs tests: the demo census, an assessment over the demo wards,
and residents driven through the simulator API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from bot.services import Services
from tests.conftest import REPO

API = "/simulator/api/messages"
CENSUS = REPO / "admin" / "data" / "demo_census.csv"
CATEGORIES = [
    ("youth", "Youth clubs", "Clybiau ieuenctid"),
    ("care", "Care at home", "Gofal yn y cartref"),
    ("parks", "Parks", "Parciau"),
    ("buses", "Buses", "Bysiau"),
    ("housing", "Housing repairs", "Atgyweirio tai"),
]
# The demo wards with a postcode each (admin/data/demo_wards.csv).
POSTCODES = {
    "DEMO-CATHAYS": "CF10 1EP",
    "DEMO-SPLOTT": "CF24 2DG",
    "DEMO-ADAMSDOWN": "CF24 5EZ",
    "DEMO-RIVERSIDE": "CF11 6AA",
    "DEMO-BUTETOWN": "CF10 5AL",
    "DEMO-GRANGETOWN": "CF11 7GL",
    "DEMO-GABALFA": "CF14 3NZ",
}


def assessment_yaml(
    ident: str = "spring-2027",
    *,
    wards: str = "all",
    opens_at: str = "2026-01-01T09:00:00Z",
    closes_at: str = "2026-04-30T21:00:00Z",
    picks: int = 3,
    ask_free_text: bool = True,
    about_you: str = "[age_band, disability, ethnic_group]",
) -> str:
    categories = "\n".join(
        f'  - {{id: {c}, en: "{en}", cy: "{cy}"}}' for c, en, cy in CATEGORIES
    )
    return (
        f"id: {ident}\n"
        'title: {en: "What should our area fix first?", cy: "Beth ddylai ein hardal ei drwsio '
        'gyntaf?"}\n'
        f"wards: {wards}\n"
        f'opens_at: "{opens_at}"\n'
        f'closes_at: "{closes_at}"\n'
        f"picks: {picks}\n"
        f"ask_free_text: {'true' if ask_free_text else 'false'}\n"
        f"about_you: {about_you}\n"
        f"categories:\n{categories}\n"
    )


async def set_up(services: Services, **kwargs: Any) -> str:
    """The demo census and an open assessment; its id."""
    await services.needs.load_census(CENSUS.read_text(), source="demo", actor="test")
    row, _ = await services.needs.define(
        assessment_yaml(**kwargs), announce=False, actor="test"
    )
    return row.id


async def say(
    client: httpx.AsyncClient, address: str, *texts: str, channel: str = "sms"
) -> list[str]:
    replies: list[str] = []
    for text in texts:
        body = {"channel": channel, "address": address, "text": text}
        response = await client.post(API, json=body)
        assert response.status_code == 200, response.text
        replies += [r["text"] for r in response.json()["replies"]]
    return replies


def join(ward: str, language: str = "1") -> tuple[str, ...]:
    """Consent, language (1 English, 2 Cymraeg), postcode in ``ward``."""
    return ("HI", "1", language, POSTCODES[ward])


FIXED_NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
