"""Limits on what one client can make us do: request bodies read with a size limit checked
while reading (an oversized request is refused after ``limit`` bytes rather than read whole
into memory), and inbound messages per sender a minute (:class:`InboundLimiter`)."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from fastapi import Request

from bot.clock import Clock


class BodyTooLarge(Exception):
    """The request body is larger than allowed."""


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


class Verdict(Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"  # the first refusal since the key last had room: worth one log line
    STILL_REFUSED = "still refused"


@dataclass
class _Bucket:
    tokens: float
    at: datetime
    refused: bool = False


class InboundLimiter:
    """At most ``per_minute`` inbound messages a minute per key (a phone number, a client
    address), in bursts of up to ``per_minute``: a token bucket per key, refilled evenly.

    The state is this process's: enough for one server (a later issue keeps it in
    PostgreSQL for several). A bucket left alone for a minute is full again, so it is
    forgotten; past ``max_keys`` the longest-idle are forgotten first.
    """

    def __init__(self, per_minute: int, clock: Clock, *, max_keys: int = 100_000) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # longest idle first
        self._salt = secrets.token_bytes(16)

    def take(self, key: str) -> Verdict:
        """Count one message from ``key``; whether it may go on."""
        now = self.clock.now()
        self._forget_idle(now)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.per_minute), now)
        else:
            elapsed = max(0.0, (now - bucket.at).total_seconds())  # a clock set back: no refill
            bucket.tokens = min(self.per_minute, bucket.tokens + elapsed * self.per_minute / 60)
            bucket.at = now
        self._buckets[key] = bucket
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            bucket.refused = False
            return Verdict.ALLOWED
        verdict = Verdict.STILL_REFUSED if bucket.refused else Verdict.REFUSED
        bucket.refused = True
        return verdict

    def retry_after(self, key: str) -> int:
        """Whole seconds until ``key`` may send again."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.tokens >= 1:
            return 0
        return math.ceil((1 - bucket.tokens) * 60 / self.per_minute)

    def pseudonym(self, key: str) -> str:
        """A short name for ``key`` to put in logs: the same key gives the same name in this
        process, and the key (a phone number) cannot be read back from it."""
        return hashlib.blake2b(key.encode(), key=self._salt, digest_size=4).hexdigest()

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_idle(self, now: datetime) -> None:
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            idle = (now - bucket.at).total_seconds() >= 60
            if not idle and len(self._buckets) < self.max_keys:
                return
            del self._buckets[key]


def client_key(host: str | None) -> str:
    """Whom a request comes from, for limits: its IP address, or for IPv6 its /64 (one
    home or phone is given a whole /64, so single addresses would be no limit at all)."""
    if host is None:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
