"""``POST /webhooks/telegram``: Telegram's webhook.

The secret header is checked first (403 and nothing stored when it is missing or wrong); the
body is read up to :data:`MAX_BODY` bytes (413 past it, checked while reading); an update that
does not parse gets 400 (Telegram does not send a 4xx again, and sending it again would not
help). A failure while handling a good update gets 503, so Telegram delivers it again later:
nothing of it was stored (one transaction), and the update id makes the redelivery count
once. Answering a tapped button happens just after the response.
"""

from __future__ import annotations

import hmac
import json
import logging

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse

from bot.web.errors import log_failure
from bot.web.limits import BodyTooLarge, read_body
from channels.telegram.router import UpdateRouter
from channels.telegram.updates import InvalidUpdate

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1_000_000


def router(updates: UpdateRouter, secret: str) -> APIRouter:
    api = APIRouter(tags=["telegram"])

    @api.post("/webhooks/telegram", include_in_schema=False)
    async def webhook(request: Request, background: BackgroundTasks) -> JSONResponse:
        given = request.headers.get(SECRET_HEADER, "")
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            return JSONResponse(status_code=403, content={"detail": "forbidden"})
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge:
            return JSONResponse(status_code=413, content={"detail": "update too large"})
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise InvalidUpdate("not a JSON object")
        except (ValueError, RecursionError, InvalidUpdate) as exc:  # JSONDecodeError: ValueError
            log.warning("telegram webhook: not an update (%s)", exc.__class__.__name__)
            return JSONResponse(status_code=400, content={"detail": "not a Telegram update"})
        try:
            handled = await updates.handle(data)
        except InvalidUpdate as exc:
            log.warning("telegram webhook: bad update (%s)", exc)
            return JSONResponse(status_code=400, content={"detail": "not a Telegram update"})
        except Exception as exc:
            uid = data.get("update_id")
            label = uid if isinstance(uid, int) else "?"
            log_failure(log, f"telegram webhook: update {label} failed", exc)
            return JSONResponse(
                status_code=503, content={"detail": "not handled; Telegram will send it again"}
            )
        background.add_task(handled.run_follow_ups)
        return JSONResponse({"ok": True, "outcome": handled.outcome})

    return api
