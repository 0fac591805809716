"""``POST /webhooks/telegram``: Telegram's webhook.

The secret header is checked first (403 and nothing stored when it is missing or wrong); the
update is stored and handled (once per ``update_id``) and Telegram gets its 200 straight away;
answering a tapped button happens just after the response.
"""

from __future__ import annotations

import hmac
import json
import logging

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse

from bot.services import Services
from bot.telegram_updates import TelegramUpdates
from channels.telegram import InvalidUpdate

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1_000_000


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["telegram"])
    updates = TelegramUpdates(services)
    secret = services.settings.telegram_webhook_secret

    @api.post("/webhooks/telegram", include_in_schema=False)
    async def webhook(request: Request, background: BackgroundTasks) -> JSONResponse:
        given = request.headers.get(SECRET_HEADER, "")
        expected = "" if secret is None else secret.get_secret_value()
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return JSONResponse(status_code=403, content={"detail": "forbidden"})
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse(status_code=413, content={"detail": "update too large"})
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise InvalidUpdate("not a JSON object")
            handled = await updates.handle(data)
        except (ValueError, InvalidUpdate) as exc:  # JSONDecodeError is a ValueError
            log.warning("telegram webhook: bad update (%s)", exc.__class__.__name__)
            return JSONResponse(status_code=400, content={"detail": "not a Telegram update"})
        background.add_task(handled.run_follow_ups)
        return JSONResponse({"ok": True, "outcome": handled.outcome})

    return api
