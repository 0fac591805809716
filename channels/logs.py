"""Logging failures without what people sent.

An exception's message can carry a person's words or number (a validation error quotes its
input, a ``KeyError`` names its key), so failures are logged by their type and where they were
raised, never by their message. Used by the web layer, the dispatcher, the pipeline and the
Telegram polling loop.
"""

from __future__ import annotations

import logging
import traceback


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
