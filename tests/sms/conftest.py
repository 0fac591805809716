"""Fixtures for the Twilio SMS channel: a fake Twilio REST server on loopback, and civicbot
built from Settings that point the real twilio client at it.

The fake answers ``POST /2010-04-01/Accounts/{sid}/Messages.json`` like Twilio does (201 and a
message resource) and records every request, so tests assert on what was actually sent. Tests
can script failures (HTTP status + Twilio error body) or a slow answer for the next sends.
``GET`` on the same path lists the accepted messages (filtered by To and From, newest first),
as Twilio's message list does. Message times come from ``fake.now`` (tests set it to their
fixed clock).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services, build_services
from bot.settings import Settings
from storage.db import upgrade
from storage.models import InboundMessage, OutboundMessage
from tests.support import serving

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
FROM_NUMBER = "+447700900001"
PUBLIC_URL = "https://bot.example.org"
PHONE = "+447700900123"


@dataclass
class Sent:
    """One request the fake Twilio received."""

    method: str
    path: str
    form: dict[str, str]
    auth: tuple[str, str] | None
    status: int = 0  # what the fake answered
    at: float = field(default_factory=time.monotonic)  # when the fake received it


@dataclass
class FakeTwilio:
    url: str = ""
    requests: list[Sent] = field(default_factory=list)
    scripted: list[tuple[int, dict[str, Any], float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    accepted: list[dict[str, Any]] = field(default_factory=list)  # message resources

    def fail_next(self, status: int, code: int | None = None, message: str = "error") -> None:
        """The next send gets this HTTP status and a Twilio error body."""
        body = {"code": code or status, "message": message, "status": status}
        self.scripted.append((status, body, 0.0))

    def delay_next(self, seconds: float) -> None:
        """The next send is answered (successfully) only after ``seconds``."""
        self.scripted.append((0, {}, seconds))

    @property
    def messages(self) -> list[Sent]:
        return [r for r in self.requests if r.path.endswith("/Messages.json")]

    @property
    def bodies(self) -> list[str]:
        """The bodies of the messages Twilio accepted."""
        return [m.form.get("Body", "") for m in self.messages if m.status == 201]


def _handler(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            params = {k: v[0] for k, v in parse_qs(query).items()}
            with fake.lock:
                fake.requests.append(Sent("GET", self.path, params, None, 200))
                found = [
                    m
                    for m in reversed(fake.accepted)
                    if m["to"] == params.get("To", m["to"])
                    and m["from"] == params.get("From", m["from"])
                ]
            body = {
                "messages": found[: int(params.get("PageSize", "50"))],
                "page": 0,
                "page_size": int(params.get("PageSize", "50")),
                "next_page_uri": None,
                "uri": path,
            }
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            at = time.monotonic()  # when the request arrived, before any of our work
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length)
            if len(data) < length:  # the sender died mid-request: Twilio accepts nothing
                self.send_response(400)
                self.end_headers()
                return
            raw = data.decode("utf-8")
            form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
            auth = None
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                auth = (user, password)
            sent = Sent("POST", self.path, form, auth, at=at)
            with fake.lock:
                fake.requests.append(sent)
                script = fake.scripted.pop(0) if fake.scripted else None
                sid = f"SM{next(fake.ids):032x}"
            status, body = 201, self._message(sid, form)
            if script is not None:
                if script[2]:
                    time.sleep(script[2])
                if script[0]:
                    status, body = script[0], script[1]
            if auth != (ACCOUNT_SID, AUTH_TOKEN):
                status, body = 401, {"code": 20003, "message": "Authenticate", "status": 401}
            sent.status = status
            if status == 201:
                with fake.lock:
                    fake.accepted.append(body)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _message(self, sid: str, form: dict[str, str]) -> dict[str, Any]:
            return {
                "sid": sid,
                "account_sid": ACCOUNT_SID,
                "to": form.get("To"),
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "date_created": format_datetime(fake.now(), usegmt=True),
                "date_updated": format_datetime(fake.now(), usegmt=True),
                "error_code": None,
                "error_message": None,
                "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
            }

    return Handler


@contextlib.contextmanager
def running_fake_twilio() -> Iterator[FakeTwilio]:
    """The fake Twilio, serving on a loopback port for the block (tests and bench/)."""
    fake = FakeTwilio()
    with serving(_handler(fake)) as fake.url:
        yield fake


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with running_fake_twilio() as fake:
        yield fake


def sign(path: str, form: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(PUBLIC_URL + path, form))


@dataclass
class SmsBot:
    """civicbot with the SMS channel, its webhooks, and the fake Twilio behind it."""

    services: Services
    client: httpx.AsyncClient
    fake: FakeTwilio
    clock: FixedClock
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def post(
        self,
        path: str,
        form: dict[str, str],
        *,
        signature: str | None = "valid",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        if signature == "valid":
            signature = sign(path, form)
        if signature is not None:
            all_headers["X-Twilio-Signature"] = signature
        return await self.client.post(path, content=urlencode(form), headers=all_headers)

    def inbound_form(
        self, body: str, *, sender: str = PHONE, sid: str | None = None
    ) -> dict[str, str]:
        sid = sid or f"SM{next(self.ids):032x}"
        return {
            "ToCountry": "GB",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": ACCOUNT_SID,
            "From": sender,
            "To": FROM_NUMBER,
            "Body": body,
            "NumSegments": "1",
            "ApiVersion": "2010-04-01",
        }

    async def text(
        self, body: str, *, sender: str = PHONE, sid: str | None = None
    ) -> httpx.Response:
        """A signed inbound SMS; asserts Twilio would be answered with empty TwiML."""
        response = await self.post(
            "/webhooks/twilio/sms", self.inbound_form(body, sender=sender, sid=sid)
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/xml")
        assert response.text.endswith("<Response/>")
        return response

    async def dispatch(self) -> list[str]:
        """Run the dispatcher until nothing is due; the bodies Twilio received meanwhile."""
        before = len(self.fake.messages)
        while await self.services.dispatcher.run_once():
            pass
        new = self.fake.messages[before:]
        return [m.form.get("Body", "") for m in new if m.status == 201]

    async def converse(self, body: str, *, sender: str = PHONE) -> list[str]:
        await self.text(body, sender=sender)
        return await self.dispatch()

    async def status(
        self,
        sid: str,
        status: str,
        error_code: str | None = None,
        *,
        error_message: str | None = None,
    ) -> httpx.Response:
        form = {
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "AccountSid": ACCOUNT_SID,
        }
        if error_code is not None:
            form["ErrorCode"] = error_code
        if error_message is not None:
            form["ErrorMessage"] = error_message
        return await self.post("/webhooks/twilio/status", form)

    async def count(self, table: type[InboundMessage] | type[OutboundMessage]) -> int:
        async with self.services.sessions() as session:
            return int(
                (await session.execute(select(func.count()).select_from(table))).scalar_one()
            )

    async def outbox(self) -> list[OutboundMessage]:
        async with self.services.sessions() as session:
            query = select(OutboundMessage).order_by(OutboundMessage.id)  # type: ignore[arg-type]
            return list((await session.execute(query)).scalars())


def sms_settings(tmp_path: Path, fake: FakeTwilio, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'sms.db'}",
        "public_url": PUBLIC_URL,
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_from_number": FROM_NUMBER,
        "twilio_api_base": fake.url,
        "twilio_mps": 1000.0,
        "run_dispatcher": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def sms_overrides() -> dict[str, Any]:
    """Settings a test module can override (e.g. a smaller ``sms_max_segments``)."""
    return {}


@pytest.fixture
async def sms_bot(
    tmp_path: Path, database_url: str, fake_twilio: FakeTwilio, sms_overrides: dict[str, Any]
) -> AsyncIterator[SmsBot]:
    """The bot on each database (SQLite file, PostgreSQL) with Twilio pointed at the fake."""
    clock = FixedClock()
    fake_twilio.now = clock.now  # the fake stamps messages with the test's clock
    settings = sms_settings(tmp_path, fake_twilio, database_url=database_url, **sms_overrides)
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    app = build_app(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
        try:
            yield SmsBot(services=services, client=client, fake=fake_twilio, clock=clock)
        finally:
            await services.close()
