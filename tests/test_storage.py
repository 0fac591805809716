"""Repository contract tests, run against a SQLite file and a PostgreSQL server alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

from bot.clock import FixedClock
from bot.services import Services
from storage import repositories as repo
from storage.db import IDLE_PING_SECONDS, create_engine, current_revision, head_revision
from storage.models import (
    Answer,
    ChannelIdentity,
    Contact,
    HeldDeliveryReport,
    InboundMessage,
    OutboundMessage,
    OutboxStatus,
    Priority,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def test_migrations_match_the_models(any_services: Services) -> None:
    assert await current_revision(any_services.db) == head_revision()

    def diff(conn):  # type: ignore[no-untyped-def]
        return compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)

    async with any_services.db.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


async def test_inbound_is_unique_per_channel_and_provider_id(any_services: Services) -> None:
    async with any_services.sessions() as s, s.begin():
        first = await repo.record_inbound(
            s, channel="sms", provider_id="SM1", address="+44", text="hi", raw={}, now=T0
        )
        again = await repo.record_inbound(
            s, channel="sms", provider_id="SM1", address="+44", text="other", raw={}, now=T0
        )
        other_channel = await repo.record_inbound(
            s, channel="telegram", provider_id="SM1", address="1", text="hi", raw={}, now=T0
        )
    assert first is not None and other_channel is not None and again is None
    async with any_services.sessions() as s:
        rows = (await s.execute(select(InboundMessage))).scalars().all()
    assert sorted(r.text or "" for r in rows) == ["hi", "hi"]


async def test_database_errors_never_carry_what_people_wrote(any_services: Services) -> None:
    """Errors are logged with their message: the engines hide the statement's parameters."""
    row = {"channel": "sms", "provider_id": "SM1", "address": "+447700900555"}
    async with any_services.sessions() as s, s.begin():
        s.add(InboundMessage(**row, text="my private words", received_at=T0))
    with pytest.raises(IntegrityError) as failed:
        async with any_services.sessions() as s, s.begin():
            s.add(InboundMessage(**row, text="my private words", received_at=T0))
    message = str(failed.value)
    assert "INSERT INTO inbound_messages" in message
    assert "private words" not in message and "900555" not in message


async def test_identity_is_created_once_and_timestamps_stay_utc(any_services: Services) -> None:
    async with any_services.sessions() as s, s.begin():
        identity, contact = await repo.lock_identity(
            s, channel="sms", address="+447700900001", now=T0, language="cy"
        )
    async with any_services.sessions() as s, s.begin():
        again, same = await repo.lock_identity(
            s, channel="sms", address="+447700900001", now=T0 + timedelta(days=1), language="en"
        )
    assert (again.id, same.id) == (identity.id, contact.id)
    assert same.language == "cy"
    assert same.created_at == T0 and same.created_at.tzinfo is not None
    async with any_services.sessions() as s:
        assert len((await s.execute(select(Contact))).scalars().all()) == 1


async def test_erase_keeps_answers_but_not_the_person(any_services: Services) -> None:
    async with any_services.sessions() as s, s.begin():
        identity, contact = await repo.lock_identity(
            s, channel="sms", address="+447700900002", now=T0, language="en"
        )
        contact.postcode, contact.ward_code, contact.consent_at = "CF10 1EP", "DEMO-CATHAYS", T0
        inbound = await repo.record_inbound(
            s,
            channel="sms",
            provider_id="SM9",
            address="+447700900002",
            text="my secret",
            raw={"Body": "my secret"},
            now=T0,
        )
        assert inbound is not None and contact.id is not None
        await repo.link_inbound(s, inbound_id=inbound, contact_id=contact.id)
        s.add(
            Answer(
                contact_id=contact.id,
                flow_id="f",
                node_id="n",
                key="vote",
                value=[1],
                created_at=T0,
            )
        )
        await s.flush()
        await repo.erase_contact(s, contact_id=contact.id, now=T0)
    async with any_services.sessions() as s:
        erased = await s.get(Contact, contact.id)
        assert erased is not None and erased.erased_at == T0
        assert (erased.postcode, erased.ward_code, erased.consent_at) == (None, None, None)
        assert (await s.execute(select(ChannelIdentity))).scalars().all() == []
        answer = (await s.execute(select(Answer))).scalar_one()
        assert answer.contact_id is None and answer.value == [1]
        # the message is gone: its text, its number, its provider id (a Twilio SID leads back
        # to the number) and its time (which would link what is kept to the person)
        assert (await s.execute(select(InboundMessage))).scalars().all() == []


