"""Polling mode: ``getUpdates`` in a loop, each update handled as a webhook delivery would be.

An update is confirmed to Telegram (the offset moves past it) only once it has been handled,
or found not to be an update at all. A failure while handling it (a database that is briefly
down) retries the same update with a growing wait instead of skipping it; only an update that
keeps failing for :data:`MAX_ATTEMPTS` tries (about five minutes) is given up, with an error
logged naming its update id, so that one poisonous update cannot stop every later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from channels.errors import ChannelError
from channels.logs import log_failure
from channels.telegram.client import TelegramChannel
from channels.telegram.updates import InvalidUpdate

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_ATTEMPTS = 10
MAX_WAIT = 60.0

Handler = Callable[[dict[str, Any]], Awaitable[None]]


async def run_polling(
    channel: TelegramChannel,
    handle: Handler,
    stop: asyncio.Event,
    *,
    timeout: int = 30,
    first_wait: float = 1.0,
) -> None:
    """Fetch and handle updates until ``stop`` is set."""
    offset: int | None = None
    failures = 0
    ready = False
    while not stop.is_set():
        try:
            if not ready:  # Telegram refuses getUpdates while a webhook is set
                await channel.delete_webhook()
                await channel.set_commands()
                ready = True
            fetched = await _unless_stopped(channel.get_updates(offset, timeout), stop)
            if fetched is None:
                break  # shutting down: an unconfirmed batch is delivered again next time
            failures = 0
        except ChannelError as exc:
            failures += 1
            log.warning("telegram getUpdates failed: %s", exc)
            await _wait(stop, min(MAX_WAIT, first_wait * 2**failures))
            continue
        for data in fetched:
            if not await _handle_one(handle, data, stop, first_wait):
                return  # stopped while retrying: this update comes again next time
            offset = _next_offset(data, offset)


async def _handle_one(
    handle: Handler, data: dict[str, Any], stop: asyncio.Event, first_wait: float
) -> bool:
    """Handle one update, retrying failures; False if ``stop`` was set meanwhile."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            await handle(data)
            return True
        except InvalidUpdate as exc:  # not an update: retrying would not change that
            log.warning("telegram update %s is not valid (%s); skipped", data.get("update_id"), exc)
            return True
        except Exception as exc:
            what = f"telegram update {data.get('update_id')} failed (attempt {attempt} of "
            log_failure(log, f"{what}{MAX_ATTEMPTS})", exc)
        if attempt < MAX_ATTEMPTS:
            await _wait(stop, min(MAX_WAIT, first_wait * 2 ** (attempt - 1)))
            if stop.is_set():
                return False
    log.error(
        "telegram update %s failed %d times and is skipped", data.get("update_id"), MAX_ATTEMPTS
    )
    return True


def _next_offset(data: dict[str, Any], offset: int | None) -> int | None:
    update_id = data.get("update_id")
    if isinstance(update_id, int) and not isinstance(update_id, bool):
        return update_id + 1
    return offset


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None (and ``work`` cancelled) if ``stop`` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()
