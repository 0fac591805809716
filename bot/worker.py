"""The background loops: the outbox dispatcher, the scheduler (its jobs run only in the process
holding the leader lease) and the heartbeat. ``civicbot worker`` runs them alone, as many
copies as wanted against one PostgreSQL; ``civicbot serve`` runs them beside the web app
unless told ``--no-worker``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from bot.coordination import Heartbeat, LeaderLease
from bot.scheduler import build_scheduler
from bot.services import Services

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def background(services: Services, stop: asyncio.Event) -> AsyncIterator[LeaderLease]:
    """Run the loops the settings ask for (``run_dispatcher``, ``run_scheduler``) until the
    block ends; ``stop`` is set then. Yields the scheduler's lease."""
    settings = services.settings
    name = services.dispatcher.name
    lease = LeaderLease(
        sessions=services.sessions,
        clock=services.clock,
        holder=name,
        ttl=settings.leader_lease_seconds,
        shared=not settings.is_sqlite,
    )
    tasks: list[asyncio.Task[None]] = []
    scheduler = None
    if settings.run_dispatcher:
        tasks.append(asyncio.create_task(services.dispatcher.run_forever(stop)))
    if settings.run_scheduler:
        if lease.shared:
            tasks.append(asyncio.create_task(lease.run(stop)))
        scheduler = build_scheduler(services, lease)
        scheduler.start()
    if settings.run_dispatcher or settings.run_scheduler:
        heartbeat = Heartbeat(
            sessions=services.sessions,
            clock=services.clock,
            name=name,
            every=settings.heartbeat_seconds,
            lease=lease if settings.run_scheduler else None,
        )
        tasks.append(asyncio.create_task(heartbeat.run(stop)))
    try:
        yield lease
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_worker(services: Services, stop: asyncio.Event) -> None:
    """``civicbot worker``: the background loops until ``stop`` is set."""
    async with background(services, stop):
        log.info("worker %s is running", services.dispatcher.name)
        await stop.wait()
    log.info("worker %s stopped", services.dispatcher.name)
