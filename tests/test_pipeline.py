"""The pipeline end to end on real databases: exactly-once, ordering, locking, transactions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from bot.clock import FixedClock
from bot.services import Services
from channels.base import InboundMessage
from storage.models import Answer, Contact, OutboundMessage
from storage.models import InboundMessage as InboundRow
from tests.conftest import make_settings, start_services


def msg(text: str, provider_id: str, address: str = "+447700900001") -> InboundMessage:
    return InboundMessage(channel="sim-sms", address=address, provider_id=provider_id, text=text)


async def count(services: Services, model: type) -> int:
    async with services.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_redelivery_is_processed_once(any_services: Services) -> None:
    first = await any_services.pipeline.handle(msg("hi", "p-1"))
    again = await any_services.pipeline.handle(msg("hi", "p-1"))
    assert not first.duplicate and len(first.outbox) == 1
    assert again.duplicate and again.outbox == ()
    assert await count(any_services, InboundRow) == 1
    assert await count(any_services, OutboundMessage) == 1


def chain_flow(directory: Path, length: int) -> None:
    """A flow of ``length`` questions in a row: answer k lands at node k only if the messages
    were handled one at a time, in order, with none lost."""
    lines = ["id: chain", "title: Chain", "triggers: [CHAIN]", "start: q1", "nodes:"]
    for k in range(1, length + 1):
        nxt = f"q{k + 1}" if k < length else "done"
        lines += [
            f"  q{k}:",
            "    type: input",
            f"    text: Question {k}",
            f"    save_as: a{k}",
            f"    next: {nxt}",
        ]
    lines += ["  done:", "    type: end", "    text: All done"]
    (directory / "chain.yaml").write_text("\n".join(lines) + "\n")


@pytest.fixture
async def chain_services(database_url: str, clock: FixedClock, tmp_path: Path) -> Services:
    flows = tmp_path / "flows"
    flows.mkdir()
    chain_flow(flows, 50)
    return await start_services(make_settings(database_url, flows_dir=flows), clock)


async def _start_chain(services: Services) -> None:
    await services.pipeline.handle(msg("hi", "setup-0"))
    await services.pipeline.handle(msg("yes", "setup-1"))  # consent
    result = await services.pipeline.handle(msg("CHAIN", "setup-2"))
    assert result.outbox[-1].content["text"] == "Question 1"


async def test_fifty_concurrent_messages_run_one_at_a_time_in_order(
    chain_services: Services,
) -> None:
    services = chain_services
    await _start_chain(services)
    results = await asyncio.gather(
        *(services.pipeline.handle(msg(f"m{k}", f"burst-{k}")) for k in range(1, 51))
    )
    assert not any(r.duplicate for r in results)
    async with services.sessions() as s:
        answers = {
            a.key: a.value
            for a in (await s.execute(select(Answer).where(Answer.flow_id == "chain"))).scalars()
        }
    assert answers == {f"a{k}": f"m{k}" for k in range(1, 51)}
    last = results[-1].outbox[-1].content["text"]
    assert last == "All done"
    assert len(services.pipeline.locks) == 0  # no lock left behind
    await services.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_row_lock_serialises_two_processes_on_postgresql(
    chain_services: Services, clock: FixedClock
) -> None:
    """Two pipelines with separate engines and in-process locks stand in for two processes."""
    first = chain_services
    await _start_chain(first)
    second = await start_services(first.settings, clock)
    pipelines = [first.pipeline, second.pipeline]
    await asyncio.gather(*(pipelines[k % 2].handle(msg(f"m{k}", f"two-{k}")) for k in range(1, 51)))
    async with first.sessions() as s:
        keys = [
            a.key
            for a in (await s.execute(select(Answer).where(Answer.flow_id == "chain"))).scalars()
        ]
    # Had two transactions read the same state, two answers would land on one question.
    assert sorted(keys) == sorted(f"a{k}" for k in range(1, 51))
    await second.close()
    await first.close()


async def test_sqlite_writers_take_turns_in_arrival_order(services: Services) -> None:
    """On SQLite (one process, one writer at a time) transactions queue in arrival order
    rather than in SQLite's busy handler, which retries after sleeps in no order."""
    checked_out, most = 0, 0  # connections taken from the pool: one per waiting transaction

    def checkout(*_args: object) -> None:
        nonlocal checked_out, most
        checked_out += 1
        most = max(most, checked_out)

    def checkin(*_args: object) -> None:
        nonlocal checked_out
        checked_out -= 1

    event.listen(services.db.sync_engine, "checkout", checkout)
    event.listen(services.db.sync_engine, "checkin", checkin)
    results = await asyncio.gather(
        *(services.pipeline.handle(msg("hi", f"turn-{k}", f"+4477009{k:05d}")) for k in range(24))
    )
    assert all(len(r.outbox) == 1 for r in results)
    assert most == 1
    async with services.sessions() as s:
        stored = (
            await s.execute(select(InboundRow.provider_id).order_by(InboundRow.id))
        ).scalars()
        assert list(stored) == [f"turn-{k}" for k in range(24)]


async def test_a_failing_action_rolls_back_nothing_else(services: Services) -> None:
    async def broken(_ctx: object) -> None:
        raise RuntimeError("lookup service down")

    services.pipeline.actions = {"lookup_ward": broken}  # type: ignore[dict-item]
    for k, text in enumerate(["hi", "yes", "1"]):
        await services.pipeline.handle(msg(text, f"a-{k}"))
    result = await services.pipeline.handle(msg("CF10 1EP", "a-3"))
    # The person is told, and the answer and reply are stored together.
    assert [r.content["text"] for r in result.outbox] == [
        "Sorry, something went wrong on our side. Please try again later, or text MENU."
    ]
    async with services.sessions() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        # the postcode is kept on the contact (FORGET erases it), never as an answer
        assert contact.postcode == "CF10 1EP" and contact.ward_code is None
        assert (await s.execute(select(Answer.value))).scalars().all() == []
