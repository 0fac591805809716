"""Fetching notices from the live OCDS APIs: Contracts Finder's search and Find a Tender's
release packages. Each page is imported as it arrives; the next page's address is kept
(``tender_feed_state``) in the same run, so a fetch that is stopped resumes there.

Polite by design:

- at most 12 requests in any 2 minutes (Find a Tender's published limit; Contracts Finder
  gets the same courtesy);
- a 429 waits for its ``Retry-After`` (seconds or an HTTP date; 60 s when absent);
- Contracts Finder's 403 (its way of saying "too many") waits 5 minutes;
- each is retried a few times; a 5xx, a page that is not OCDS, or too many refusals stop the
  fetch, keep its position and say why (:class:`FetchError`).

``links.next`` is followed only as a path and query on the configured base URL
(``CIVICBOT_CONTRACTS_FINDER_API_BASE`` / ``CIVICBOT_FIND_A_TENDER_API_BASE``), so a feed
cannot send the fetcher to another host, and tests can serve real pages on loopback.
Time and waiting come from the injected clock and ``sleep``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import urlencode, urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flows.tenders.ocds import OcdsError, loads, releases_in
from flows.tenders.service import ImportResult, TenderService
from storage import tenders as store
from storage.tenders import TenderFeedState

WINDOW = timedelta(minutes=2)
PER_WINDOW = 12
FORBIDDEN_WAIT = 300.0  # Contracts Finder's 403
DEFAULT_RETRY_AFTER = 60.0
MAX_WAITS = 5  # refusals in a row before giving up
MAX_PAGE_BYTES = 64 * 1024 * 1024


class Clock(Protocol):
    def now(self) -> datetime: ...


Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Source:
    name: str
    path: str  # the search endpoint on the base URL
    since_param: str
    page_size: int = 100


SOURCES = {
    "contracts-finder": Source(
        "contracts-finder", "/Published/Notices/OCDS/Search", "publishedFrom"
    ),
    "find-a-tender": Source("find-a-tender", "/api/1.0/ocdsReleasePackages", "updatedFrom"),
}


class FetchError(Exception):
    """The fetch stopped; its position is kept. The message says why and where."""


@dataclass
class FetchResult:
    pages: int = 0
    releases: int = 0
    new_releases: int = 0
    waited: float = 0.0
    finished: bool = False  # reached the last page


class RateLimit:
    """At most ``limit`` requests in any ``window``, by the injected clock."""

    def __init__(self, clock: Clock, sleep: Sleep, limit: int = PER_WINDOW,
                 window: timedelta = WINDOW) -> None:
        self.clock, self.sleep, self.limit, self.window = clock, sleep, limit, window
        self.sent: deque[datetime] = deque()

    async def wait(self) -> float:
        waited = 0.0
        now = self.clock.now()
        while self.sent and now - self.sent[0] >= self.window:
            self.sent.popleft()
        if len(self.sent) >= self.limit:
            pause = (self.sent[0] + self.window - now).total_seconds()
            if pause > 0:
                await self.sleep(pause)
                waited = pause
            self.sent.popleft()
        self.sent.append(self.clock.now())
        return waited


def retry_after(value: str | None, now: datetime) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), within reason."""
    if not value:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    if value.isdigit():
        return min(float(value), 3600.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    return min(max((when - now).total_seconds(), 1.0), 3600.0)


class Fetcher:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        tenders: TenderService,
        clock: Clock,
        bases: dict[str, str],
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.sessions = sessions
        self.tenders = tenders
        self.clock = clock
        self.bases = bases
        self.client = client
        self.sleep = sleep
        self.limits = {name: RateLimit(clock, sleep) for name in SOURCES}

    def first_page(self, source: Source, since: datetime | None) -> str:
        start = since or (self.clock.now() - timedelta(days=1))
        query = {source.since_param: start.strftime("%Y-%m-%dT%H:%M:%S"),
                 "limit": str(source.page_size)}
        return f"{source.path}?{urlencode(query)}"

    @staticmethod
    def relative(url: str) -> str:
        """A ``links.next`` as path and query only."""
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    async def run(
        self,
        name: str,
        *,
        since: datetime | None = None,
        max_pages: int | None = None,
        on_page: Callable[[int, ImportResult], None] | None = None,
    ) -> FetchResult:
        """Page through one source from its kept position (or ``since``: start again there)
        until the last page (or ``max_pages``). Raises :class:`FetchError`."""
        source = SOURCES[name]
        result = FetchResult()
        async with self.sessions() as session, session.begin():
            state = await store.feed_state(session, source=name)
            if state is None:
                state = TenderFeedState(source=name, updated_at=self.clock.now())
                session.add(state)
            if since is not None or not state.next_page:
                state.next_page = self.first_page(source, since)
                state.since = (since or self.clock.now()).isoformat()[:40]
            page = state.next_page
        client = self.client or httpx.AsyncClient(timeout=60.0)
        try:
            while page and (max_pages is None or result.pages < max_pages):
                document = await self._get(client, source, page, result)
                try:
                    parsed = releases_in(document, f"{name} {page}")
                except OcdsError as exc:
                    await self._keep(name, page, str(exc))
                    raise FetchError(
                        f"{name}: the page {page} is not OCDS ({exc}); stopped, and the next "
                        "fetch starts again at this page"
                    ) from None
                imported = await self.tenders.import_parsed([parsed])
                next_page = self.relative(parsed.next_url) if parsed.next_url else None
                if next_page == page:  # a feed pointing at itself would never end
                    next_page = None
                if not parsed.releases:
                    next_page = None  # an empty page is the end (the API still gives a link)
                result.pages += 1
                result.releases += imported.releases
                result.new_releases += imported.new_releases
                # the last page stays the position: the next run reads it again (importing
                # nothing twice) and follows any newer links from it
                await self._keep(name, next_page or page, None, releases=imported.new_releases)
                if on_page is not None:
                    on_page(result.pages, imported)
                if next_page is None:
                    result.finished = True
                page = next_page or ""
        finally:
            if self.client is None:
                await client.aclose()
        return result

    async def _keep(self, name: str, page: str, error: str | None, *, releases: int = 0) -> None:
        async with self.sessions() as session, session.begin():
            state = await store.feed_state(session, source=name)
            assert state is not None
            state.next_page = page
            state.last_error = None if error is None else error[:500]
            if error is None:
                state.pages += 1
                state.releases += releases
            state.updated_at = self.clock.now()

    async def _get(
        self, client: httpx.AsyncClient, source: Source, page: str, result: FetchResult
    ) -> object:
        url = self.bases[source.name].rstrip("/") + page
        waits = 0
        while True:
            result.waited += await self.limits[source.name].wait()
            try:
                response = await client.get(url, headers={"Accept": "application/json"})
            except httpx.HTTPError as exc:
                await self._keep(source.name, page, f"{exc.__class__.__name__}")
                raise FetchError(
                    f"{source.name}: no answer from {url} ({exc.__class__.__name__}); "
                    "stopped, and the next fetch resumes at this page"
                ) from None
            pause: float | None = None
            if response.status_code == 429:
                pause = retry_after(response.headers.get("Retry-After"), self.clock.now())
            elif response.status_code == 403 and source.name == "contracts-finder":
                pause = FORBIDDEN_WAIT
            if pause is not None:
                waits += 1
                if waits > MAX_WAITS:
                    await self._keep(source.name, page, f"HTTP {response.status_code}")
                    raise FetchError(
                        f"{source.name}: still refused (HTTP {response.status_code}) after "
                        f"{MAX_WAITS} waits; stopped, and the next fetch resumes at this page"
                    )
                await self.sleep(pause)
                result.waited += pause
                continue
            if response.status_code != 200:
                await self._keep(source.name, page, f"HTTP {response.status_code}")
                raise FetchError(
                    f"{source.name}: {url} answered HTTP {response.status_code}; stopped, "
                    "and the next fetch resumes at this page"
                )
            body = response.content
            if len(body) > MAX_PAGE_BYTES:
                await self._keep(source.name, page, "page too large")
                raise FetchError(f"{source.name}: the page {page} is larger than 64 MiB")
            try:
                return loads(body, f"{source.name} {page}")
            except OcdsError as exc:
                await self._keep(source.name, page, str(exc))
                raise FetchError(
                    f"{source.name}: the page {page} is not JSON ({exc}); stopped, and the "
                    "next fetch resumes at this page"
                ) from None
