"""Processes: ``civicbot serve --workers N --no-worker`` beside ``civicbot worker`` on
PostgreSQL (real subprocesses), the health endpoint, and SQLite's single-process mode saying
so when asked for more."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bot.app import build_app
from bot.cli import app
from bot.clock import FixedClock
from bot.coordination import Heartbeat
from bot.services import Services, build_services
from storage import coordination
from tests.conftest import make_settings, start_services
from tests.scale.conftest import Builder
from tests.scale.support import CIVICBOT, free_port, poll

runner = CliRunner()


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    return {"CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"}


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["serve", "--workers", "2"], "several web processes (--workers)"),
        (["serve", "--no-worker"], "the web app without its worker (--no-worker)"),
        (["worker"], "separate workers (`civicbot worker`)"),
    ],
)
def test_sqlite_says_it_is_single_process(
    sqlite_env: dict[str, str], args: list[str], what: str
) -> None:
    result = runner.invoke(app, args, env=sqlite_env)
    assert result.exit_code == 2
    assert "SQLite is single-process" in result.output and what in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["serve", "--workers", "0"], ["serve", "--workers", "x"]])
def test_bad_worker_counts_are_refused(sqlite_env: dict[str, str], args: list[str]) -> None:
    result = runner.invoke(app, args, env=sqlite_env)
    assert result.exit_code == 2 and "--workers" in result.output


def test_telegram_polling_stays_in_one_process(pg_url: str, tmp_path: Path) -> None:
    env = {
        "CIVICBOT_DATABASE_URL": pg_url,
        "CIVICBOT_TELEGRAM_TOKEN": "123:abc",
        "CIVICBOT_TELEGRAM_MODE": "polling",
    }
    for args in (["worker"], ["serve", "--workers", "2"], ["serve", "--no-worker"]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2, args
        assert "polling mode runs in the one `civicbot serve` process" in result.output


def test_a_second_worker_under_a_running_workers_name_is_refused(pg_url: str) -> None:
    async def beat() -> None:
        services = build_services(make_settings(pg_url))
        try:
            await Heartbeat(
                sessions=services.sessions, clock=services.clock, name="busy-name", every=5
            ).beat()
        finally:
            await services.close()

    asyncio.run(beat())  # a worker of that name is running
    result = runner.invoke(
        app, ["worker", "--name", "busy-name"], env={"CIVICBOT_DATABASE_URL": pg_url}
    )
    assert result.exit_code == 2
    assert "a worker named busy-name is already running" in result.output


async def test_health_needs_the_database_and_a_live_worker(
    database_url: str, clock: FixedClock
) -> None:
    services = await start_services(make_settings(database_url), clock)
    try:
        async with _client(services) as client:
            missing = await client.get("/health")
            assert missing.status_code == 503
            assert missing.json() == {
                "database": "ok", "worker": "missing", "workers": 0, "leader": False
            }
            await Heartbeat(
                sessions=services.sessions, clock=clock, name="w1", every=5
            ).beat()
            ok = await client.get("/health")
            assert ok.status_code == 200 and ok.json()["worker"] == "ok"
            assert ok.json()["workers"] == 1
            clock.advance(seconds=services.settings.worker_stale_seconds + 1)
            stale = await client.get("/health")  # the worker stopped beating: not ready
            assert stale.status_code == 503 and stale.json()["worker"] == "missing"
    finally:
        await services.close()


async def test_health_says_when_the_database_is_unreachable(clock: FixedClock) -> None:
    settings = make_settings("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    services = build_services(settings, clock=clock)
    try:
        async with _client(services) as client:
            response = await client.get("/health")
        assert response.status_code == 503
        assert response.json() == {"database": "unreachable", "worker": "unknown"}
    finally:
        await services.close()


def _client(services: Services) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(services), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.mark.timeout(180)
async def test_web_processes_and_a_worker_on_postgresql(
    build: Builder, pg_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CIVICBOT_DATABASE_URL": pg_url,
        "CIVICBOT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CIVICBOT_HEARTBEAT_SECONDS": "0.5",
    }
    quiet = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.PIPE,
        "cwd": tmp_path,
        "start_new_session": True,
    }
    web = subprocess.Popen([CIVICBOT, "serve", "--port", str(port), "--workers", "2",
                            "--no-worker"], env=env, **quiet)  # type: ignore[call-overload]
    processes.append(web)
    url = f"http://127.0.0.1:{port}/health"
    body = poll(url, lambda r: r.status_code == 503, web)  # web up, no worker yet
    assert body == {"database": "ok", "worker": "missing", "workers": 0, "leader": False}
    worker = subprocess.Popen([CIVICBOT, "worker", "--name", "w-one"], env=env, **quiet)  # type: ignore[call-overload]
    processes.append(worker)
    body = poll(url, lambda r: r.status_code == 200 and r.json()["leader"], worker)
    assert body == {"database": "ok", "worker": "ok", "workers": 1, "leader": True}
    services = build("observer")
    async with services.sessions() as session:
        holder = await coordination.lease_holder(
            session, name="scheduler", now=services.clock.now()
        )
    assert holder == "w-one"  # the worker leads; the web processes run no loops at all
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    async with services.sessions() as session:  # a clean stop hands the lease back
        assert await coordination.lease_holder(
            session, name="scheduler", now=services.clock.now()
        ) is None
    assert poll(url, lambda r: r.status_code == 503, web)["worker"] == "missing"
