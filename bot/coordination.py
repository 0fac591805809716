"""Running as several processes on one PostgreSQL: the leader lease that lets scheduled jobs
run in one process at a time, send-rate limits shared by every worker, and the heartbeat the
health endpoint reads. State lives in :mod:`storage.coordination`; no separate broker.

On SQLite civicbot runs as one process: the lease is always held and rate limits stay in
memory (:class:`channels.pacing.RateLimiter`, :class:`channels.telegram.client.ChatLimiter`).

Bounds (see docs/scale.md):
- a lease is renewed every ``ttl / 3`` seconds; when its holder dies, another worker takes it
  at most ``ttl + ttl / 3`` seconds after the holder's last renewal (by the workers' clocks,
  which must agree, e.g. through NTP: skew between machines adds to that bound, or with
  a clock running ahead, lets a second holder in early);
- every job checks, with one statement, that its process still holds the lease just before it
  runs, so a job starts only in the lease holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, ParamSpec

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from channels import pacing
from channels.errors import RetryableError
from channels.logs import log_failure
from storage import coordination as store

log = logging.getLogger(__name__)
P = ParamSpec("P")
SCHEDULER_LEASE = "scheduler"


class LeaderLease:
    """One process's hold on a named lease in the database (``shared``), or, on SQLite, a
    lease that is always held (one process)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        holder: str,
        ttl: float,
        shared: bool,
        name: str = SCHEDULER_LEASE,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.holder = holder
        self.ttl = ttl
        self.shared = shared
        self.name = name
        self.held = not shared

    async def hold(self) -> bool:
        """Take or renew the lease (one atomic statement); whether this process holds it."""
        if not self.shared:
            return True
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            held = await store.take_lease(
                session,
                name=self.name,
                holder=self.holder,
                now=now,
                until=now + timedelta(seconds=self.ttl),
            )
        if held != self.held:
            log.info(
                "%s %s the %s lease", self.holder, "took" if held else "lost", self.name
            )
        self.held = held
        return held

    async def release(self) -> None:
        if not self.shared or not self.held:
            return
        async with self.sessions() as session, session.begin():
            await store.release_lease(session, name=self.name, holder=self.holder)
        self.held = False

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the lease (or keep trying to take it) until ``stop``; release it then."""
        try:
            while not stop.is_set():
                try:
                    await self.hold()
                except Exception as exc:  # the database blinked: we may have lost it
                    self.held = False
                    log_failure(log, "could not renew the leader lease", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.ttl / 3)
        finally:
            with contextlib.suppress(Exception):
                await self.release()


def leader_only(
    lease: LeaderLease, job: Callable[P, Awaitable[Any]]
) -> Callable[P, Awaitable[None]]:
    """``job``, run only if this process holds ``lease`` (checked in the database just
    before each run)."""

    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        if await lease.hold():
            await job(*args, **kwargs)

    run.__name__ = getattr(job, "__name__", "job")
    run.__qualname__ = getattr(job, "__qualname__", run.__name__)
    return run


class SharedRateLimiter:
    """At most ``rate`` sends a second across every process sharing ``key``: each send
    reserves the next slot in the database and sleeps exactly until it (no polling, so the
    workers together reach the rate). Slots are spaced with :mod:`channels.pacing`'s margin
    for lateness, and a sender that wakes too late for its slot gives it up and takes
    another, so sends reaching the provider up to ``margin`` seconds after their slot never
    put more than ``rate`` into any second."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        key: str,
        rate: float,
        *,
        margin: float = pacing.DEFAULT_MARGIN,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.key = key
        self.rate = rate
        self.margin = margin
        self.spacing = pacing.spacing(1.0 / rate, 1.0, margin)
        self.sleep = sleep
        self.monotonic = monotonic

    async def acquire(self) -> None:
        given_up = 0
        while True:
            slot, late = await wait_for_slot(
                self.sessions, self.key, self.spacing, 60.0, self.sleep, self.monotonic
            )
            if not slot.granted:
                await self.sleep(min(slot.wait, 60.0))  # more than a minute queued: rare
            elif pacing.on_time(late, self.margin) or given_up >= pacing.GIVE_UPS:
                return
            else:
                given_up += 1


async def wait_for_slot(
    sessions: async_sessionmaker[AsyncSession],
    key: str,
    spacing: float,
    max_wait: float,
    sleep: Callable[[float], Awaitable[None]],
    monotonic: Callable[[], float],
) -> tuple[store.Slot, float]:
    """Reserve the next slot of bucket ``key`` and, when granted, sleep until it. Returns the
    slot and how many seconds after it this process woke. The slot's time is by the
    database's clock, somewhere within the statement's round trip: the sleep ends at its
    latest (never early), and the lateness is counted from its earliest (never understated)."""
    async with sessions() as session, session.begin():
        sent = monotonic()
        slot = await store.reserve_slot(session, key=key, interval=spacing, max_wait=max_wait)
        answered = monotonic()
    if not slot.granted:
        return slot, 0.0
    remaining = answered + slot.wait - monotonic()
    if remaining > 0:
        await sleep(remaining)
    return slot, monotonic() - (sent + slot.wait)


class SharedChatLimiter:
    """Telegram's per-chat limits across every process: one message every ``interval``
    seconds to a chat, and ``group_per_minute`` a minute to a group (negative chat ids),
    spaced evenly with :mod:`channels.pacing`'s margin. A wait up to ``max_wait`` is slept; a
    longer one is handed back as a retryable error (nothing reserved) so the dispatcher gets on
    with other chats. (No slot is given up for a late wake here: Telegram's per-chat limits
    are soft, and its 429 answers are retried after the time they name.)"""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        interval: float = 1.0,
        group_per_minute: int = 20,
        max_wait: float = 5.0,
        margin: float = pacing.DEFAULT_MARGIN,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.interval = interval
        self.group_per_minute = group_per_minute
        self.max_wait = max_wait
        self.margin = margin
        self.sleep = sleep
        self.monotonic = monotonic

    async def acquire(self, chat_id: str) -> None:
        if chat_id.startswith("-"):
            key = f"telegram:group:{chat_id}"
            interval = max(self.interval, 60.0 / self.group_per_minute)
            window = 60.0
        else:
            key = f"telegram:chat:{chat_id}"
            interval = window = self.interval
        if interval <= 0:
            return
        slot, _ = await wait_for_slot(
            self.sessions, key, pacing.spacing(interval, window, self.margin), self.max_wait,
            self.sleep, self.monotonic,
        )
        if not slot.granted:
            raise RetryableError(
                f"telegram chat {chat_id} is at its rate limit", retry_after=slot.wait
            )


class Heartbeat:
    """Records every ``every`` seconds that this process is dispatching (and whether it leads)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        name: str,
        every: float,
        lease: LeaderLease | None = None,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.name = name
        self.every = every
        self.lease = lease
        self.started_at: datetime = clock.now()

    async def beat(self) -> None:
        async with self.sessions() as session, session.begin():
            await store.beat(
                session,
                name=self.name,
                started_at=self.started_at,
                now=self.clock.now(),
                leader=bool(self.lease and self.lease.held),
            )

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.beat()
                except Exception as exc:  # keep beating: the health check reports the gap
                    log_failure(log, "could not record the worker heartbeat", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.every)
        finally:
            with contextlib.suppress(Exception):
                async with self.sessions() as session, session.begin():
                    await store.forget_worker(session, name=self.name)
