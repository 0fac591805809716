"""The scheduler: periodic jobs, listed here by hand. Deadlines live in our own tables and the
jobs act on whatever is due, so a restart (or a missed run) loses nothing."""

from __future__ import annotations

import logging
from datetime import UTC

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.services import Services

log = logging.getLogger(__name__)


def build_scheduler(services: Services) -> AsyncIOScheduler:
    """An AsyncIOScheduler with civicbot's jobs; the app's lifespan starts and stops it."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    every = services.settings.scheduler_interval_seconds
    if services.settings.telegram_enabled:
        from bot.telegram_updates import TelegramUpdates

        updates = TelegramUpdates(services)
        scheduler.add_job(
            updates.close_due_polls,
            "interval",
            seconds=every,
            id="telegram_close_due_polls",
            coalesce=True,
            max_instances=1,
        )
    return scheduler
