"""What the benchmarks share (bench/inbound.py, broadcast.py and soak.py most of it; admin.py
and pb_round.py the database statements): the requests the load generators send (signed
Twilio SMS webhooks, Telegram updates), counting what those requests got, running a load
generator in its own process, throwaway PostgreSQL databases, and starting and stopping
``civicbot`` processes.

The benchmarks import it as ``common`` (their own folder is first on ``sys.path``, as for
bench/crash.py's ``import broadcast``; bench/inbound.py's server gets the folder through
``PYTHONPATH``; bench/admin.py imports it before taking the folder off). Only the standard
library is imported at the top: httpx, twilio and SQLAlchemy are imported where they are used,
so a process that needs none of them (the load generator, the server) does not load them for
this module's sake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

SERVER = os.environ.get(
    "CIVICBOT_TEST_POSTGRES_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"
)
CIVICBOT = str(Path(sys.executable).parent / "civicbot")
SMS_PATH = "/webhooks/twilio/sms"
TELEGRAM_PATH = "/webhooks/telegram"
# What people send while onboarding; each phone (or Telegram user) walks through it, again and
# again.
SCRIPT = ["JOIN", "1", "1", "CF10 1EP", "2", "MENU", "3", "HELP"]
PEOPLE = 300  # distinct senders per channel, each a few messages into the script during a run
# Load generators run in processes started with "spawn" (no copy of the parent's threads and
# connections); a queue handed to one must come from the same context.
SPAWN = multiprocessing.get_context("spawn")


# ---- requests the load generators send ---------------------------------------------------------


@dataclass(frozen=True)
class TwilioAccount:
    """The Twilio settings a benchmark gives civicbot, and inbound SMS signed with them."""

    account_sid: str
    auth_token: str
    from_number: str
    public_url: str

    def env(self) -> dict[str, str]:
        """The ``CIVICBOT_*`` settings for this account (the API base is the caller's)."""
        return {
            "CIVICBOT_PUBLIC_URL": self.public_url,
            "CIVICBOT_TWILIO_ACCOUNT_SID": self.account_sid,
            "CIVICBOT_TWILIO_AUTH_TOKEN": self.auth_token,
            "CIVICBOT_TWILIO_FROM_NUMBER": self.from_number,
        }

    def signed_sms(self, n: int, batch: str) -> tuple[bytes, dict[str, str]]:
        """The ``n``th inbound SMS of a run (``batch`` keeps message ids apart between runs),
        signed as Twilio signs (twilio's ``RequestValidator``): body and headers."""
        from twilio.request_validator import RequestValidator

        person = n % PEOPLE
        form = {
            "MessageSid": f"SM{batch}{n:026x}",
            "AccountSid": self.account_sid,
            "From": f"+4477009{person:05d}",
            "To": self.from_number,
            "Body": SCRIPT[(n // PEOPLE) % len(SCRIPT)],
            "NumMedia": "0",
        }
        validator = RequestValidator(self.auth_token)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": validator.compute_signature(self.public_url + SMS_PATH, form),
        }
        return urlencode(form).encode(), headers


def telegram_headers(secret: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret}


def telegram_text(n: int, update_id: int, name: str) -> bytes:
    """The ``n``th private-chat message of a run, from a user called ``name``."""
    person = 7_000_000 + n % PEOPLE
    update = {
        "update_id": update_id,
        "message": {
            "message_id": n + 1,
            "date": 1767600000 + n,
            "chat": {"id": person, "type": "private", "first_name": name},
            "from": {"id": person, "is_bot": False, "first_name": name},
            "text": SCRIPT[(n // PEOPLE) % len(SCRIPT)],
        },
    }
    return json.dumps(update).encode()


# ---- what the requests got ---------------------------------------------------------------------


@dataclass
class Answers:
    """The answers to one kind of request: latencies of the 200s, timeouts, and other
    outcomes by HTTP status or exception name."""

    latencies: list[float] = field(default_factory=list)  # seconds
    timeouts: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def percentile(self, p: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1]

    async def post(self, client: Any, path: str, body: bytes, headers: dict[str, str]) -> None:
        """Send one request with ``client`` (an ``httpx.AsyncClient``) and count its answer;
        never raises for a slow or failed request."""
        import httpx

        sent = time.perf_counter()
        try:
            response = await client.post(path, content=body, headers=headers)
        except httpx.TimeoutException:
            self.timeouts += 1
            return
        except httpx.HTTPError as exc:
            key = exc.__class__.__name__
            self.errors[key] = self.errors.get(key, 0) + 1
            return
        if response.status_code == 200:
            self.latencies.append(time.perf_counter() - sent)
        else:
            key = str(response.status_code)
            self.errors[key] = self.errors.get(key, 0) + 1


def _generator(conn: Any, generate: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
    figures = asyncio.run(generate(*args))
    conn.send(figures)
    conn.close()


def start_generator(
    generate: Callable[..., Coroutine[Any, Any, Any]], *args: Any
) -> tuple[Any, Any]:
    """Run ``asyncio.run(generate(*args))`` in a new process (so that the client's work is not
    the server's); the process, started, and the connection its result arrives on
    (``.recv()``). ``generate`` must be a module-level function, and ``args`` picklable."""
    receive, send = SPAWN.Pipe(duplex=False)
    process = SPAWN.Process(target=_generator, args=(send, generate, *args))
    process.start()
    send.close()
    return process, receive


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# ---- databases ---------------------------------------------------------------------------------


async def admin_sql(server: str, sql: str) -> None:
    """One statement outside a transaction (CREATE / DROP DATABASE) on ``server``."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def throwaway_database(server: str, prefix: str) -> Iterator[str]:
    """A new, empty database on ``server``'s PostgreSQL for the block (its URL), dropped after
    (even while processes are still connected)."""
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_sql(server, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin_sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ---- processes ---------------------------------------------------------------------------------


def civicbot(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """``civicbot ARGS`` in a process group of its own (so :func:`stop` stops its children
    too), its output discarded."""
    return subprocess.Popen(
        [CIVICBOT, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """SIGTERM to the process's group; SIGKILL if it has not ended within ``timeout``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    base: str,
    process: subprocess.Popen[bytes],
    *,
    answers: int,
    timeout: float,
    every: float,
    what: str,
) -> None:
    """Until ``GET /healthz`` has answered ``answers`` times (a few, so that every web process
    has started); exits the benchmark if ``process`` (called ``what``) ends or takes longer
    than ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    answered = 0
    while answered < answers:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start in time")
        try:
            httpx.get(base + "/healthz", timeout=5).raise_for_status()
            answered += 1
        except httpx.HTTPError:
            time.sleep(every)


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, pgrp, ...; the
    first is field 3 of proc(5)), or None for a process that has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def pids_where(index: int, value: int) -> list[int]:
    """The processes whose :func:`proc_stat` field ``index`` is ``value`` (1: the parent,
    2: the process group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields is not None and int(fields[index]) == value:
                found.append(int(entry.name))
    return sorted(found)
