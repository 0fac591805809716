"""``tenders fetch`` against a fake API serving the shared real pages: it pages through the
cursor, resumes where a killed fetch stopped, waits on 429 (Retry-After) and on Contracts
Finder's 403, keeps to 12 requests in 2 minutes, and stops (keeping its place, saying why)
on a 500 or garbage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bot.cli import app
from bot.clock import FixedClock
from bot.services import Services
from flows.tenders.fetch import Fetcher, FetchError, RateLimit, retry_after
from storage.tenders import TenderFeedState
from tests.conftest import make_settings, start_services
from tests.tenders.conftest import PAGE2_CURSOR, FakeFeeds
from tests.tenders.support import AFTER_PAGE

runner = CliRunner()


@pytest.fixture
async def services(sqlite_url: str, clock: FixedClock) -> AsyncIterator[Services]:
    clock.current = AFTER_PAGE
    services = await start_services(make_settings(sqlite_url, run_scheduler=False), clock)
    yield services
    await services.close()


class Sleeps:
    """The fetcher's waits: recorded, and the fixed clock moved on by each."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds=seconds)


def fetcher(services: Services, feeds: FakeFeeds, sleeps: Sleeps) -> Fetcher:
    base = feeds.url
    return Fetcher(
        sessions=services.sessions,
        tenders=services.tenders,
        clock=services.clock,
        bases={"contracts-finder": base, "find-a-tender": base},
        sleep=sleeps,
    )


def cursor(path: str) -> str:
    return parse_qs(urlsplit(path).query).get("cursor", [""])[0]


async def test_pages_through_the_cursor_and_waits_on_429_and_403(
    services: Services, feeds: FakeFeeds, clock: FixedClock
) -> None:
    sleeps = Sleeps(clock)
    feeds.refuse_next(429, {"Retry-After": "30"})
    feeds.refuse_next(403)
    result = await fetcher(services, feeds, sleeps).run("contracts-finder")
    assert sleeps.waits == [30.0, 300.0]
    assert (result.pages, result.releases, result.new_releases) == (3, 101, 100)
    assert result.finished
    first = feeds.requests[0]
    assert first.startswith("/Published/Notices/OCDS/Search?publishedFrom=2025-01-23T09%3A00")
    assert [cursor(p) for p in feeds.requests[2:]] == ["", cursor(feeds.requests[3]), PAGE2_CURSOR]
    # the real page's links.next points at the real host: only its path and query are used
    assert all(not p.startswith("http") for p in feeds.requests)
    # Find a Tender: its sample package
    fts = await fetcher(services, feeds, sleeps).run("find-a-tender")
    assert fts.new_releases == 1 and feeds.requests[-1].startswith("/api/1.0/ocdsReleasePackages")


async def test_a_500_or_garbage_stops_and_keeps_the_position(
    services: Services, feeds: FakeFeeds, clock: FixedClock
) -> None:
    sleeps = Sleeps(clock)
    feeds.hold = None
    fetch = fetcher(services, feeds, sleeps)
    await fetch.run("contracts-finder", max_pages=1)
    second = None
    feeds.refuse_next(500, body=b"oops")
    with pytest.raises(FetchError, match="answered HTTP 500; stopped"):
        await fetch.run("contracts-finder")
    second = feeds.requests[-1]
    feeds.refuse_next(200, body=b"<html>Service unavailable</html>")
    with pytest.raises(FetchError, match="is not JSON"):
        await fetch.run("contracts-finder")
    feeds.refuse_next(200, body=b'{"unexpected": true}')
    with pytest.raises(FetchError, match="is not OCDS"):
        await fetch.run("contracts-finder")
    async with services.sessions() as s:
        state = (await s.execute(select(TenderFeedState))).scalar_one()
    assert state.last_error and state.next_page == second
    result = await fetch.run("contracts-finder")  # the feed is back: on from the same page
    assert feeds.requests[-3] == second and result.finished and result.new_releases == 0
    assert sleeps.waits == []
    # Too many refusals in a row: give up, keep the place.
    for _ in range(6):
        feeds.refuse_next(429, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    with pytest.raises(FetchError, match="still refused"):
        await fetch.run("contracts-finder", since=AFTER_PAGE - timedelta(days=3))
    assert sleeps.waits == [3600.0] * 5


async def test_no_more_than_12_requests_in_2_minutes(clock: FixedClock) -> None:
    sleeps = Sleeps(clock)
    limit = RateLimit(clock, sleeps)
    for _ in range(12):
        assert await limit.wait() == 0.0
    assert await limit.wait() == 120.0  # the 13th waits for the first to leave the window
    clock.advance(seconds=30)
    assert await limit.wait() == 0.0  # the first twelve have left the window
    assert retry_after("7", clock.now()) == 7.0 and retry_after(None, clock.now()) == 60.0
    assert retry_after("garbage", clock.now()) == 60.0


def test_fetch_resumes_after_a_kill(feeds: FakeFeeds, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fetch.db'}",
        "CIVICBOT_CONTRACTS_FINDER_API_BASE": feeds.url,
    }
    civicbot = str(Path(sys.executable).parent / "civicbot")  # the installed command
    command = [civicbot, "tenders", "fetch", "--source",
               "contracts-finder", "--since", "2025-01-20T23:00:00"]
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    real_cursor = next(c for c in feeds.pages if c not in ("", PAGE2_CURSOR))
    feeds.hold = real_cursor
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        if not feeds.held.wait(timeout=120):
            first.kill()
            pytest.fail(f"the fetch never asked for the second page: {first.communicate()[1]!r}")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == -signal.SIGKILL
    feeds.hold = None
    feeds.release.set()
    asked = len(feeds.requests)
    again = subprocess.run(command[:-2], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    resumed = feeds.requests[asked:]
    assert cursor(resumed[0]) == real_cursor  # not the first page again
    assert "2 page(s), 1 release(s), 0 new; reached the last page" in again.stdout
    listed = runner.invoke(app, ["tenders", "list", "--json"], env=env)
    assert listed.stdout.count('"ocid"') == 94


async def test_serve_fetches_on_a_schedule_unless_turned_off(
    sqlite_url: str, clock: FixedClock, feeds: FakeFeeds
) -> None:
    from bot.scheduler import build_scheduler, fetch_tenders

    settings = make_settings(sqlite_url, contracts_finder_api_base=feeds.url,
                             find_a_tender_api_base=feeds.url, tender_fetch_minutes=15)
    services = await start_services(settings, clock)
    try:
        jobs = {job.id: job for job in build_scheduler(services).get_jobs()}
        assert jobs["tender_fetch"].trigger.interval == timedelta(minutes=15)
        assert "tender_alerts" in jobs
        clock.current = AFTER_PAGE
        await fetch_tenders(services)  # what the job runs: both feeds, then alerts
        assert {p.split("?")[0] for p in feeds.requests} == {
            "/Published/Notices/OCDS/Search", "/api/1.0/ocdsReleasePackages"
        }
    finally:
        await services.close()
    off = await start_services(make_settings(sqlite_url, tender_fetch_minutes=0), clock)
    try:
        assert "tender_fetch" not in {job.id for job in build_scheduler(off).get_jobs()}
    finally:
        await off.close()