async def test_ward_lookup_ignores_spacing_and_case(services: Services) -> None:
    async with services.sessions() as s:
        ward = await repo.ward_for_postcode(s, postcode="cf10 1ep")
        assert ward is not None and ward.name == "Cathays"
        assert await repo.ward_for_postcode(s, postcode="SW1A 1AA") is None


def _row(priority: int, at: datetime, channel: str = "sim-sms") -> OutboundMessage:
    return OutboundMessage(
        channel=channel,
        address="+44",
        content={"text": "x"},
        priority=priority,
        next_attempt_at=at,
        created_at=at,
        updated_at=at,
    )


async def test_claim_due_orders_replies_first_and_leases(
    any_services: Services, clock: FixedClock
) -> None:
    async with any_services.sessions() as s, s.begin():
        s.add_all(
            [
                _row(Priority.BULK, T0),
                _row(Priority.REPLY, T0),
                _row(Priority.REPLY, T0 + timedelta(hours=1)),
                _row(Priority.REPLY, T0, channel="elsewhere"),
            ]
        )
    async with any_services.sessions() as s, s.begin():
        claimed = await repo.claim_due(
            s, channels=["sim-sms"], now=T0, limit=10, lease=timedelta(minutes=2)
        )
        assert [r.priority for r in claimed] == [Priority.REPLY, Priority.BULK]
        assert all(r.status == OutboxStatus.SENDING and r.attempts == 1 for r in claimed)
    async with any_services.sessions() as s, s.begin():
        nothing = await repo.claim_due(
            s,
            channels=["sim-sms"],
            now=T0 + timedelta(minutes=1),
            limit=10,
            lease=timedelta(minutes=2),
        )
        assert nothing == []
    async with any_services.sessions() as s, s.begin():
        reclaimed = await repo.claim_due(
            s,
            channels=["sim-sms"],
            now=T0 + timedelta(minutes=3),
            limit=10,
            lease=timedelta(minutes=2),
        )
        assert len(reclaimed) == 2 and all(r.attempts == 2 for r in reclaimed)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_skip_locked_claims_are_disjoint_on_postgresql(any_services: Services) -> None:
    async with any_services.sessions() as s, s.begin():
        s.add_all([_row(Priority.REPLY, T0) for _ in range(6)])
    async with any_services.sessions() as a, a.begin():
        first = await repo.claim_due(
            a, channels=["sim-sms"], now=T0, limit=3, lease=timedelta(minutes=2)
        )
        async with any_services.sessions() as b, b.begin():
            second = await repo.claim_due(
                b, channels=["sim-sms"], now=T0, limit=10, lease=timedelta(minutes=2)
            )
    assert len(first) == 3 and len(second) == 3
    assert not {r.id for r in first} & {r.id for r in second}


async def test_a_report_held_while_the_send_is_recorded_is_not_missed(
    any_services: Services,
) -> None:
    # The status webhook finds no row for the SID and holds the report; before it commits,
    # the dispatcher stores that SID and looks for held reports. One must see the other.
    sid = "SM" + "a" * 32
    row = _row(Priority.REPLY, T0)
    row.status = OutboxStatus.SENDING
    async with any_services.sessions() as s, s.begin():
        s.add(row)

    async def dispatcher_records_the_sid() -> None:
        async with any_services.sessions() as b, b.begin():
            sending = await b.get(OutboundMessage, row.id, with_for_update=True)
            assert sending is not None
            sending.provider_id = sid
            sending.status = OutboxStatus.SENT
            await repo.apply_held_deliveries(b, sending, now=T0)

    async with any_services.sessions() as a:
        async with a.begin():
            held = await repo.record_delivery(
                a,
                channel=row.channel,
                provider_id=sid,
                status=OutboxStatus.DELIVERED,
                provider_status="delivered",
                error=None,
                opted_out=False,
                now=T0,
            )
            assert held is None
            await a.flush()
            task = asyncio.create_task(dispatcher_records_the_sid())
            await asyncio.sleep(0.3)  # the dispatcher gets there before the webhook commits
        await task
    async with any_services.sessions() as s:
        final = await s.get(OutboundMessage, row.id)
        left = list((await s.execute(select(HeldDeliveryReport))).scalars())
    assert final is not None and final.status == OutboxStatus.DELIVERED
    assert left == []


async def test_a_pooled_connection_the_server_dropped_is_replaced(postgres_url: str) -> None:
    """PostgreSQL restarted, or a proxy closed an idle connection: the next transaction
    gets a live connection rather than an error (pooled connections idle for a while are
    pinged before use)."""
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            dropped = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = create_engine(postgres_url, poolclass=NullPool)
        async with admin.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped})
        await admin.dispose()
        await asyncio.sleep(IDLE_PING_SECONDS + 0.2)
        async with engine.connect() as conn:
            now = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert now != dropped
    finally:
        await engine.dispose()
