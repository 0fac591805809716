"""Inbound messages, broadcasts and group polls together for ``--minutes``, on PostgreSQL: memory
(RSS) of every process at the start and the end, and the outbox backlog over time.

The layout issue #16 asks for, on one machine: a throwaway PostgreSQL database (dropped at the
end), two web processes (``civicbot serve --no-worker --workers 2``), two ``civicbot worker``
processes, the fake Twilio (tests/sms/conftest.py) and the fake Telegram Bot API
(tests/telegram/conftest.py) in this process, and a load generator in its own process that
sends, at a steady ``--rate`` per second, signed Twilio SMS webhooks and Telegram updates
(private messages walking the onboarding script, and answers to the open group poll). The
database starts with ``--residents`` consented residents (half on SMS, half on Telegram) and a
Telegram group (added through the webhook, as Telegram would tell us). Every
``--broadcast-every`` seconds ``civicbot broadcast send`` queues a broadcast to every resident;
every ``--poll-every`` seconds ``civicbot telegram poll`` posts a poll to the group that closes
``--poll-open`` seconds later (the scheduler in one of the workers closes it and posts the
result). The load runs ``--warmup`` seconds before the measured ``--minutes`` start.

Prints: RSS per process (from ``/proc/PID/status``) after the warm-up and at the end, with the
growth (goal: at most 10 %); the outbox backlog (rows queued and being sent) every
``--sample-every`` seconds; requests answered, errors and timeouts per kind with latency
percentiles (a slow request is counted, never fatal); the CLI runs that failed; what the fakes
received; and how long the backlog took to drain after the load stopped.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 20] [--residents 1000]
        [--broadcast-every 60] [--poll-every 60] [--twilio-mps 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/ (the fakes) is not an installed package

from common import (  # noqa: E402 (bench/common.py, beside this file)
    CIVICBOT,
    SERVER,
    SMS_PATH,
    SPAWN,
    TELEGRAM_PATH,
    Answers,
    TwilioAccount,
    civicbot,
    free_port,
    load_average,
    pids_where,
    start_generator,
    stop,
    telegram_headers,
    telegram_text,
    throwaway_database,
    wait_healthy,
)
from sqlalchemy import text  # noqa: E402

from storage.db import create_engine, upgrade  # noqa: E402
from tests.sms.conftest import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    PUBLIC_URL,
    FakeTwilio,
    running_fake_twilio,
)
from tests.telegram.conftest import BOT_ID, FakeBotApi, running_fake_bot_api  # noqa: E402
from tests.telegram.conftest import SECRET as TELEGRAM_SECRET  # noqa: E402
from tests.telegram.conftest import TOKEN as TELEGRAM_TOKEN  # noqa: E402

TWILIO = TwilioAccount(ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, PUBLIC_URL)
VOTERS = 200  # distinct group members answering polls
GROUP = -1009876543210


# ---- requests the load generator sends (besides bench/common.py's) ----------------------


def poll_answer(poll_id: str, voter: int, option: int, update_id: int) -> bytes:
    user = 9_000_000 + voter
    update = {
        "update_id": update_id,
        "poll_answer": {
            "poll_id": poll_id,
            "user": {"id": user, "is_bot": False, "first_name": f"Voter {voter}"},
            "option_ids": [option],
            "option_persistent_ids": [str(option)],
        },
    }
    return json.dumps(update).encode()


def membership(update_id: int) -> dict[str, Any]:
    """Telegram's notice that the bot was added to the group."""
    person = {"id": 9_999_999, "is_bot": False, "first_name": "Organiser"}
    return {
        "update_id": update_id,
        "my_chat_member": {
            "chat": {"id": GROUP, "type": "supergroup", "title": "Soak neighbours"},
            "from": person,
            "date": 1767600000,
            "old_chat_member": {"status": "left", "user": {**person, "id": BOT_ID}},
            "new_chat_member": {"status": "member", "user": {**person, "id": BOT_ID}},
        },
    }


# ---- the load generator (its own process) ----------------------------------------------------


@dataclass
class LoadFigures:
    seconds: float
    kinds: dict[str, Answers]
    late: int  # sends that started more than a second behind the schedule (generator overloaded)


