"""The web simulator: chat with the bot as an SMS or Telegram user would, in a browser.

Two stable JSON endpoints other tools drive:

``POST /simulator/api/messages`` with
``{"channel": "sms"|"telegram", "address": "...", "text": "...", "id": "optional",
"choice": "optional button data", "message_id": "optional"}`` →
``{"replies": [{"id", "text", "choices", "buttons", "at"}], "duplicate": false,
"notice": null, "edited": null}``. SMS has no buttons: its choices are numbered lines in
``text``, long lists come in pages (reply MORE), and ``choices`` is empty. Telegram style has
Telegram's own keyboard in ``buttons`` (``{"label", "data"}``); tapping one is a post with
``choice`` set to its data and ``message_id`` to the message it was on (the latest keyboard
when left out). A tap's ``notice`` is what Telegram would show beside the buttons, and after a
toggle or page turn ``edited`` is that message with its keyboard redrawn.

``GET /simulator/api/messages?channel=sms|telegram&address=ADDR[&after=CURSOR]`` →
``{"messages": [{"id", "text", "choices", "buttons", "at"}], "cursor": "..."}``: every message
sent to that simulated resident after the cursor, replies and proactive ones (broadcasts,
reminders) alike, oldest first. Without a cursor it also gives ``resident``: what the resident
sent, so a page can show the whole thread again after a reload.

Served only when ``CIVICBOT_SIMULATOR`` is on. A POST is refused with 429 past
``CIVICBOT_SIMULATOR_PER_MINUTE`` from one client address, 413 past :data:`MAX_BODY` bytes
(checked while reading), and 422 for a body that is not a message (ids with control
characters included).
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlmodel import col

from bot.services import Services
from bot.web.limits import BodyTooLarge, InboundLimiter, Verdict, client_key, read_body
from channels.base import InboundMessage, TapRef
from channels.simulator import channel_name
from channels.text import clean_text
from storage.models import InboundMessage as InboundRow
from storage.models import OutboundMessage, OutboxStatus

log = logging.getLogger(__name__)
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
MAX_TEXT = 20_000
THREAD_LIMIT = 200  # messages one GET returns at most (the newest)
# Room for MAX_TEXT characters however they are written (an emoji escaped as two \uXXXX
# is 12 bytes), and nothing like the 100 MB bodies that were once read whole.
MAX_BODY = 256 * 1024
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class SimulatorMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["sms", "telegram"]
    address: str = Field(min_length=1, max_length=64)
    text: str = Field(default="", max_length=MAX_TEXT)
    id: str | None = Field(default=None, min_length=1, max_length=128)
    choice: str | None = Field(default=None, max_length=200, description="a tapped button's data")
    message_id: str | None = Field(
        default=None, max_length=20, description="the message whose button was tapped"
    )

    @field_validator("id", "choice", "message_id")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        # ids are stored and looked up as they come: PostgreSQL refuses NUL, and no id or
        # button data we hand out carries a control character
        if value is not None and CONTROL_CHARACTERS.search(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("address")
    @classmethod
    def _clean_address(cls, value: str) -> str:
        value = clean_text(value).strip()
        if not any(_visible(c) for c in value):
            raise ValueError("address must contain visible characters")
        return value


def _visible(char: str) -> bool:
    """Not a control, format (a zero-width space, a direction mark) or separator character:
    an address made only of those would look empty on the page and in the admin app."""
    return unicodedata.category(char)[0] not in "CZ"


REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": SimulatorMessage.model_json_schema()}},
}


class Message(BaseModel):
    id: str
    text: str
    choices: list[str]
    buttons: list[dict[str, str]] = Field(default_factory=list)
    at: str = ""


class SimulatorResponse(BaseModel):
    replies: list[Message]
    duplicate: bool
    notice: str | None = None
    edited: Message | None = None


class ResidentMessage(BaseModel):
    id: str
    text: str
    at: str


class Thread(BaseModel):
    messages: list[Message]
    cursor: str
    resident: list[ResidentMessage] | None = None


def router(services: Services, limits: InboundLimiter) -> APIRouter:
    """The simulator's page and API; ``limits`` counts messages per client address."""
    api = APIRouter(tags=["simulator"])

    @api.get("/simulator", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, "simulator.html", {})

    @api.post(
        "/simulator/api/messages",
        response_model=SimulatorResponse,
        openapi_extra={"requestBody": REQUEST_BODY},
    )
    async def post_message(request: Request) -> SimulatorResponse:
        _check_rate(request, limits)
        body = await _read_message(request)
        text = clean_text(body.text)
        tap = None
        if body.choice is not None:
            reference = f"out:{body.message_id}" if body.message_id else None
            tap = TapRef(data=clean_text(body.choice), message=reference)
        message = InboundMessage(
            channel=channel_name(body.channel),
            address=body.address,
            provider_id=body.id or f"sim-{uuid.uuid4().hex}",
            text=text,
            tap=tap,
            raw={"channel": body.channel, "text": text},
        )
        result = await services.pipeline.handle(message)
        notice = edited = None
        if result.tap is not None:
            notice = result.tap.notice
            if result.tap.redraw is not None and body.message_id:
                edited = _message(body.message_id, result.tap.redraw, None)
        return SimulatorResponse(
            replies=[_message(str(row.id), row.content, row.created_at) for row in result.outbox],
            duplicate=result.duplicate,
            notice=notice,
            edited=edited,
        )

    @api.get("/simulator/api/messages", response_model=Thread)
    async def thread(
        channel: Literal["sms", "telegram"],
        address: str = Query(min_length=1, max_length=64),
        after: str | None = Query(default=None, max_length=20, pattern=r"^[0-9]+$"),
    ) -> Thread:
        name = channel_name(channel)
        address = clean_text(address).strip()
        query = (
            select(OutboundMessage)
            .where(
                col(OutboundMessage.channel) == name,
                col(OutboundMessage.address) == address,
                col(OutboundMessage.status) != OutboxStatus.CANCELLED,
            )
            .order_by(col(OutboundMessage.id).desc())
            .limit(THREAD_LIMIT)
        )
        if after is not None:
            query = query.where(col(OutboundMessage.id) > int(after))
        async with services.sessions() as session:
            rows = list(reversed((await session.execute(query)).scalars().all()))
            resident = None
            if after is None:
                sent = (
                    select(InboundRow)
                    .where(col(InboundRow.channel) == name, col(InboundRow.address) == address)
                    .order_by(col(InboundRow.id).desc())
                    .limit(THREAD_LIMIT)
                )
                resident = [
                    ResidentMessage(id=str(r.id), text=r.text or "", at=_at(r.received_at))
                    for r in reversed((await session.execute(sent)).scalars().all())
                    if r.text
                ]
        cursor = str(rows[-1].id) if rows else (after or "0")
        return Thread(
            messages=[_message(str(r.id), r.content, r.created_at) for r in rows],
            cursor=cursor,
            resident=resident,
        )

    return api


