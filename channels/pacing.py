"""Send pacing: evenly spaced send slots, with a margin for lateness.

A provider that takes at most ``limit`` sends per ``window`` seconds counts them when they
reach it, and each send reaches it a little after its slot: the process wakes late, the
HTTP client and the network take their time. With slots spaced ``window / limit`` apart (the
plain rate), one late send and the send a window after it, on time, already put ``limit + 1``
into one sliding window. Spaced ``(window + margin) / limit`` apart, the limit holds for any
lateness up to ``margin``: the sends a provider sees in ``[t, t + window)`` had their slots in
``(t - margin, t + window)``, an interval exactly ``limit`` spacings long, which holds at most
``limit`` slots. The cost is ``margin / (window + margin)`` of the rate: 3.8 % at the default
0.04 s for a per-second limit.

A sender that wakes more than half the margin after its slot gives the slot up and takes
another (the other half is left for the request after it), at most :data:`GIVE_UPS` times in
a row: a process starved of CPU for longer than that sends anyway rather than not at all, and
then the bound does not hold. The PostgreSQL buckets shared by several workers
(:class:`bot.coordination.SharedRateLimiter`) follow the same rule; :class:`RateLimiter` is the
single process's (SQLite).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

GIVE_UPS = 3
"""Slots a sender gives up in a row for waking too late before it sends late anyway."""

DEFAULT_MARGIN = 0.04
"""Seconds of lateness the spacing allows for (``CIVICBOT_RATE_MARGIN_SECONDS``)."""


def spacing(interval: float, window: float, margin: float) -> float:
    """Seconds between slots for one send every ``interval`` seconds, counted by the provider
    per ``window`` seconds, so that sends up to ``margin`` seconds late never exceed it."""
    return interval * (1.0 + margin / window)


def on_time(late: float, margin: float) -> bool:
    """Whether a sender that woke ``late`` seconds after its slot may still use it."""
    return late <= margin / 2


class RateLimiter:
    """At most ``rate`` sends in any second, in this process: evenly spaced slots, each send
    sleeping until its own (concurrent senders each get a different slot; no bursts)."""

    def __init__(
        self,
        rate: float,
        *,
        margin: float = DEFAULT_MARGIN,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.margin = margin
        self.spacing = spacing(1.0 / rate, 1.0, margin)
        self.monotonic = monotonic
        self.sleep = sleep
        self._next = float("-inf")

    async def acquire(self) -> None:
        for _ in range(GIVE_UPS + 1):
            now = self.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.spacing  # taken before sleeping: the next sender's slot
            if slot > now:
                await self.sleep(slot - now)
            if on_time(self.monotonic() - slot, self.margin):
                return
