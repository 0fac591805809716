"""The outbox dispatcher: claims due rows, sends them through their channel adapter at the
channel's rate, and records what happened.

- retryable errors back off exponentially (or as long as the provider asked) up to
  ``outbox_max_attempts``, then the row fails;
- permanent errors fail the row at once; an opted-out error also opts the contact out;
- rows for contacts who opted out after the row was queued are cancelled, not sent.

Sending at most once where the provider allows it. Just before a send, the row records that
a send is in flight (``in_flight_since``); a definite outcome clears it. When the outcome is
unknown — the provider did not answer (a read timeout) or this process died mid-send — the
mark stays, and the next attempt first asks the provider whether the message went
(:class:`channels.base.Lookup`: Twilio's message list, matching recipient, body and time, and
skipping ids other rows already have) and records it instead of sending it again. Twilio
also echoes the attempt id in its status callback URL, so the first status report of an
accepted send records it even when the REST reply was lost. Telegram has no such lookup: a
send Telegram accepted but did not confirm may go twice. A restarted dispatcher takes back
its own in-flight rows at once (:func:`storage.repositories.reclaim_own`) rather than after
the lease.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.settings import Settings
from channels.base import Channel, Lookup
from channels.errors import ChannelError, PermanentError, RecipientOptedOut, RetryableError
from channels.logs import log_failure
from channels.pacing import RateLimiter
from storage import repositories as repo
from storage.models import Contact, OutboundMessage, OutboxStatus

log = logging.getLogger(__name__)

CLOCK_SKEW = timedelta(minutes=1)  # between our clock and the provider's, at most
ERASE_AFTER_SEND = "erase_after_send"
"""Content flag: blank the row's address and content once it is final (FORGET's reply)."""


class SendLimiter(Protocol):
    """Waits until one more send to a channel fits its rate limit."""

    async def acquire(self) -> None: ...


class Dispatcher:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        channels: Mapping[str, Channel],
        clock: Clock,
        settings: Settings,
        name: str | None = None,
        limiters: Mapping[str, SendLimiter] | None = None,
    ) -> None:
        """``limiters``: a send limiter per channel (shared by every process on PostgreSQL,
        see :class:`bot.coordination.SharedRateLimiter`); a channel without one gets an
        in-process :class:`RateLimiter` at its ``rate_per_second``."""
        self.sessions = sessions
        self.channels = channels
        self.clock = clock
        self.settings = settings
        self.name = name or settings.worker_name
        given = limiters or {}
        self.limiters: dict[str, SendLimiter] = {
            name: given.get(name)
            or RateLimiter(ch.rate_per_second, margin=settings.rate_margin_seconds)
            for name, ch in channels.items()
        }
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Ask the running loop to look for work now rather than at the next poll."""
        self._wake.set()

    def claim_size(self, channel: str) -> int:
        """How many of a channel's rows one batch claims: at most about
        ``dispatcher_claim_seconds`` of sends at the channel's rate. A small batch keeps
        replies ahead of a broadcast across workers: a reply queued behind a batch of bulk
        rows another worker already holds waits only until that batch is sent."""
        rate = self.channels[channel].rate_per_second
        wanted = math.ceil(rate * self.settings.dispatcher_claim_seconds)
        return max(1, min(self.settings.dispatcher_batch_size, wanted))

    async def run_once(self) -> int:
        """Claim and send one batch (replies first within each channel); the number of rows
        handled."""
        now = self.clock.now()
        rows: list[OutboundMessage] = []
        async with self.sessions() as session, session.begin():
            for channel in self.channels:
                rows += await repo.claim_due(
                    session,
                    channels=[channel],
                    now=now,
                    limit=self.claim_size(channel),
                    lease=timedelta(seconds=self.settings.outbox_lease_seconds),
                    claimer=self.name,
                )
        rows.sort(key=lambda r: (r.priority, r.id or 0))
        await self._deliver_all(rows)
        return len(rows)

    async def _deliver_all(self, rows: list[OutboundMessage]) -> None:
        """Send a batch, up to ``dispatcher_concurrency`` recipients at a time (each send
        still waits for its channel's rate). One recipient's rows go one after another, in
        order, so a person's messages never overtake each other."""
        limit = self.settings.dispatcher_concurrency
        if limit <= 1:
            for row in rows:
                await self._deliver(row)
            return
        queues: dict[tuple[str, str | None], list[OutboundMessage]] = {}
        for row in rows:
            queues.setdefault((row.channel, row.address), []).append(row)
        gate = asyncio.Semaphore(limit)

        async def one_recipient(mine: list[OutboundMessage]) -> None:
            async with gate:
                for row in mine:
                    await self._deliver(row)

        results = await asyncio.gather(
            *(one_recipient(mine) for mine in queues.values()), return_exceptions=True
        )
        for result in results:  # the others finished; report the first failure
            if isinstance(result, BaseException):
                raise result

    async def reclaim(self) -> int:
        """Make this dispatcher's rows left mid-send by its previous run due now."""
        async with self.sessions() as session, session.begin():
            n = await repo.reclaim_own(session, claimer=self.name, now=self.clock.now())
        if n:
            log.info("took back %d message(s) left mid-send by the previous run", n)
        return n

    async def run_forever(self, stop: asyncio.Event) -> None:
        try:
            await self.reclaim()
        except Exception as exc:  # the loop below retries; a failed reclaim only delays them
            log_failure(log, "could not take back rows left mid-send", exc)
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except Exception as exc:  # keep dispatching: one bad batch must not stop every send
                log_failure(log, "dispatcher batch failed", exc)
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
                in_flight_since=now,
            )
            if not renewed:
                return "lost"
            if row.contact_id is not None and not row.ignore_opt_out:
                contact = await session.get(Contact, row.contact_id, populate_existing=True)
                if contact is not None and contact.opted_out_at is not None:
                    return "opted_out"
        return "send"

    async def _wait_for_slot(self, row: OutboundMessage) -> str:
        """Wait for the channel's rate slot, then send at once: the claim was renewed just
        before (:meth:`_recheck`, a write that waits for the database to flush), so between
        the slot and the provider there is only a read of the contact (a STOP that came during
        the wait is still honoured). Sends then reach the provider about as evenly spaced as
        the slots. A wait long enough to eat into the lease renews the claim again."""
        checked = self.clock.now()
        await self.limiters[row.channel].acquire()
        lease = timedelta(seconds=self.settings.outbox_lease_seconds)
        if self.clock.now() - checked > lease / 4:
            return await self._recheck(row)
        if row.contact_id is None or row.ignore_opt_out:
            return "send"
        async with self.sessions() as session:
            contact = await session.get(Contact, row.contact_id, populate_existing=True)
        return "opted_out" if contact is not None and contact.opted_out_at is not None else "send"

    async def _deliver(self, row: OutboundMessage) -> None:
        if row.address is None:
            await self._finish(row, status=OutboxStatus.CANCELLED, error="no address")
            return
        channel = self.channels[row.channel]
        verdict = await self._recheck(row)
        if verdict == "send":
            verdict = await self._wait_for_slot(row)
        if verdict == "lost":
            return
        if verdict == "opted_out":
            await self._finish(row, status=OutboxStatus.CANCELLED, error="recipient opted out")
            return
        if row.in_flight_since is not None and isinstance(channel, Lookup):
            try:
                earlier = await self._earlier_send(row, channel)
            except ChannelError as exc:  # can't tell: don't send blind, ask again later
                await self._retry(row, f"checking an earlier attempt: {exc}", None, unsure=True)
                return
            if earlier is not None:  # the earlier attempt went: record it, don't send again
                await self._finish(row, status=OutboxStatus.SENT, provider_id=earlier)
                return
        content = {**row.content, "attempt": row.attempt_id}
        try:
            provider_id = await channel.send(row.address, content)
        except RecipientOptedOut as exc:
            await self._finish(row, status=OutboxStatus.FAILED, error=str(exc), opt_out=True)
        except PermanentError as exc:
            await self._finish(row, status=OutboxStatus.FAILED, error=str(exc))
        except RetryableError as exc:
            await self._retry(row, str(exc), exc.retry_after, unsure=exc.maybe_sent)
        except Exception as exc:  # an adapter bug: keep the row, retry later, and say so
            log_failure(log, f"channel {row.channel} raised an unmapped error", exc)
            await self._retry(row, f"unexpected error: {exc.__class__.__name__}", None)
        else:
            await self._finish(row, status=OutboxStatus.SENT, provider_id=provider_id)

    async def _earlier_send(self, row: OutboundMessage, channel: Lookup) -> str | None:
        """The provider id of an earlier attempt of this row that did go out, if any."""
        assert row.in_flight_since is not None and row.address is not None
        since = row.in_flight_since - CLOCK_SKEW
        found = await channel.find_sent(row.address, row.content, since)
        async with self.sessions() as session:
            taken = await repo.known_provider_ids(session, channel=row.channel, provider_ids=found)
        return next((sid for sid in found if sid not in taken), None)

    async def _retry(
        self,
        row: OutboundMessage,
        error: str,
        retry_after: float | None,
        *,
        unsure: bool = False,
    ) -> None:
        if row.attempts >= self.settings.outbox_max_attempts:
            await self._finish(row, status=OutboxStatus.FAILED, error=f"gave up: {error}")
            return
        delay = self.settings.outbox_backoff_seconds * 2 ** (row.attempts - 1)
        delay = min(delay, self.settings.outbox_backoff_max_seconds)
        if retry_after is not None:
            delay = max(delay, retry_after)
        await self._finish(
            row,
            status=OutboxStatus.QUEUED,
            error=error,
            retry_in=timedelta(seconds=delay),
            in_flight=unsure,
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
        in_flight: bool = False,
    ) -> None:
        """Record what happened, unless the row has been re-claimed since (then the newer
        claim owns it). ``in_flight``: the send may have gone out (keep the mark, so the next
        attempt looks before sending)."""
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
            if not in_flight:
                row.in_flight_since = None
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
                # The "your data has been erased" reply: once it has gone, forget where to,
                # and keep only a digest of its provider id (late reports are then dropped).
                row.address = None
                row.content = {}
                if row.provider_id is not None:
                    await repo.forget_provider_id(
                        session, channel=row.channel, provider_id=row.provider_id, now=now
                    )
                    row.provider_id = None
            if opt_out and row.contact_id is not None:
                await repo.mark_opted_out(
                    session,
                    contact_id=row.contact_id,
                    actor="dispatcher",
                    detail={"channel": row.channel},
                    now=now,
                )