async def generate(
    base: str, rate: float, seconds: float, timeout: float, poll_share: float, polls: Any
) -> LoadFigures:
    """Send at ``rate`` per second for ``seconds``, alternating SMS and Telegram; a share of the
    Telegram updates answer the newest poll (ids arrive on the ``polls`` queue). Requests are
    started on schedule whether or not earlier ones have been answered; none raises."""
    import httpx

    rng = random.Random(16)
    batch = uuid.uuid4().hex[:6]
    update_ids = iter(range(rng.randrange(10**9, 2 * 10**9), 10**12))
    kinds = {name: Answers() for name in ("sms", "telegram", "poll answer")}
    poll_id: str | None = None
    late = 0
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    to_telegram = telegram_headers(TELEGRAM_SECRET)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        started = time.perf_counter()
        n = 0
        sms_n = telegram_n = 0
        while True:
            due = started + n / rate
            now = time.perf_counter()
            if due - started >= seconds:
                break
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 1.0:
                late += 1
            while not polls.empty():
                poll_id = polls.get_nowait()
            if n % 2 == 0:
                body, headers = TWILIO.signed_sms(sms_n, batch)
                sms_n += 1
                job = kinds["sms"].post(client, SMS_PATH, body, headers)
            elif poll_id is not None and rng.random() < poll_share:
                answer = poll_answer(poll_id, rng.randrange(VOTERS), rng.randrange(3),
                                     next(update_ids))  # fmt: skip
                job = kinds["poll answer"].post(client, TELEGRAM_PATH, answer, to_telegram)
            else:
                body = telegram_text(telegram_n, next(update_ids), "Soak")
                telegram_n += 1
                job = kinds["telegram"].post(client, TELEGRAM_PATH, body, to_telegram)
            task = asyncio.create_task(job)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.gather(*tasks)  # the last ones, each within its timeout
        elapsed = time.perf_counter() - started
    return LoadFigures(elapsed, kinds, late)


# ---- the database ------------------------------------------------------------------------------


async def prepare(url: str, residents: int) -> None:
    """Migrate, and add ``residents`` consented residents, half with a phone, half on
    Telegram (other numbers and ids than the load's senders)."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            ids = (
                await conn.execute(
                    text(
                        "INSERT INTO contacts (language, created_at, consent_at) "
                        "SELECT 'en', :now, :now FROM generate_series(1, :n) RETURNING id"
                    ),
                    {"now": now, "n": residents},
                )
            ).scalars()
            rows = [
                {
                    "channel": "sms" if i % 2 == 0 else "telegram",
                    "address": f"+4477008{i:05d}" if i % 2 == 0 else str(8_000_000 + i),
                    "contact_id": contact_id,
                    "now": now,
                }
                for i, contact_id in enumerate(ids)
            ]
            await conn.execute(
                text(
                    "INSERT INTO channel_identities (channel, address, contact_id, created_at) "
                    "VALUES (:channel, :address, :contact_id, :now)"
                ),
                rows,
            )
    finally:
        await engine.dispose()


async def backlog(url: str) -> dict[str, int]:
    """Outbox rows by status."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT status, count(*) FROM outbound_messages GROUP BY status")
            )
            return {str(status): int(count) for status, count in rows}
    finally:
        await engine.dispose()


BROADCAST_TEXTS = ("Soak broadcast ", "Darllediad ")


def broadcast_key(address: Any, body: Any) -> tuple[str, str] | None:
    """(address, which broadcast) for a broadcast message, None for any other."""
    body = str(body or "")
    if not body.startswith(BROADCAST_TEXTS):
        return None
    number = body.split(":", 1)[0].rsplit(" ", 1)[-1]
    return str(address), number


async def broadcast_rows(url: str) -> set[tuple[str, str]]:
    """(address, broadcast) of every broadcast message the outbox holds."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT address, content->>'text' FROM outbound_messages "
                    "WHERE content->>'text' LIKE 'Soak broadcast %' "
                    "OR content->>'text' LIKE 'Darllediad %'"
                )
            )
            keys = {broadcast_key(address, body) for address, body in rows}
            return {key for key in keys if key is not None}
    finally:
        await engine.dispose()


async def newest_poll(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            row = await conn.execute(
                text(
                    "SELECT telegram_poll_id FROM telegram_polls "
                    "WHERE telegram_poll_id IS NOT NULL ORDER BY id DESC LIMIT 1"
                )
            )
            value = row.scalar_one_or_none()
            return None if value is None else str(value)
    finally:
        await engine.dispose()


async def poll_counts(url: str) -> tuple[int, int, int]:
    """Polls sent, polls closed, answers stored (open polls' answers; closing forgets keys
    but keeps the count in the result)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            sent, closed = (
                await conn.execute(text("SELECT count(*), count(closed_at) FROM telegram_polls"))
            ).one()
            answers = (
                await conn.execute(text("SELECT count(*) FROM telegram_poll_answers"))
            ).scalar_one()
            return int(sent), int(closed), int(answers)
    finally:
        await engine.dispose()


