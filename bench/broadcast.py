"""A broadcast through two ``civicbot worker`` processes on PostgreSQL, at Twilio's rate.

Creates a throwaway database on the server named by ``CIVICBOT_TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://root@127.0.0.1:5432/test``), migrates it, queues ``--messages`` bulk
SMS (each with its own text), starts the fake Twilio (tests/sms/conftest.py) in this process
and two real ``civicbot worker`` processes pointed at it with ``CIVICBOT_TWILIO_MPS=--rate``.
When every message has been accepted it prints what the fake counted: the achieved rate as a
share of the configured one (first to last send), the busiest sliding second, the number of
seconds over the limit, lost and duplicated messages, and how the two workers shared the
work. ``--kills N`` is bench/crash.py's mode (kill -9 a worker N times during the broadcast).
The database is dropped at the end.

    .venv/bin/python bench/broadcast.py [--messages 20000] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/ (the fake Twilio) is not an installed package

from common import SERVER, TwilioAccount, civicbot, stop, throwaway_database  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from storage.db import create_engine, session_factory, upgrade  # noqa: E402
from storage.models import OutboundMessage  # noqa: E402
from tests.scale.support import busiest_window  # noqa: E402
from tests.sms.conftest import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    PUBLIC_URL,
    FakeTwilio,
    running_fake_twilio,
)

TWILIO = TwilioAccount(ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, PUBLIC_URL)


async def prepare(url: str, messages: int) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        from bot.clock import SystemClock

        now = SystemClock().now()
        rows = [
            {
                "channel": "sms",
                "address": f"+4477009{i % 100000:05d}",
                "content": {"text": f"broadcast message {i}"},
                "priority": 10,
                "ignore_opt_out": False,
                "status": "queued",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(messages)
        ]
        from sqlalchemy import insert

        async with session_factory(engine)() as session, session.begin():
            for start in range(0, len(rows), 2000):
                await session.execute(insert(OutboundMessage), rows[start : start + 2000])
    finally:
        await engine.dispose()


async def outcome(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            query = select(OutboundMessage.status, func.count()).group_by(  # type: ignore[arg-type]
                OutboundMessage.status
            )
            return {str(s): int(n) for s, n in (await session.execute(query)).all()}
    finally:
        await engine.dispose()


async def in_flight(url: str, worker: str) -> int:
    """Rows a (dead) worker left marked as being sent."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            query = (
                select(func.count())
                .select_from(OutboundMessage)
                .where(
                    OutboundMessage.claimed_by == worker,  # type: ignore[arg-type]
                    OutboundMessage.status == "sending",  # type: ignore[arg-type]
                    OutboundMessage.in_flight_since.is_not(None),  # type: ignore[union-attr]
                )
            )
            return int((await session.execute(query)).scalar_one())
    finally:
        await engine.dispose()


@dataclass
class Workers:
    env: dict[str, str]
    cwd: Path
    started: int = 0

    @staticmethod
    def name(n: int) -> str:
        return f"bench-{n}"

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        return civicbot(["worker", "--name", self.name(self.started)], self.env, self.cwd)


def run(args: argparse.Namespace) -> int:
    with throwaway_database(SERVER, "civicbot_bench") as url:
        asyncio.run(prepare(url, args.messages))
        with running_fake_twilio() as fake, tempfile.TemporaryDirectory() as cwd:
            return _broadcast(args, url, fake, Path(cwd))


def _broadcast(args: argparse.Namespace, url: str, fake: FakeTwilio, cwd: Path) -> int:
    env = {
        **os.environ,
        **TWILIO.env(),
        "CIVICBOT_DATABASE_URL": url,
        "CIVICBOT_SIMULATOR": "off",
        "CIVICBOT_TWILIO_API_BASE": fake.url,
        "CIVICBOT_TWILIO_MPS": str(args.rate),
        "CIVICBOT_OUTBOX_LEASE_SECONDS": str(args.lease),
        "CIVICBOT_DISPATCHER_POLL_SECONDS": "0.2",
    }
    workers = Workers(env, cwd)
    running = [workers.start(), workers.start()]
    n = args.messages
    kills, in_flight_at_kills = 0, 0
    rng = random.Random(args.seed)
    next_kill = _kill_point(rng, n, args.kills, 0)
    began = time.monotonic()
    try:
        # Cheap checks only (the fake's threads share this process): accepted sends so far,
        # and the distinct texts only once that many could be all of them.
        while len(fake.accepted) < n or len({m["body"] for m in fake.accepted}) < n:
            if any(p.poll() is not None and p.returncode != -signal.SIGKILL for p in running):
                print("a worker exited on its own; stopping")
                return 1
            if kills < args.kills and len(fake.messages) >= next_kill:
                victim = running.pop(rng.randrange(len(running)))
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait(timeout=30)
                kills += 1
                in_flight_at_kills += asyncio.run(in_flight(url, str(victim.args[-1])))
                running.append(workers.start())  # a new copy (another name), as a supervisor would
                next_kill = _kill_point(rng, n, args.kills, kills)
            if time.monotonic() - began > args.timeout:
                print(f"timed out after {args.timeout:.0f}s")
                break
            time.sleep(0.2)
        time.sleep(1.0)  # let the workers record their last sends
    finally:
        for process in running:
            stop(process)
    statuses = asyncio.run(outcome(url))
    accepted = [m for m in fake.messages if m.status == 201]
    sent = Counter(m.form.get("Body", "") for m in accepted)
    wanted = {f"broadcast message {i}" for i in range(n)}
    lost = len(wanted - set(sent))
    duplicates = sum(c - 1 for c in sent.values())
    times = sorted(m.at for m in accepted)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    achieved = (len(times) - 1) / span if span else 0.0
    over = _seconds_over(times, args.rate)
    print(f"messages {n}, configured rate {args.rate}/s, 2 workers, lease {args.lease}s")
    print(f"sent {len(accepted)} in {span:.1f}s: {achieved:.1f}/s = "
          f"{100 * achieved / args.rate:.1f}% of the configured rate")
    print(f"busiest sliding second: {busiest_window(times)} sends (limit {args.rate:g}); "
          f"sliding seconds over the limit: {over}")
    print(f"lost: {lost}   duplicates: {duplicates}   outbox: {statuses}")
    if args.kills:
        print(f"kill -9: {kills} times; sends in flight at a kill: {in_flight_at_kills} "
              f"(bound: duplicates <= that)")
    return 0 if lost == 0 else 1


def _kill_point(rng: random.Random, n: int, kills: int, done: int) -> int:
    """Kill when the fake has seen this many sends: spread evenly, jittered."""
    if kills == 0:
        return n + 1
    step = n / (kills + 1)
    return int(step * (done + 1) + rng.uniform(-step / 3, step / 3))


def _seconds_over(times: list[float], limit: float) -> int:
    """How many sends start a sliding second holding more than ``limit`` sends."""
    over, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + 1.0:
            j += 1
        over += j - i > limit
    return over


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=100.0, help="CIVICBOT_TWILIO_MPS")
    parser.add_argument("--kills", type=int, default=0, help="kill -9 a worker this often")
    parser.add_argument("--lease", type=float, default=5.0, help="CIVICBOT_OUTBOX_LEASE_SECONDS")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=16)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
