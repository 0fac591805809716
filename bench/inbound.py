"""Inbound messages per second through the whole path, against a bare endpoint, under load.

Starts civicbot with uvicorn in its own process (``--workers N`` web processes), the Twilio SMS
and Telegram channels on, the dispatcher and scheduler off so that only the inbound path is
measured, and a load generator in another process that keeps ``--concurrency`` requests in
flight for ``--duration`` seconds against each target in turn:

- ``bare``: ``POST /bench/bare``, a route that does no work, served by the same app (same
  middleware, same server), so the ratio shows what our path costs over the web stack;
- ``sms``: signed Twilio webhooks (``X-Twilio-Signature`` computed as Twilio does, with
  twilio's ``RequestValidator``): signature check, form parsing, dedupe, per-conversation
  lock, engine, one committed transaction before the 200;
- ``telegram``: private-chat updates with the webhook's secret token header.

Phones and Telegram users cycle through an onboarding script, so conversations advance and
replies are queued in the outbox, as in real use. A slow request never stops the run: the
generator counts timeouts (``--timeout``) and errors apart and reports the rate of successful
requests and the latency percentiles of those. Runs on SQLite (one web process: SQLite is
single-process) and on PostgreSQL (a throwaway database, dropped afterwards) with 1 and 2 web
processes.

    .venv/bin/python bench/inbound.py [--duration 15] [--concurrency 16]
        [--databases sqlite,postgresql] [--webs 1,2] [--targets bare,sms,telegram]
        [--postgres postgresql+asyncpg://root@127.0.0.1:5432/postgres] [--timeout 10]

The load generator shares the machine with the server (and with whatever else runs), so read
the figures next to the machine's load (printed at the start and end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (  # bench/common.py, beside this file
    SMS_PATH,
    TELEGRAM_PATH,
    Answers,
    TwilioAccount,
    free_port,
    load_average,
    pids_where,
    proc_stat,
    start_generator,
    stop,
    telegram_headers,
    telegram_text,
    throwaway_database,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[1]
TWILIO = TwilioAccount(
    account_sid="AC" + "0" * 32,
    auth_token="bench-auth-token",
    from_number="+447700900001",
    public_url="https://bot.example.org",
)
TELEGRAM_SECRET = "bench-webhook-secret"
BARE_PATH = "/bench/bare"
PATHS = {"bare": BARE_PATH, "sms": SMS_PATH, "telegram": TELEGRAM_PATH}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


# ---- the server (runs in the uvicorn process: ``uvicorn --factory inbound:app``) -------------


def app() -> Any:
    """civicbot's app built from ``CIVICBOT_*`` settings as ``civicbot serve`` builds it,
    plus the bare route the benchmark compares with."""
    from fastapi import Response

    from bot.app import build_app
    from bot.services import build_services
    from bot.settings import Settings

    built = build_app(build_services(Settings(_env_file=None)))  # type: ignore[call-arg]

    async def bare() -> Response:
        return Response(EMPTY_TWIML, media_type="application/xml")

    built.add_api_route(BARE_PATH, bare, methods=["POST"], include_in_schema=False)
    return built


def server_env(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **TWILIO.env(),
        "CIVICBOT_DATABASE_URL": database_url,
        "CIVICBOT_SIMULATOR": "off",
        "CIVICBOT_RUN_DISPATCHER": "false",  # only the inbound path is measured
        "CIVICBOT_RUN_SCHEDULER": "false",
        "CIVICBOT_INBOUND_PER_MINUTE": str(10**9),  # the per-sender limit is not measured here
        "CIVICBOT_TWILIO_API_BASE": "http://127.0.0.1:9",  # never called: no dispatcher
        "CIVICBOT_TELEGRAM_TOKEN": "123456:bench",
        "CIVICBOT_TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "CIVICBOT_TELEGRAM_API_BASE": "http://127.0.0.1:9",  # private messages need no call
        # the repository first: bench/admin.py is not the admin package
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")]),
    }


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes have used so far (Linux ``/proc``); a process
    that has gone counts nothing."""
    total = 0
    for pid in pids:
        fields = proc_stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