# ---- processes ---------------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    """Resident set size (``VmRSS``) of a live process, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ---- the run -----------------------------------------------------------------------------------


@dataclass
class Cli:
    """``civicbot`` runs (broadcasts, polls): how many, how many failed, and why."""

    env: dict[str, str]
    cwd: Path
    runs: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def __call__(self, what: str, *args: str) -> bool:
        self.runs[what] = self.runs.get(what, 0) + 1
        try:
            done = subprocess.run(
                [CIVICBOT, *args], env=self.env, cwd=self.cwd, capture_output=True,
                text=True, timeout=120,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            self.failures.append(f"{what}: no answer in 120 s")
            return False
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            self.failures.append(f"{what}: exit {done.returncode}: {last[:200]}")
            return False
        return True


def run(args: argparse.Namespace) -> int:
    with throwaway_database(SERVER, "civicbot_soak") as url:
        asyncio.run(prepare(url, args.residents))
        with (
            running_fake_twilio() as twilio,
            running_fake_bot_api() as bot_api,
            tempfile.TemporaryDirectory() as cwd,
        ):
            return _soak(args, url, twilio, bot_api, Path(cwd))


def _soak(
    args: argparse.Namespace, url: str, twilio: FakeTwilio, bot_api: FakeBotApi, cwd: Path
) -> int:
    import httpx

    port = free_port()
    env = {
        **os.environ,
        **TWILIO.env(),
        "CIVICBOT_DATABASE_URL": url,
        "CIVICBOT_HOST": "127.0.0.1",
        "CIVICBOT_PORT": str(port),
        "CIVICBOT_SIMULATOR": "off",
        "CIVICBOT_INBOUND_PER_MINUTE": "600",
        "CIVICBOT_TWILIO_API_BASE": twilio.url,
        "CIVICBOT_TWILIO_MPS": str(args.twilio_mps),
        "CIVICBOT_TELEGRAM_TOKEN": TELEGRAM_TOKEN,
        "CIVICBOT_TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "CIVICBOT_TELEGRAM_API_BASE": bot_api.url,
        "CIVICBOT_DISPATCHER_POLL_SECONDS": "0.5",
        "CIVICBOT_SCHEDULER_INTERVAL_SECONDS": "10",
    }
    cli = Cli(env, cwd)
    base = f"http://127.0.0.1:{port}"
    web = civicbot(["serve", "--no-worker", "--workers", "2"], env, cwd)
    workers: list[subprocess.Popen[bytes]] = []
    generator: Any = None
    try:
        # a few answers, so that both web processes have started
        wait_healthy(base, web, answers=8, timeout=180, every=0.3, what="civicbot serve")
        workers = [civicbot(["worker", "--name", f"soak-{n}"], env, cwd) for n in (1, 2)]
        added = httpx.post(
            base + TELEGRAM_PATH,
            json=membership(1),
            headers=telegram_headers(TELEGRAM_SECRET),
            timeout=30,
        )
        if added.status_code != 200:
            print(f"the group was not added: {added.status_code} {added.text[:200]}")
            return 1

        polls = SPAWN.Queue()
        seconds = args.warmup + args.minutes * 60
        began = time.monotonic()
        generator, receive = start_generator(
            generate, base, args.rate, seconds, args.timeout, args.poll_share, polls
        )

        processes: dict[str, int] = {"web supervisor": web.pid}
        n = 0
        for pid in pids_where(1, web.pid):  # its parent
            if "resource_tracker" in command_line(pid):
                processes["web res. tracker"] = pid  # multiprocessing's helper, not a server
            else:
                n += 1
                processes[f"web {n}"] = pid
        for n, process in enumerate(workers, 1):
            processes[f"worker {n}"] = process.pid
        processes["load generator"] = generator.pid

        print(
            f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, PostgreSQL; load average "
            f"{load_average()}; {args.rate:g} inbound/s for {args.warmup:g} s warm-up + "
            f"{args.minutes:g} min; {args.residents} residents; broadcast every "
            f"{args.broadcast_every:g} s, poll every {args.poll_every:g} s; Twilio "
            f"{args.twilio_mps:g}/s",
            flush=True,
        )
        measured_from = began + args.warmup
        ends_at = measured_from + args.minutes * 60
        rss_start: dict[str, int | None] = {}
        samples: list[tuple[float, dict[str, int]]] = []
        next_sample = measured_from
        next_broadcast = measured_from + 5
        next_poll = measured_from + 5 + args.poll_every / 2
        broadcasts = polls_sent = 0
        servers = [pid for label, pid in processes.items() if label.startswith(("web ", "worker"))]

        def sample(at: float) -> dict[str, int]:
            counts = asyncio.run(backlog(url))
            samples.append((at - measured_from, counts))
            rss = sum(rss_kib(pid) or 0 for pid in servers) / 1024
            print(
                f"{at - measured_from:6.0f} {counts.get('queued', 0):7d} "
                f"{counts.get('sending', 0):8d} {counts.get('sent', 0):8d} "
                f"{counts.get('failed', 0):7d} {rss:9.1f}  {load_average()}",
                flush=True,
            )
            return counts

        print(f"{'t (s)':>6} {'queued':>7} {'sending':>8} {'sent':>8} {'failed':>7} "
              f"{'RSS MiB':>9}  load average", flush=True)  # fmt: skip
        print("(RSS MiB: the web and worker processes together)")
        while time.monotonic() < ends_at:
            now = time.monotonic()
            if now >= measured_from and not rss_start:
                rss_start = {label: rss_kib(pid) for label, pid in processes.items()}
            if now >= next_sample:
                sample(now)
                next_sample += args.sample_every
            if now >= next_broadcast:
                broadcasts += 1
                cli(
                    "broadcast", "broadcast", "send", "--key", f"soak-{broadcasts}",
                    "--text-en", f"Soak broadcast {broadcasts}: the library opens late today.",
                    "--text-cy", f"Darllediad {broadcasts}: mae'r llyfrgell ar agor yn hwyr.",
                )  # fmt: skip
                next_broadcast += args.broadcast_every
            if now >= next_poll:
                polls_sent += 1
                closes = datetime.now(UTC) + timedelta(seconds=args.poll_open)
                if cli(
                    "poll", "telegram", "poll", "--chat", str(GROUP),
                    "--question", f"Soak poll {polls_sent}: what first?",
                    "--option", "Potholes", "--option", "Lights", "--option", "Bins",
                    "--close-at", closes.isoformat(),
                ):  # fmt: skip
                    poll_id = asyncio.run(newest_poll(url))
                    if poll_id is not None:
                        polls.put(poll_id)
                next_poll += args.poll_every
            if generator.exitcode is not None:
                print(f"the load generator exited early ({generator.exitcode})")
                return 1
            for label, process in (("web", web), *(("worker", w) for w in workers)):
                if process.poll() is not None:
                    print(f"a {label} process exited on its own ({process.returncode})")
                    return 1
            time.sleep(0.25)
        rss_end = {label: rss_kib(pid) for label, pid in processes.items()}
        load_end = load_average()
        figures: LoadFigures = receive.recv()
        generator.join(timeout=60)
        stopped = time.monotonic()
        counts = sample(stopped)
        drained = None
        while time.monotonic() - stopped < args.drain:
            left = asyncio.run(backlog(url))
            if left.get("queued", 0) + left.get("sending", 0) == 0:
                drained = time.monotonic() - stopped
                break
            time.sleep(1.0)
        final = asyncio.run(backlog(url))
        sent, closed, answers = asyncio.run(poll_counts(url))
        queued_broadcasts = asyncio.run(broadcast_rows(url))
    finally:
        if generator is not None and generator.is_alive():
            generator.kill()
        for process in workers:
            stop(process)
        stop(web)

    print()
    print(f"{'process':<16} {'RSS start MiB':>13} {'RSS end MiB':>12} {'growth':>8}")
    worst = 0.0
    for label in processes:
        start, end = rss_start.get(label), rss_end.get(label)
        if start is None or end is None:
            print(f"{label:<16} {'gone' if start is None else start / 1024:>13} "
                  f"{'gone' if end is None else end / 1024:>12}")  # fmt: skip
            continue
        growth = 100 * (end - start) / start
        worst = max(worst, growth)
        print(f"{label:<16} {start / 1024:13.1f} {end / 1024:12.1f} {growth:7.1f}%")
    print(f"largest growth {worst:.1f}% (goal: at most 10%)")
    print()
    print(f"load over {figures.seconds:.0f} s (warm-up included); started late by over 1 s: "
          f"{figures.late}")  # fmt: skip
    print(f"{'kind':<12} {'answered':>8} {'per s':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'timeouts':>8} {'errors':>6}")  # fmt: skip
    for kind, k in figures.kinds.items():
        other = ", ".join(f"{key}: {v}" for key, v in sorted(k.errors.items()))
        print(
            f"{kind:<12} {k.ok:8d} {k.ok / figures.seconds:6.1f} {k.percentile(50) * 1000:7.1f} "
            f"{k.percentile(95) * 1000:7.1f} {k.percentile(99) * 1000:7.1f} {k.timeouts:8d} "
            f"{k.error_count:6d}" + (f"  ({other})" if other else "")
        )
    peak = max(s.get("queued", 0) + s.get("sending", 0) for _, s in samples)
    print()
    print(f"outbox backlog (queued + sending): peak {peak} of the samples; at the end of the "
          f"load {counts.get('queued', 0) + counts.get('sending', 0)}; "
          + (f"drained {drained:.0f} s later" if drained is not None
             else f"not drained within {args.drain:g} s"))  # fmt: skip
    print(f"outbox at the end: {final}")
    accepted = len([m for m in twilio.messages if m.status == 201])
    print(f"fake Twilio accepted {accepted} SMS; fake Bot API: "
          f"{len(bot_api.sent('sendMessage'))} sendMessage, {len(bot_api.sent('sendPoll'))} "
          f"sendPoll, {len(bot_api.sent('stopPoll'))} stopPoll")  # fmt: skip
    delivered = [
        broadcast_key(m.form.get("To"), m.form.get("Body"))
        for m in twilio.messages
        if m.status == 201
    ] + [broadcast_key(p.get("chat_id"), p.get("text")) for p in bot_api.sent("sendMessage")]
    received = Counter(key for key in delivered if key is not None)
    lost = len(queued_broadcasts - set(received))
    duplicates = sum(c - 1 for c in received.values())
    print(f"broadcast messages: {len(queued_broadcasts)} queued, {len(received)} received by "
          f"the fakes; lost {lost}, duplicates {duplicates}")  # fmt: skip
    print(f"civicbot runs: {cli.runs} (broadcasts {broadcasts}, polls {polls_sent}); "
          f"failed: {len(cli.failures)}")  # fmt: skip
    for failure in cli.failures[:10]:
        print(f"  {failure}")
    print(f"polls in the database: {sent} sent, {closed} closed; answer rows: "
          f"{answers}")  # fmt: skip
    print(f"load average at the end of the load {load_end}, now {load_average()}")
    errors = sum(k.error_count + k.timeouts for k in figures.kinds.values())
    return 0 if not errors and not cli.failures and not lost else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured time")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before measuring")
    parser.add_argument("--rate", type=float, default=20.0, help="inbound requests per second")
    parser.add_argument("--residents", type=int, default=1000, help="consented, seeded")
    parser.add_argument("--broadcast-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--poll-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--poll-open", type=float, default=45.0, help="seconds a poll is open")
    parser.add_argument("--poll-share", type=float, default=0.2,
                        help="share of Telegram updates that answer the open poll")  # fmt: skip
    parser.add_argument("--twilio-mps", type=float, default=50.0, help="CIVICBOT_TWILIO_MPS")
    parser.add_argument("--sample-every", type=float, default=30.0, help="backlog, seconds")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--drain", type=float, default=180.0,
                        help="seconds to wait for the backlog after the load")  # fmt: skip
    args = parser.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.residents < 2 or args.warmup < 0:
        parser.error("--minutes and --rate must be positive, --residents at least 2")
    if min(args.broadcast_every, args.poll_every, args.poll_open, args.sample_every) <= 0:
        parser.error("the intervals must be positive")
    if not 0 <= args.poll_share <= 1:
        parser.error("--poll-share is between 0 and 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
