"""The scheduler's leader lease on PostgreSQL: one holder at a time, renewals, takeover once a
dead holder's lease has run out, and scheduled jobs that run only in the holder."""

from __future__ import annotations

import asyncio

from bot.clock import FixedClock
from bot.coordination import LeaderLease
from bot.scheduler import build_scheduler
from storage import coordination
from tests.scale.conftest import Builder

TTL = 15.0


def lease_for(services: object, holder: str, clock: FixedClock) -> LeaderLease:
    from bot.services import Services

    assert isinstance(services, Services)
    return LeaderLease(
        sessions=services.sessions, clock=clock, holder=holder, ttl=TTL, shared=True
    )


async def test_two_leases_compete_and_one_wins(build: Builder) -> None:
    clock = FixedClock()
    a, b = build("worker-a", clock=clock), build("worker-b", clock=clock)
    lease_a, lease_b = lease_for(a, "worker-a", clock), lease_for(b, "worker-b", clock)
    assert await lease_a.hold()
    assert not await lease_b.hold()
    clock.advance(seconds=TTL - 1)  # a renews before it runs out...
    assert await lease_a.hold()
    clock.advance(seconds=TTL - 1)  # ...so b still cannot take it, past the first term
    assert not await lease_b.hold()
    async with a.sessions() as session:
        assert await coordination.lease_holder(session, name="scheduler", now=clock.now()) == (
            "worker-a"
        )


async def test_many_racing_at_once_give_exactly_one_holder(build: Builder) -> None:
    clock = FixedClock()
    racers = [build(f"w{i}", clock=clock) for i in range(8)]
    leases = [lease_for(s, f"w{i}", clock) for i, s in enumerate(racers)]
    results = await asyncio.gather(*(lease.hold() for lease in leases))
    assert sum(results) == 1


async def test_a_dead_holders_lease_is_taken_over_after_it_runs_out(build: Builder) -> None:
    clock = FixedClock()
    a, b = build("worker-a", clock=clock), build("worker-b", clock=clock)
    lease_a, lease_b = lease_for(a, "worker-a", clock), lease_for(b, "worker-b", clock)
    assert await lease_a.hold()  # then worker-a dies without releasing
    clock.advance(seconds=TTL - 0.001)
    assert not await lease_b.hold()  # not a moment early
    clock.advance(seconds=0.001)
    assert await lease_b.hold()  # at expiry, the next try takes it over
    assert not await lease_a.hold()  # and a that comes back is not a second leader
    assert lease_b.held and not lease_a.held


async def test_a_released_lease_is_taken_at_once(build: Builder) -> None:
    clock = FixedClock()
    a, b = build("worker-a", clock=clock), build("worker-b", clock=clock)
    lease_a, lease_b = lease_for(a, "worker-a", clock), lease_for(b, "worker-b", clock)
    assert await lease_a.hold()
    await lease_a.release()  # a clean shutdown
    assert await lease_b.hold()


async def test_only_the_leader_runs_scheduled_jobs(build: Builder) -> None:
    clock = FixedClock()
    a, b = build("worker-a", clock=clock), build("worker-b", clock=clock)
    lease_a, lease_b = lease_for(a, "worker-a", clock), lease_for(b, "worker-b", clock)
    runs: list[str] = []

    async def job(who: str) -> None:
        runs.append(who)

    schedulers = {"a": build_scheduler(a, lease_a), "b": build_scheduler(b, lease_b)}
    for who, scheduler in schedulers.items():
        scheduler.add_job(job, "interval", args=[who], seconds=30, id="count")
    for _ in range(5):  # both processes' ticks come round at the same moment
        await asyncio.gather(
            *(scheduler.get_job("count").func(who) for who, scheduler in schedulers.items())
        )
    assert len(runs) == 5 and len(set(runs)) == 1
    leader = runs[0]
    # The scheduler's own jobs go through the same wrapper (add_job wraps every job).
    follower = schedulers["b" if leader == "a" else "a"]
    assert {job.id for job in follower.get_jobs()} >= {
        "purge_held_delivery_reports",
        "purge_coordination",
        "send_scheduled_broadcasts",
        "needs_open_close_due",
        "tender_alerts",
    }
    # The leader dies; after its term the follower's next tick takes over and runs.
    clock.advance(seconds=TTL)
    await follower.get_job("count").func("b" if leader == "a" else "a")
    assert runs[-1] != leader