def _check_rate(request: Request, limits: InboundLimiter) -> None:
    """429 past the limit for this client address (counted before the body is read, so a
    flood costs little), with Retry-After."""
    key = client_key(request.client.host if request.client else None)
    verdict = limits.take(key)
    if verdict is Verdict.ALLOWED:
        return
    if verdict is Verdict.REFUSED:
        log.warning(
            "simulator: client %s is over %d messages a minute; refusing until it slows down",
            limits.pseudonym(key),
            limits.per_minute,
        )
    raise HTTPException(
        429,
        f"Too many messages: the simulator takes at most {limits.per_minute} a minute from "
        "one address. Wait a moment and send again.",
        headers={"Retry-After": str(max(1, limits.retry_after(key)))},
    )


async def _read_message(request: Request) -> SimulatorMessage:
    """The posted message, read with the size limit checked while reading (413 past it, not
    after reading everything) and validated (422 with the same shape as FastAPI's)."""
    try:
        raw = await read_body(request, MAX_BODY)
    except BodyTooLarge:
        raise HTTPException(413, f"request body too large (at most {MAX_BODY} bytes)") from None
    try:
        return SimulatorMessage.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False)) from None


def _at(when: datetime | None) -> str:
    return "" if when is None else when.isoformat()


def _message(message_id: str, content: dict[str, Any], at: datetime | None) -> Message:
    return Message(
        id=message_id,
        text=str(content.get("text", "")),
        choices=[str(c) for c in content.get("choices", [])],
        buttons=[
            {"label": str(b["label"]), "data": str(b["data"])} for b in content.get("buttons", [])
        ],
        at=_at(at),
    )