async def _backend_pids(url: str) -> list[int]:
    """PostgreSQL's server processes connected to ``url``'s database (same machine)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return [int(pid) for (pid,) in rows]
    finally:
        await engine.dispose()


class Server:
    """uvicorn in its own process group, stopped (and its workers with it) on exit."""

    def __init__(self, database_url: str, workers: int) -> None:
        self.port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", "inbound:app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, env=server_env(database_url), cwd=ROOT, start_new_session=True
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, workers: int, timeout: float = 120.0) -> None:
        """Until every worker answers (a few requests, so each process has started)."""
        wait_healthy(
            self.base, self.process, answers=4 * workers, timeout=timeout, every=0.2,
            what="the server",
        )  # fmt: skip

    def stop(self) -> None:
        stop(self.process, timeout=30)


# ---- the load generator (runs in its own process) --------------------------------------------


def sms_request(n: int, batch: str) -> tuple[bytes, dict[str, str]]:
    return TWILIO.signed_sms(n, batch)


def telegram_request(n: int, batch: int) -> tuple[bytes, dict[str, str]]:
    return telegram_text(n, batch + n, "Bench"), telegram_headers(TELEGRAM_SECRET)


@dataclass
class Figures(Answers):
    """What one target's requests got (errors by status or exception name), how long they
    took, and the CPU the server used meanwhile."""

    target: str = ""
    seconds: float = 0.0
    web_cpu: float = 0.0  # CPU seconds the web processes used during the run
    db_cpu: float | None = None  # and PostgreSQL's server processes (None on SQLite)

    def per_message_ms(self, seconds: float | None) -> str:
        if seconds is None or not self.ok:
            return "-"
        return f"{seconds / self.ok * 1000:.2f}"

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def generate(
    base: str, target: str, duration: float, concurrency: int, timeout: float, start: int
) -> Figures:
    """Keep ``concurrency`` requests in flight for ``duration`` seconds; never raises for a
    slow or failed request (each is counted)."""
    import httpx

    counter = iter(range(start, 10**12))
    batch_sms = secrets.token_hex(3)
    batch_telegram = secrets.randbelow(10**6) * 10**6
    figures = Figures(target=target)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                n = next(counter)
                if target == "telegram":
                    body, headers = telegram_request(n, batch_telegram)
                else:
                    body, headers = sms_request(n, batch_sms)  # the bare route ignores it
                await figures.post(client, PATHS[target], body, headers)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        figures.seconds = time.perf_counter() - started
    return figures


def load(
    base: str, target: str, duration: float, concurrency: int, timeout: float, start: int
) -> Figures:
    """Run :func:`generate` in a separate process (so the client's work is not the
    server's) and bring its figures back."""
    process, receive = start_generator(
        generate, base, target, duration, concurrency, timeout, start
    )
    figures: Figures = receive.recv()
    process.join()
    return figures


# ---- databases --------------------------------------------------------------------------------


async def _upgrade(url: str) -> None:
    from storage.db import create_engine, upgrade

    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


# ---- profiling ---------------------------------------------------------------------------------


async def _profiled(
    database_url: str, target: str, count: int, concurrency: int, out: str | None
) -> None:
    """``count`` requests through the app in this process (no server, no sockets), under
    cProfile; prints where the time goes."""
    import cProfile
    import pstats

    import httpx

    for name, value in server_env(database_url).items():
        os.environ[name] = value
    sys.path.insert(0, str(ROOT))  # before bench/: its admin.py is not the admin package
    built = app()
    async with built.router.lifespan_context(built):
        transport = httpx.ASGITransport(app=built)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            make = telegram_request if target == "telegram" else sms_request

            async def send(numbers: range, batch: Any) -> None:
                for n in numbers:
                    body, headers = make(n, batch)
                    response = await client.post(PATHS[target], content=body, headers=headers)
                    assert response.status_code == 200, response.text

            async def drive(start: int, batch: Any) -> float:
                per = count // concurrency
                began = time.perf_counter()
                await asyncio.gather(
                    *(send(range(start + k * per, start + (k + 1) * per), batch)
                      for k in range(concurrency))
                )  # fmt: skip
                return per * concurrency / (time.perf_counter() - began)

            batch = secrets.token_hex(3) if target != "telegram" else 10**9
            await drive(0, batch)  # warm up: the same people, their first messages
            profile = cProfile.Profile(time.thread_time)  # CPU time: a busy machine adds no noise
            profile.enable()
            rate = await drive(count, batch)
            profile.disable()
    print(f"{target}: {rate:.1f} msgs/s in process, under the profiler")
    stats = pstats.Stats(profile)
    if out:
        stats.dump_stats(out)  # for pstats or snakeviz
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)


