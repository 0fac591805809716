"""Failures logged without what people sent.

An exception's message can carry a person's words or number (a validation error quotes its
input, a ``KeyError`` names its key), so failures are logged by their type and where they were
raised, never by their message. :class:`QuietErrors` does this for anything no route handled:
the client gets a plain 500 and the server's own "Exception in ASGI application" traceback,
which prints the message, never happens.
"""

from __future__ import annotations

import logging
import traceback

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def describe(exc: BaseException) -> str:
    """A traceback of ``exc`` and its causes with every exception's message left out."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(
            f"Traceback (most recent call last):\n{frames}"
            f"{type(current).__module__}.{type(current).__qualname__} (message withheld)"
        )
        current = current.__cause__ or current.__context__
    return "\n\nwhich was raised while handling\n\n".join(parts)


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log ``what`` failed with ``exc``'s traceback, without its message."""
    logger.error("%s: %s\n%s", what, type(exc).__name__, describe(exc))


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
