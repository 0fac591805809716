"""The web simulator: chat with the bot as an SMS or Telegram user would, in a browser.

``POST /simulator/api/messages`` is a stable JSON API other tools drive:
``{"channel": "sms"|"telegram", "address": "...", "text": "...", "id": "optional"}`` →
``{"replies": [{"text": ..., "choices": [...], "buttons": [...]}], "duplicate": false}``.
SMS has no buttons, so its choices are numbered lines in ``text`` and ``choices`` is empty.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.services import Services
from channels.base import InboundMessage
from channels.simulator import channel_name
from channels.text import clean_text

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
MAX_TEXT = 20_000


class SimulatorMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["sms", "telegram"]
    address: str = Field(min_length=1, max_length=64)
    text: str = Field(default="", max_length=MAX_TEXT)
    id: str | None = Field(default=None, min_length=1, max_length=128)
    choice: str | None = Field(default=None, max_length=200, description="a tapped button's data")

    @field_validator("address")
    @classmethod
    def _clean_address(cls, value: str) -> str:
        value = clean_text(value).strip()
        if not value:
            raise ValueError("address must contain visible characters")
        return value


class Reply(BaseModel):
    text: str
    choices: list[str]
    buttons: list[dict[str, str]] = Field(default_factory=list)


class SimulatorResponse(BaseModel):
    replies: list[Reply]
    duplicate: bool


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["simulator"])

    @api.get("/simulator", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, "simulator.html", {})

    @api.post("/simulator/api/messages", response_model=SimulatorResponse)
    async def post_message(body: SimulatorMessage) -> SimulatorResponse:
        text = clean_text(body.text)
        message = InboundMessage(
            channel=channel_name(body.channel),
            address=body.address,
            provider_id=body.id or f"sim-{uuid.uuid4().hex}",
            text=text,
            payload=body.choice,
            raw={"channel": body.channel, "address": body.address, "text": text, "id": body.id},
        )
        result = await services.pipeline.handle(message)
        return SimulatorResponse(
            replies=[_reply(row.content) for row in result.outbox], duplicate=result.duplicate
        )

    return api


def _reply(content: dict[str, Any]) -> Reply:
    return Reply(
        text=str(content.get("text", "")),
        choices=[str(c) for c in content.get("choices", [])],
        buttons=[
            {"label": str(b["label"]), "data": str(b["data"])} for b in content.get("buttons", [])
        ],
    )
