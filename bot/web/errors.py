"""Failures logged without what people sent.

An exception's message can carry a person's words or number (a validation error quotes its
input, a ``KeyError`` names its key), so failures are logged by their type and where they were
raised, never by their message. :class:`QuietErrors` does this for anything no route handled:
the client gets a plain 500 and the server's own "Exception in ASGI application" traceback,
which prints the message, never happens.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from channels.logs import describe, log_failure

__all__ = ["QuietErrors", "describe", "log_failure"]


class QuietErrors:
    """ASGI middleware: an unhandled exception becomes a 500 and one quiet log entry."""

    def __init__(self, app: ASGIApp, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.log = logger or logging.getLogger(__name__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:  # the last line: log it quietly, answer 500 if we still can
            log_failure(self.log, f"{scope['method']} {scope['path']} failed", exc)
            if not started:
                response = JSONResponse(status_code=500, content={"detail": "internal error"})
                await response(scope, receive, send)
