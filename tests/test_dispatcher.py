"""The outbox dispatcher with a scripted fake channel: retries, permanent failures, opt-outs,
priorities and leases, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import select

from bot.clock import FixedClock
from bot.dispatcher import Dispatcher
from bot.services import Services
from channels.base import Content
from channels.errors import PermanentError, RecipientOptedOut, RetryableError
from flows.events import MessageCreated
from storage.models import AuditLog, Contact, OutboundMessage, OutboxStatus, Priority
from tests.support import sms


class FakeChannel:
    """A real Channel implementation whose sends follow a script of outcomes."""

    name = "fake"
    rate_per_second = 1000.0
    delivery_reports = False

    def __init__(self, script: Iterator[Exception | None] | None = None) -> None:
        self.script = script
        self.sent: list[tuple[str, str]] = []

    def render(self, message: MessageCreated, language: str = "en") -> Content:
        return sms(message, language)

    async def send(self, address: str, content: Content) -> str | None:
        outcome = next(self.script, None) if self.script else None
        if outcome is not None:
            raise outcome
        self.sent.append((address, content["text"]))
        return f"fake-{len(self.sent)}"


def dispatcher_for(services: Services, channel: FakeChannel) -> Dispatcher:
    return Dispatcher(
        sessions=services.sessions,
        channels={"fake": channel},
        clock=services.clock,
        settings=services.settings,
    )


async def enqueue(
    services: Services,
    text: str,
    *,
    priority: int = Priority.REPLY,
    contact_id: int | None = None,
    ignore_opt_out: bool = False,
) -> int:
    now = services.clock.now()
    row = OutboundMessage(
        channel="fake",
        address="+447700900001",
        contact_id=contact_id,
        content={"text": text},
        priority=priority,
        ignore_opt_out=ignore_opt_out,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    async with services.sessions() as s, s.begin():
        s.add(row)
    assert row.id is not None
    return row.id


async def load(services: Services, row_id: int) -> OutboundMessage:
    async with services.sessions() as s:
        row = await s.get(OutboundMessage, row_id)
    assert row is not None
    return row


async def make_contact(services: Services, opted_out: bool = False) -> int:
    now = services.clock.now()
    contact = Contact(created_at=now, opted_out_at=now if opted_out else None)
    async with services.sessions() as s, s.begin():
        s.add(contact)
    assert contact.id is not None
    return contact.id


async def test_sends_and_records_provider_id(any_services: Services) -> None:
    channel = FakeChannel()
    row_id = await enqueue(any_services, "hello")
    assert await dispatcher_for(any_services, channel).run_once() == 1
    row = await load(any_services, row_id)
    assert (row.status, row.provider_id, row.attempts) == (OutboxStatus.SENT, "fake-1", 1)
    assert row.sent_at == any_services.clock.now()
    assert channel.sent == [("+447700900001", "hello")]


async def test_retryable_error_backs_off_then_succeeds(
    any_services: Services, clock: FixedClock
) -> None:
    channel = FakeChannel(iter([RetryableError("429 too many"), RetryableError("500"), None]))
    dispatcher = dispatcher_for(any_services, channel)
    row_id = await enqueue(any_services, "retry me")
    await dispatcher.run_once()
    row = await load(any_services, row_id)
    assert (row.status, row.error) == (OutboxStatus.QUEUED, "429 too many")
    assert row.next_attempt_at == clock.now() + timedelta(seconds=5)
    assert await dispatcher.run_once() == 0  # not due yet
    clock.advance(seconds=5)
    await dispatcher.run_once()
    row = await load(any_services, row_id)
    assert row.next_attempt_at == clock.now() + timedelta(seconds=10)  # doubled
    clock.advance(seconds=10)
    await dispatcher.run_once()
    row = await load(any_services, row_id)
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 3)
    assert channel.sent == [("+447700900001", "retry me")]


async def test_retry_after_from_the_provider_is_respected(
    services: Services, clock: FixedClock
) -> None:
    channel = FakeChannel(iter([RetryableError("slow down", retry_after=60)]))
    row_id = await enqueue(services, "x")
    await dispatcher_for(services, channel).run_once()
    assert (await load(services, row_id)).next_attempt_at == clock.now() + timedelta(seconds=60)


async def test_gives_up_after_max_attempts(services: Services, clock: FixedClock) -> None:
    attempts = services.settings.outbox_max_attempts
    channel = FakeChannel(iter([RetryableError("down")] * attempts))
    dispatcher = dispatcher_for(services, channel)
    row_id = await enqueue(services, "x")
    for _ in range(attempts):
        await dispatcher.run_once()
        clock.advance(hours=2)
    row = await load(services, row_id)
    assert (row.status, row.attempts, row.error) == (OutboxStatus.FAILED, attempts, "gave up: down")


async def test_permanent_error_fails_once(any_services: Services) -> None:
    channel = FakeChannel(iter([PermanentError("invalid number")]))
    row_id = await enqueue(any_services, "x")
    await dispatcher_for(any_services, channel).run_once()
    row = await load(any_services, row_id)
    assert (row.status, row.error, row.attempts) == (OutboxStatus.FAILED, "invalid number", 1)


async def test_opted_out_error_opts_the_contact_out(any_services: Services) -> None:
    contact_id = await make_contact(any_services)
    channel = FakeChannel(iter([RecipientOptedOut("21610 unsubscribed")]))
    dispatcher = dispatcher_for(any_services, channel)
    first = await enqueue(any_services, "one", contact_id=contact_id)
    second = await enqueue(any_services, "two", contact_id=contact_id, priority=Priority.BULK)
    await dispatcher.run_once()
    async with any_services.sessions() as s:
        contact = await s.get(Contact, contact_id)
    assert contact is not None and contact.opted_out_at is not None
    async with any_services.sessions() as s:
        audit = (await s.execute(select(AuditLog))).scalar_one()
    assert (audit.actor, audit.action, audit.subject) == (
        "dispatcher",
        "opted_out",
        f"contact:{contact_id}",
    )
    assert (await load(any_services, first)).status == OutboxStatus.FAILED
    assert (await load(any_services, second)).status == OutboxStatus.CANCELLED
    third = await enqueue(any_services, "three", contact_id=contact_id)
    await dispatcher.run_once()
    assert (await load(any_services, third)).status == OutboxStatus.CANCELLED
    assert channel.sent == []


async def test_opted_out_contacts_get_only_the_stop_confirmation(any_services: Services) -> None:
    contact_id = await make_contact(any_services, opted_out=True)
    channel = FakeChannel()
    bulk = await enqueue(any_services, "news", contact_id=contact_id, priority=Priority.BULK)
    confirm = await enqueue(
        any_services, "unsubscribed", contact_id=contact_id, ignore_opt_out=True
    )
    await dispatcher_for(any_services, channel).run_once()
    assert channel.sent == [("+447700900001", "unsubscribed")]
    assert (await load(any_services, bulk)).status == OutboxStatus.CANCELLED
    assert (await load(any_services, confirm)).status == OutboxStatus.SENT


async def test_replies_go_before_bulk(services: Services) -> None:
    channel = FakeChannel()
    for k in range(3):
        await enqueue(services, f"bulk {k}", priority=Priority.BULK)
    await enqueue(services, "reply")
    await dispatcher_for(services, channel).run_once()
    assert [text for _, text in channel.sent] == ["reply", "bulk 0", "bulk 1", "bulk 2"]


async def test_an_adapter_bug_keeps_the_row_for_retry(services: Services) -> None:
    channel = FakeChannel(iter([KeyError("text")]))
    row_id = await enqueue(services, "x")
    await dispatcher_for(services, channel).run_once()
    row = await load(services, row_id)
    assert (row.status, row.error) == (OutboxStatus.QUEUED, "unexpected error: KeyError")


async def test_simulator_rows_are_marked_sent(services: Services) -> None:
    from channels.base import InboundMessage

    await services.pipeline.handle(
        InboundMessage(channel="sim-sms", address="a", provider_id="1", text="hi")
    )
    assert await services.dispatcher.run_once() == 1
    async with services.sessions() as s:
        statuses = (await s.execute(select(OutboundMessage.status))).scalars().all()
    assert statuses == [OutboxStatus.SENT]


class HookChannel(FakeChannel):
    """Runs ``hook`` (once) while the first message is being sent."""

    def __init__(self, hook: object) -> None:
        super().__init__()
        self.hook = hook

    async def send(self, address: str, content: Content) -> str | None:
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()  # type: ignore[operator]
        return await super().send(address, content)


async def test_a_stop_committed_mid_batch_is_honoured(any_services: Services) -> None:
    contact_id = await make_contact(any_services)

    async def stop() -> None:
        async with any_services.sessions() as s, s.begin():
            contact = await s.get(Contact, contact_id)
            assert contact is not None
            contact.opted_out_at = any_services.clock.now()

    channel = HookChannel(stop)
    await enqueue(any_services, "first")
    second = await enqueue(any_services, "second", contact_id=contact_id)
    await dispatcher_for(any_services, channel).run_once()
    assert channel.sent == [("+447700900001", "first")]
    assert (await load(any_services, second)).status == OutboxStatus.CANCELLED


class StallingLimiter:
    """A rate limiter whose second wait is long enough for the batch's lease to run out,
    during which another dispatcher runs."""

    def __init__(self, stall: object) -> None:
        self.calls = 0
        self.stall = stall

    async def acquire(self) -> None:
        self.calls += 1
        if self.calls == 2:
            await self.stall()  # type: ignore[operator]


async def test_rows_reclaimed_after_a_lease_ran_out_are_sent_once(
    any_services: Services, clock: FixedClock
) -> None:
    """Dispatcher A waits so long between sends that its batch's lease runs out and B
    re-claims the rest of it. Each message still goes exactly once."""
    channel_a, channel_b = FakeChannel(), FakeChannel()
    a, b = dispatcher_for(any_services, channel_a), dispatcher_for(any_services, channel_b)

    async def stall_while_b_runs() -> None:
        clock.advance(seconds=any_services.settings.outbox_lease_seconds + 1)
        await b.run_once()

    a.limiters["fake"] = StallingLimiter(stall_while_b_runs)  # type: ignore[assignment]
    ids = [await enqueue(any_services, f"m{k}") for k in range(3)]
    await a.run_once()
    assert [t for _, t in channel_a.sent] == ["m0"]
    assert [t for _, t in channel_b.sent] == ["m1", "m2"]
    rows = [await load(any_services, i) for i in ids]
    assert [(r.status, r.provider_id) for r in rows] == [
        (OutboxStatus.SENT, "fake-1"),
        (OutboxStatus.SENT, "fake-1"),
        (OutboxStatus.SENT, "fake-2"),
    ]


class SlowFirstChannel(FakeChannel):
    """Twilio slow to answer one send: the send of ``slow`` waits until ``then`` has gone."""

    def __init__(self, slow: str, then: str) -> None:
        super().__init__()
        self.slow, self.then = slow, then
        self.went = asyncio.Event()

    async def send(self, address: str, content: Content) -> str | None:
        if content["text"] == self.slow:
            await self.went.wait()
        provider_id = await super().send(address, content)
        if content["text"] == self.then:
            self.went.set()
        return provider_id


async def test_a_slow_send_holds_up_only_its_own_recipient(any_services: Services) -> None:
    """Recipients are sent to side by side (CIVICBOT_DISPATCHER_CONCURRENCY), one person's
    messages in order: while A's first message waits for the provider, B's go, and A's
    second waits for A's first."""
    channel = SlowFirstChannel(slow="a1", then="b2")
    for text, address in (("a1", "+447700900001"), ("b1", "+447700900002"),
                          ("a2", "+447700900001"), ("b2", "+447700900002")):
        row = OutboundMessage(
            channel="fake", address=address, content={"text": text},
            next_attempt_at=any_services.clock.now(), created_at=any_services.clock.now(),
            updated_at=any_services.clock.now(),
        )
        async with any_services.sessions() as s, s.begin():
            s.add(row)
    async with asyncio.timeout(30):  # one at a time, a1 would wait for b2 for ever
        assert await dispatcher_for(any_services, channel).run_once() == 4
    assert [t for _, t in channel.sent] == ["b1", "b2", "a1", "a2"]
