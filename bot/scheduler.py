"""The scheduler: periodic jobs, listed here by hand. Deadlines live in our own tables and the
jobs act on whatever is due, so a restart (or a missed run) loses nothing."""

from __future__ import annotations

import logging
from datetime import UTC, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.coordination import LeaderLease, leader_only
from bot.services import Services
from storage import coordination
from storage import repositories as repo

log = logging.getLogger(__name__)


class _Scheduler(AsyncIOScheduler):  # type: ignore[misc]
    """With a lease, every job runs only in the process that holds it."""

    def __init__(self, lease: LeaderLease | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lease = lease

    def add_job(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if self.lease is not None:
            func = leader_only(self.lease, func)
        return super().add_job(func, *args, **kwargs)


def build_scheduler(services: Services, lease: LeaderLease | None = None) -> AsyncIOScheduler:
    """An AsyncIOScheduler with civicbot's jobs; the app's lifespan (or ``civicbot worker``)
    starts and stops it. With ``lease``, a job runs only while this process holds it: one
    process at a time across every worker on PostgreSQL."""
    scheduler = _Scheduler(lease, timezone=UTC)
    every = services.settings.scheduler_interval_seconds
    scheduler.add_job(
        purge_held_reports,
        "interval",
        args=[services],
        hours=1,
        id="purge_held_delivery_reports",
        coalesce=True,
        max_instances=1,
    )
    scheduler.add_job(
        purge_coordination,
        "interval",
        args=[services],
        hours=1,
        id="purge_coordination",
        coalesce=True,
        max_instances=1,
    )
    scheduler.add_job(
        services.broadcasts.send_due,
        "interval",
        seconds=every,
        id="send_scheduled_broadcasts",
        coalesce=True,
        max_instances=1,
    )
    scheduler.add_job(
        services.needs.run_due,
        "interval",
        seconds=every,
        id="needs_open_close_due",
        coalesce=True,
        max_instances=1,
    )
    # PB rounds: open and close at the phase times, then any announcement not sent yet.
    scheduler.add_job(
        services.rounds.run_due,
        "interval",
        seconds=every,
        id="pb_rounds_open_close_due",
        coalesce=True,
        max_instances=1,
    )
    # Tender alerts: instant alerts and introductions every interval (an import from the CLI
    # queues its own alerts at once; this catches anything left), digests when due (08:00
    # Europe/London, kept as next_digest_at in the table), and the live feeds on a schedule.
    scheduler.add_job(
        tender_alerts,
        "interval",
        args=[services],
        seconds=every,
        id="tender_alerts",
        coalesce=True,
        max_instances=1,
    )
    minutes = services.settings.tender_fetch_minutes
    if minutes > 0:
        scheduler.add_job(
            fetch_tenders,
            "interval",
            args=[services],
            minutes=minutes,
            id="tender_fetch",
            coalesce=True,
            max_instances=1,
        )
    if services.polls is not None:
        scheduler.add_job(
            services.polls.close_due,
            "interval",
            seconds=every,
            kwargs={"actor": "scheduler"},
            id="telegram_close_due_polls",
            coalesce=True,
            max_instances=1,
        )
    return scheduler


async def tender_alerts(services: Services) -> None:
    await services.tenders.send_alerts()
    await services.tenders.send_digests()
    await services.tenders.deliver_introductions()


async def fetch_tenders(services: Services) -> None:
    """Fetch both live feeds from where they stopped; a feed that fails keeps its place."""
    from flows.tenders.fetch import SOURCES, Fetcher, FetchError

    fetcher = Fetcher(
        sessions=services.sessions,
        tenders=services.tenders,
        clock=services.clock,
        bases=services.tenders.feed_bases,
    )
    for name in SOURCES:
        try:
            await fetcher.run(name)
        except FetchError as exc:
            log.warning("tender fetch stopped: %s", exc)
    await services.tenders.send_alerts()


HELD_REPORT_TTL = timedelta(days=1)
FORGOTTEN_ID_TTL = timedelta(days=7)


async def purge_held_reports(services: Services) -> int:
    """Drop delivery reports held for a day whose send was never recorded (not ours, or its
    send failed after the provider accepted it), and the digests of erased messages' ids
    after a week (no provider reports that late)."""
    now = services.clock.now()
    async with services.sessions() as session, session.begin():
        n = await repo.purge_held_deliveries(session, before=now - HELD_REPORT_TTL)
        await repo.purge_forgotten_ids(session, before=now - FORGOTTEN_ID_TTL)
    if n:
        log.info("dropped %d delivery report(s) that matched no message", n)
    return n


RATE_BUCKET_IDLE = timedelta(days=1)
HEARTBEAT_TTL = timedelta(days=1)


async def purge_coordination(services: Services) -> None:
    """Forget per-chat send-rate slots a day after their last use (a fresh one behaves the
    same) and heartbeats of workers gone a day."""
    async with services.sessions() as session, session.begin():
        if not services.settings.is_sqlite:
            await coordination.purge_rate_buckets(
                session, idle_seconds=RATE_BUCKET_IDLE.total_seconds()
            )
        await coordination.purge_heartbeats(
            session, before=services.clock.now() - HEARTBEAT_TTL
        )
