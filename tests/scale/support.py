"""Helpers for the scale-out tests and benchmarks: queue outbox rows, run dispatchers until a
condition holds, count sends per sliding second, and start, wait for and stop real
``civicbot`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from bot.services import Services
from storage.models import OutboundMessage, OutboxStatus, Priority


async def enqueue(
    services: Services,
    texts: Sequence[str],
    *,
    channel: str = "sms",
    priority: int = Priority.BULK,
    address: Callable[[int], str] = lambda i: f"+4477009{i % 100000:05d}",
) -> None:
    """Queue one outbox row per text (as a broadcast does), due now."""
    now = services.clock.now()
    rows: list[dict[str, Any]] = [
        {
            "channel": channel,
            "address": address(i),
            "content": {"text": text},
            "priority": priority,
            "ignore_opt_out": False,
            "status": OutboxStatus.QUEUED,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for i, text in enumerate(texts)
    ]
    async with services.sessions() as session, session.begin():
        for start in range(0, len(rows), 1000):
            await session.execute(insert(OutboundMessage), rows[start : start + 1000])


async def status_counts(services: Services) -> dict[str, int]:
    async with services.sessions() as session:
        query = select(OutboundMessage.status, func.count()).group_by(OutboundMessage.status)  # type: ignore[arg-type]
        return {str(s): int(n) for s, n in (await session.execute(query)).all()}


async def senders(services: Services) -> dict[str, int]:
    """Sent rows per dispatcher name."""
    async with services.sessions() as session:
        query = (
            select(OutboundMessage.claimed_by, func.count())  # type: ignore[arg-type]
            .where(OutboundMessage.status == OutboxStatus.SENT)  # type: ignore[arg-type]
            .group_by(OutboundMessage.claimed_by)
        )
        return {str(s): int(n) for s, n in (await session.execute(query)).all()}


@contextlib.asynccontextmanager
async def dispatching(workers: Sequence[Services]) -> AsyncIterator[None]:
    """Every worker's dispatcher runs its loop for the block."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.dispatcher.run_forever(stop)) for w in workers]
    try:
        yield
    finally:
        stop.set()
        for w in workers:
            w.dispatcher.wake()
        await asyncio.gather(*tasks)


async def until(condition: Callable[[], bool], *, timeout: float, every: float = 0.05) -> None:
    """Wait for ``condition`` (what the test waits for, not how long it takes)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(every)


def busiest_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most sends in any sliding ``window`` seconds (half-open)."""
    ordered = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j < len(ordered) and ordered[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


# ---- real processes ----------------------------------------------------------------------------

CIVICBOT = str(Path(sys.executable).parent / "civicbot")  # the installed command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group (uvicorn's worker processes are children of ``serve``),
    then SIGKILL if it has not gone within 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)


def poll(
    url: str,
    ready: Callable[[httpx.Response], bool],
    process: subprocess.Popen[bytes],
    timeout: float = 90,
) -> dict[str, object]:
    """GET ``url`` until ``ready(response)``; the response's JSON. Fails the test if
    ``process`` exits first (with the end of its stderr, when that is a pipe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.communicate()[1]
            pytest.fail(f"{process.args} exited: {(err or b'').decode()[-2000:]}")
        try:
            response = httpx.get(url, timeout=5)
        except httpx.HTTPError:
            response = None
        if response is not None and ready(response):
            body = response.json()
            assert isinstance(body, dict)
            return body
        time.sleep(0.2)
    pytest.fail(f"{url} never became ready")
