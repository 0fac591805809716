"""A fake Contracts Finder / Find a Tender API on loopback, serving the shared real pages.

Contracts Finder's first page is the shared real page, byte for byte; its ``links.next``
(a real cursor) leads to a second page (the shared real award release, given a next link to a
third), and the third is the empty page that ends the feed. Find a Tender serves its
documentation sample. Tests script refusals (429 with Retry-After, 403, 500, garbage) for the
next requests, and can hold a page until released (to kill a fetch mid-way).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support import serving
from tests.tenders.support import CF_PAGE, shared

PAGE2_CURSOR = "page-3"


@dataclass
class FakeFeeds:
    url: str = ""
    requests: list[str] = field(default_factory=list)
    scripted: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    pages: dict[str, bytes] = field(default_factory=dict)  # cursor ("" for the first) -> body
    fts: bytes = b""
    hold: str | None = None  # a cursor whose page waits for `release`
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse_next(self, status: int, headers: dict[str, str] | None = None,
                    body: bytes = b"") -> None:
        self.scripted.append((status, headers or {}, body))


def _handler(fake: FakeFeeds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with fake.lock:
                fake.requests.append(self.path)
                script = fake.scripted.pop(0) if fake.scripted else None
            if script is not None:
                self._answer(*script)
                return
            parts = urlsplit(self.path)
            cursor = parse_qs(parts.query).get("cursor", [""])[0]
            if parts.path == "/api/1.0/ocdsReleasePackages":
                self._answer(200, {}, fake.fts)
                return
            if parts.path != "/Published/Notices/OCDS/Search" or cursor not in fake.pages:
                self._answer(404, {}, b'{"error": "not found"}')
                return
            if fake.hold is not None and cursor == fake.hold:
                fake.held.set()
                fake.release.wait(timeout=60)
            self._answer(200, {}, fake.pages[cursor])

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _pages() -> dict[str, bytes]:
    first = shared(CF_PAGE.name).read_bytes()
    real_next = json.loads(first)["links"]["next"]
    real_cursor = parse_qs(urlsplit(real_next).query)["cursor"][0]
    award = json.loads(shared("cf_ocds_search_2025-01-23_1release_award.json").read_bytes())
    award["links"]["next"] = real_next.replace(real_cursor, PAGE2_CURSOR)
    last = {"releases": [], "links": {}}
    return {
        "": first,
        real_cursor: json.dumps(award).encode(),
        PAGE2_CURSOR: json.dumps(last).encode(),
    }


@pytest.fixture
def feeds() -> Iterator[FakeFeeds]:
    fake = FakeFeeds(pages=_pages(),
                     fts=shared("fts_api_docs_sample_release_package_SYNTHETIC.json").read_bytes())
    with serving(_handler(fake)) as fake.url:
        try:
            yield fake
        finally:
            fake.release.set()  # a request held on purpose ends before the server does