def profile(args: argparse.Namespace) -> None:
    databases = [d for d in args.databases.split(",") if d]
    target = args.targets.split(",")[0]
    if databases[0] == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
            asyncio.run(_upgrade(url))
            asyncio.run(_profiled(url, target, args.profile, args.concurrency, args.profile_out))
        return
    with throwaway_database(args.postgres, "civicbot_bench") as url:
        asyncio.run(_upgrade(url))
        asyncio.run(_profiled(url, target, args.profile, args.concurrency, args.profile_out))


# ---- the runs ---------------------------------------------------------------------------------


def report(setup: str, figures: Figures, bare: Figures | None) -> None:
    ratio = f"{figures.rate / bare.rate:5.2f}" if bare and bare.rate else "    -"
    other = ", ".join(f"{k}: {v}" for k, v in sorted(figures.errors.items()))
    print(
        f"{setup:<18} {figures.target:<9} {figures.rate:7.1f} "
        f"{figures.percentile(50) * 1000:7.1f} {figures.percentile(95) * 1000:7.1f} "
        f"{figures.percentile(99) * 1000:7.1f} {figures.timeouts:8d} {figures.error_count:6d} "
        f"{ratio} {figures.per_message_ms(figures.web_cpu):>8} "
        f"{figures.per_message_ms(figures.db_cpu):>7}" + (f"  ({other})" if other else ""),
        flush=True,
    )


def run_setup(
    setup: str, database_url: str, workers: int, targets: list[str], args: argparse.Namespace
) -> None:
    server = Server(database_url, workers)
    try:
        server.wait_ready(workers)
        # warm up: every worker's first requests (imports, the pool's connections)
        for target in targets:
            load(server.base, target, 2.0, args.concurrency, args.timeout, 10**9)
        bare: Figures | None = None
        web = pids_where(2, server.process.pid)  # its process group
        backends = [] if database_url.startswith("sqlite") else asyncio.run(
            _backend_pids(database_url)
        )
        for number, target in enumerate(targets):
            web_before, db_before = cpu_seconds(web), cpu_seconds(backends)
            figures = load(
                server.base, target, args.duration, args.concurrency, args.timeout,
                number * 10**8,
            )  # fmt: skip
            figures.web_cpu = cpu_seconds(web) - web_before
            if backends:
                figures.db_cpu = cpu_seconds(backends) - db_before
            if target == "bare":
                bare = figures
            report(setup, figures, bare)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per target")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--webs", default="1,2", help="web processes on PostgreSQL")
    parser.add_argument("--targets", default="bare,sms,telegram")
    parser.add_argument(
        "--postgres",
        default="postgresql+asyncpg://root@127.0.0.1:5432/postgres",
        help="a PostgreSQL database to connect to for creating the throwaway one",
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="instead: N requests of the first target, in process, on the first database, "
        "under cProfile",
    )
    parser.add_argument("--profile-out", metavar="FILE", help="with --profile: save the stats")
    args = parser.parse_args()
    if args.profile:
        profile(args)
        return
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(PATHS)
    if unknown or not targets:
        parser.error(f"targets are {', '.join(PATHS)}; not {', '.join(sorted(unknown))}")
    databases = [d for d in args.databases.split(",") if d]
    if set(databases) - {"sqlite", "postgresql"}:
        parser.error("databases are sqlite and postgresql")
    try:
        webs = [int(w) for w in args.webs.split(",") if w]
    except ValueError:
        parser.error("--webs is a list of numbers, such as 1,2")
    if not webs or min(webs) < 1 or args.concurrency < 1 or args.duration <= 0:
        parser.error("--webs, --concurrency and --duration must be positive")

    print(
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average "
        f"{load_average()}; concurrency {args.concurrency}, {args.duration:g} s per target, "
        f"timeout {args.timeout:g} s"
    )
    header = (
        f"{'setup':<18} {'target':<9} {'msgs/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'timeouts':>8} {'errors':>6} {'ratio'} {'web CPU':>8} {'db CPU':>7}"
    )
    print("(web CPU, db CPU: CPU milliseconds per answered request in the web processes and")
    print(" in PostgreSQL's server processes: less noisy than rates on a busy machine)")
    print(header, flush=True)
    if "sqlite" in databases:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
            run_setup("SQLite, 1 web", url, 1, targets, args)
    if "postgresql" in databases:
        for workers in webs:
            with throwaway_database(args.postgres, "civicbot_bench") as url:
                asyncio.run(_upgrade(url))
                run_setup(f"PostgreSQL, {workers} web", url, workers, targets, args)
    print(f"load average at the end {load_average()}")


if __name__ == "__main__":
    main()
