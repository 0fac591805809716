"""Send pacing (channels/pacing.py): with slots spaced for a margin of lateness, no sliding
second at the provider holds more than the limit, whatever each send's lateness within the
margin; a late wake gives its slot up, a few times at most. The clock here is simulated, so
these are exact checks of the rule, not timings."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.pacing import DEFAULT_MARGIN, GIVE_UPS, RateLimiter, spacing
from tests.scale.support import busiest_window


class SimulatedTime:
    """A monotonic clock that only sleeps move, each wake ``late`` seconds after it was due."""

    def __init__(self, lateness: list[float]) -> None:
        self.now = 1000.0
        self.lateness = lateness
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        late = self.lateness[self.sleeps % len(self.lateness)]
        self.sleeps += 1
        self.now += seconds + late


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=120),
    margin=st.floats(min_value=0.005, max_value=0.2),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_no_sliding_second_holds_more_than_the_rate(rate: int, margin: float, seed: int) -> None:
    asyncio.run(_paced_sends(rate, margin, seed))


async def _paced_sends(rate: int, margin: float, seed: int) -> None:
    rng = random.Random(seed)
    # Wakes up to half the margin late (kept), and some later (given up); each send then
    # takes up to the other half of the margin to reach the provider.
    wakes = [rng.uniform(0, margin / 2) if rng.random() < 0.8 else rng.uniform(0, 3 * margin)
             for _ in range(97)]
    clock = SimulatedTime(wakes)
    limiter = RateLimiter(rate, margin=margin, monotonic=clock.monotonic, sleep=clock.sleep)
    arrivals = []
    for _ in range(3 * rate + 5):
        before = clock.sleeps
        await limiter.acquire()
        forced = clock.sleeps - before > GIVE_UPS  # sent late after giving up the most
        if not forced:
            arrivals.append(clock.now + rng.uniform(0, margin / 2))
    assert busiest_window(arrivals) <= rate


async def test_plain_rate_spacing_lets_one_late_send_exceed_the_limit() -> None:
    """Why the margin: slots exactly 1/rate apart, one send late by a millisecond."""
    rate = 10
    slots = [i / rate for i in range(2 * rate)]
    arrivals = [t + (0.001 if i == 0 else 0.0) for i, t in enumerate(slots)]
    assert busiest_window(arrivals) == rate + 1
    paced = [i * spacing(1 / rate, 1.0, DEFAULT_MARGIN) for i in range(2 * rate)]
    assert busiest_window([t + (0.001 if i == 0 else 0.0) for i, t in enumerate(paced)]) == rate


async def test_concurrent_senders_get_evenly_spaced_slots() -> None:
    clock = SimulatedTime([0.0])
    limiter = RateLimiter(4, margin=0.04, monotonic=clock.monotonic, sleep=clock.sleep)
    await limiter.acquire()  # an idle limiter sends at once
    assert clock.sleeps == 0
    await limiter.acquire()
    assert clock.now == pytest.approx(1000.0 + 1.04 / 4)  # no burst: the next slot


async def test_a_late_wake_gives_its_slot_up_and_a_starved_one_sends_anyway() -> None:
    clock = SimulatedTime([0.5, 0.0])  # the first wake half a second late, the next on time
    limiter = RateLimiter(1, margin=0.04, monotonic=clock.monotonic, sleep=clock.sleep)
    await limiter.acquire()
    await limiter.acquire()
    assert clock.sleeps == 2  # the slot at +1.04 s given up (woken at 1.54 s), +2.08 s used
    assert clock.now == pytest.approx(1000.0 + 2.08)

    starved = SimulatedTime([0.5])  # every wake half a second late
    limiter = RateLimiter(1, margin=0.04, monotonic=starved.monotonic, sleep=starved.sleep)
    await limiter.acquire()
    await limiter.acquire()
    assert starved.sleeps == GIVE_UPS + 1
