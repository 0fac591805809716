"""The outbox dispatcher: claims due rows, sends them through their channel adapter at the
channel's rate, and records what happened.

- retryable errors back off exponentially (or as long as the provider asked) up to
  ``outbox_max_attempts``, then the row fails;
- permanent errors fail the row at once; an opted-out error also opts the contact out;
- rows for contacts who opted out after the row was queued are cancelled, not sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.settings import Settings
from channels.base import Channel
from channels.errors import PermanentError, RecipientOptedOut, RetryableError
from storage import repositories as repo
from storage.models import Contact, OutboundMessage, OutboxStatus

log = logging.getLogger(__name__)

ERASE_AFTER_SEND = "erase_after_send"
"""Content flag: blank the row's address and content once it is final (FORGET's reply)."""


class RateLimiter:
    """A token bucket: at most ``rate`` sends per second, bursts of up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class Dispatcher:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        channels: Mapping[str, Channel],
        clock: Clock,
        settings: Settings,
    ) -> None:
        self.sessions = sessions
        self.channels = channels
        self.clock = clock
        self.settings = settings
        self.limiters = {name: RateLimiter(ch.rate_per_second) for name, ch in channels.items()}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Ask the running loop to look for work now rather than at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim and send one batch; the number of rows handled."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            rows = await repo.claim_due(
                session,
                channels=list(self.channels),
                now=now,
                limit=self.settings.dispatcher_batch_size,
                lease=timedelta(seconds=self.settings.outbox_lease_seconds),
            )
        for row in rows:
            await self._deliver(row)
        return len(rows)

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except Exception:  # keep dispatching: one bad batch must not stop every send
                log.exception("dispatcher batch failed")
                handled = 0
            if handled:
                continue
            self._wake.clear()
            waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
            _, pending = await asyncio.wait(
                waiters,
                timeout=self.settings.dispatcher_poll_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in pending:
                task.cancel()

    async def _recheck(self, row: OutboundMessage) -> str:
        """Just before sending: is the row still ours, and may it still go?

        A batch's claim can be old by the time its last row is sent (rate-limit waits, slow
        providers): renewing the lease only if nobody has re-claimed the row since means a
        message is never sent twice, and reading the contact now means a STOP committed a
        moment ago is honoured. Returns "send", "lost" or "opted_out"."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            renewed = await repo.renew_claim(
                session,
                row_id=row.id,
                attempts=row.attempts,
                until=now + timedelta(seconds=self.settings.outbox_lease_seconds),
            )
            if not renewed:
                return "lost"
            if row.contact_id is not None and not row.ignore_opt_out:
                contact = await session.get(Contact, row.contact_id, populate_existing=True)
                if contact is not None and contact.opted_out_at is not None:
                    return "opted_out"
        return "send"

    async def _deliver(self, row: OutboundMessage) -> None:
        if row.address is None:
            await self._finish(row, status=OutboxStatus.CANCELLED, error="no address")
            return
        channel = self.channels[row.channel]
        await self.limiters[row.channel].acquire()
        verdict = await self._recheck(row)
        if verdict == "lost":
            return
        if verdict == "opted_out":
            await self._finish(row, status=OutboxStatus.CANCELLED, error="recipient opted out")
            return
        try:
            provider_id = await channel.send(row.address, row.content)
        except RecipientOptedOut as exc:
            await self._finish(row, status=OutboxStatus.FAILED, error=str(exc), opt_out=True)
        except PermanentError as exc:
            await self._finish(row, status=OutboxStatus.FAILED, error=str(exc))
        except RetryableError as exc:
            await self._retry(row, str(exc), exc.retry_after)
        except Exception as exc:  # an adapter bug: keep the row, retry later, and say so
            log.exception("channel %s raised an unmapped error", row.channel)
            await self._retry(row, f"unexpected error: {exc.__class__.__name__}", None)
        else:
            await self._finish(row, status=OutboxStatus.SENT, provider_id=provider_id)

    async def _retry(self, row: OutboundMessage, error: str, retry_after: float | None) -> None:
        if row.attempts >= self.settings.outbox_max_attempts:
            await self._finish(row, status=OutboxStatus.FAILED, error=f"gave up: {error}")
            return
        delay = self.settings.outbox_backoff_seconds * 2 ** (row.attempts - 1)
        delay = min(delay, self.settings.outbox_backoff_max_seconds)
        if retry_after is not None:
            delay = max(delay, retry_after)
        await self._finish(
            row, status=OutboxStatus.QUEUED, error=error, retry_in=timedelta(seconds=delay)
        )

    async def _finish(
        self,
        claimed: OutboundMessage,
        *,
        status: OutboxStatus,
        error: str | None = None,
        provider_id: str | None = None,
        retry_in: timedelta | None = None,
        opt_out: bool = False,
    ) -> None:
        """Record what happened, unless the row has been re-claimed since (then the newer
        claim owns it)."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            row = await session.get(
                OutboundMessage, claimed.id, with_for_update=True, populate_existing=True
            )
            if (
                row is None
                or row.status != OutboxStatus.SENDING
                or row.attempts != claimed.attempts
            ):
                return
            row.status = status
            row.error = None if error is None else error[:500]
            row.updated_at = now
            if provider_id is not None:
                row.provider_id = provider_id
                if self.channels[row.channel].delivery_reports:
                    # reports the provider sent before we got here (see HeldDeliveryReport)
                    opt_out |= await repo.apply_held_deliveries(session, row, now=now)
            if status == OutboxStatus.SENT:
                row.sent_at = now
            if retry_in is not None:
                row.next_attempt_at = now + retry_in
            if row.content.get(ERASE_AFTER_SEND) and status != OutboxStatus.QUEUED:
                # The "your data has been erased" reply: once it has gone, forget where to.
                row.address = None
                row.content = {}
            if opt_out and row.contact_id is not None:
                await repo.mark_opted_out(
                    session,
                    contact_id=row.contact_id,
                    actor="dispatcher",
                    detail={"channel": row.channel},
                    now=now,
                )
