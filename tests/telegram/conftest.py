"""Fixtures for the Telegram channel: a fake Bot API server on loopback, and civicbot built from
Settings that point the real python-telegram-bot client at it.

The fake answers ``POST /bot<token>/<method>`` with valid Bot API objects and records every
call, so tests assert on what was actually sent. Tests script failures (a 429 with
``retry_after``, a 403 "blocked") for the next calls of a method.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services, build_services
from bot.settings import Settings
from flows.polls.service import PollService
from storage.db import upgrade
from tests.support import serving

TOKEN = "123456:TEST-token"
SECRET = "s3cret-Webhook_token"
BOT_ID = 123456
BOT_USERNAME = "civicbot_test_bot"
USER = 5550001
GROUP = -1001234567890

TOO_MANY = {
    "ok": False,
    "error_code": 429,
    "description": "Too Many Requests: retry after 1",
    "parameters": {"retry_after": 1},
}
BLOCKED = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    result: Any = None


@dataclass
class FakeBotApi:
    """Records calls; answers like the Bot API. ``fail(method, body)`` scripts the next answer."""

    calls: list[Call] = field(default_factory=list)
    scripted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    url: str = ""

    def fail(self, method: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.scripted.setdefault(method, []).append(body)

    def sent(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c.params for c in self.calls if c.method == method]

    def methods(self) -> list[str]:
        with self.lock:
            return [c.method for c in self.calls if c.method != "getMe"]

    def answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            call = Call(method, params)
            self.calls.append(call)
            scripted = self.scripted.get(method)
            if scripted:
                body = scripted.pop(0)
                return int(body["error_code"]), body
            call.result = self._result(method, params)
        return 200, {"ok": True, "result": call.result}

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "civicbot",
                "username": BOT_USERNAME,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        if method == "sendMessage":
            message = self._message(params)
            message["text"] = params["text"]
            if "reply_markup" in params:
                message["reply_markup"] = params["reply_markup"]
            return message
        if method == "sendPoll":
            message = self._message(params)
            message["poll"] = self._poll(params, closed=False)
            return message
        if method == "stopPoll":
            return self._poll({"question": "q", "options": ["a", "b"]}, closed=True)
        if method == "editMessageReplyMarkup":
            message = self._message(params)
            message["message_id"] = int(params["message_id"])
            message["reply_markup"] = params.get("reply_markup")
            return message
        if method == "getUpdates":
            batch, self.updates = self.updates, []
            return batch
        return True  # answerCallbackQuery, setWebhook, deleteWebhook, setMyCommands

    def _message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        chat = (
            {"id": chat_id, "type": "private", "first_name": "Sam"}
            if chat_id > 0
            else {"id": chat_id, "type": "supergroup", "title": "Riverside neighbours"}
        )
        return {"message_id": next(self.ids), "date": 1767600000, "chat": chat}

    def _poll(self, params: dict[str, Any], *, closed: bool) -> dict[str, Any]:
        options = params["options"]
        return {
            "id": f"poll-{next(self.ids)}",
            "question": params["question"],
            "options": [
                {
                    "text": o if isinstance(o, str) else o["text"],
                    "voter_count": 0,
                    "persistent_id": str(n),  # required since Bot API 9.6
                }
                for n, o in enumerate(options)
            ],
            "total_voter_count": 0,
            "is_closed": closed,
            "is_anonymous": False,
            "type": "regular",
            "allows_multiple_answers": bool(params.get("allows_multiple_answers")),
            "allows_revoting": True,  # required since Bot API 9.6
            "members_only": False,  # required since Bot API 10.0
        }


def _params(handler: BaseHTTPRequestHandler, body: bytes) -> dict[str, Any]:
    kind = handler.headers.get("Content-Type", "")
    if kind.startswith("application/json"):
        loaded: dict[str, Any] = json.loads(body or b"{}")
        return loaded
    params: dict[str, Any] = {}
    for key, values in parse_qs(body.decode(), keep_blank_values=True).items():
        value = values[0]
        try:
            decoded = value[:1] in "[{" or value in ("true", "false")
            params[key] = json.loads(value) if decoded else value
        except json.JSONDecodeError:
            params[key] = value
    return params


@contextlib.contextmanager
def running_fake_bot_api() -> Iterator[FakeBotApi]:
    """The fake Bot API, serving on a loopback port for the block (tests and bench/)."""
    fake = FakeBotApi()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            prefix = f"/bot{TOKEN}/"
            if not self.path.startswith(prefix):
                status, answer = 404, {"ok": False, "error_code": 404, "description": "Not Found"}
            else:
                status, answer = fake.answer(self.path[len(prefix) :], _params(self, body))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    with serving(Handler, daemon_threads=True, poll_interval=0.05) as fake.url:
        yield fake


@pytest.fixture
def fake_api() -> Iterator[FakeBotApi]:
    with running_fake_bot_api() as fake:
        yield fake


BUDGET_FLOW = """\
id: vote
title: Vote
triggers: [VOTE]
start: pick
nodes:
  pick:
    type: multi
    text: Pick projects for Riverside (budget 10,000)
    budget: 10000
    min: 1
    save_as: projects
    options:
      - {id: park, text: Park benches, cost: 4000}
      - {id: lights, text: Street lights, cost: 5000}
      - {id: garden, text: Community garden, cost: 3000}
    next: done
  done:
    type: end
    text: Thanks, your vote is in.
"""


def telegram_settings(database_url: str, api_base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "public_url": "https://bot.example.org",
        "run_dispatcher": False,
        "run_scheduler": False,
        "telegram_token": TOKEN,
        "telegram_webhook_secret": SECRET,
        "telegram_api_base": api_base,
        "telegram_chat_interval_seconds": 0,
        "outbox_backoff_seconds": 1,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class TelegramBot:
    services: Services
    client: httpx.AsyncClient
    fake: FakeBotApi
    clock: FixedClock
    update_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def post(
        self, update: dict[str, Any], secret: str | None = SECRET
    ) -> httpx.Response:
        headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
        return await self.client.post("/webhooks/telegram", json=update, headers=headers)

    def next_id(self) -> int:
        return next(self.update_ids)

    def text(self, text: str, chat_id: int = USER) -> dict[str, Any]:
        return {
            "update_id": self.next_id(),
            "message": {
                "message_id": self.next_id(),
                "date": 1767600000,
                "chat": {"id": chat_id, "type": "private", "first_name": "Sam"},
                "from": {"id": chat_id, "is_bot": False, "first_name": "Sam"},
                "text": text,
            },
        }

    def tap(self, message_id: int, data: str, chat_id: int = USER) -> dict[str, Any]:
        return {
            "update_id": self.next_id(),
            "callback_query": {
                "id": f"cq-{self.next_id()}",
                "from": {"id": chat_id, "is_bot": False, "first_name": "Sam"},
                "chat_instance": "ci-1",
                "data": data,
                "message": {
                    "message_id": message_id,
                    "date": 1767600000,
                    "chat": {"id": chat_id, "type": "private", "first_name": "Sam"},
                    "from": {"id": BOT_ID, "is_bot": True, "first_name": "civicbot"},
                    "text": "a question",
                },
            },
        }

    async def dispatch(self) -> int:
        return await self.services.dispatcher.run_once()

    async def say(self, text: str) -> list[dict[str, Any]]:
        """Post a text, send the outbox, return the sendMessage calls it caused."""
        before = len(self.fake.sent("sendMessage"))
        response = await self.post(self.text(text))
        assert response.status_code == 200, response.text
        await self.dispatch()
        return self.fake.sent("sendMessage")[before:]

    async def press(self, label_start: str) -> httpx.Response:
        """Tap the button whose label starts with ``label_start`` on the latest keyboard."""
        message_id, rows = self.latest_keyboard()
        for row in rows:
            for button in row:
                if button["text"].startswith(label_start):
                    return await self.post(self.tap(message_id, button["callback_data"]))
        raise AssertionError(f"no button {label_start!r} in {rows}")

    def latest_keyboard(self) -> tuple[int, list[list[dict[str, str]]]]:
        """The message id and rows of the latest keyboard shown (sent or redrawn)."""
        with self.fake.lock:
            calls = list(self.fake.calls)
        keyboards: list[tuple[int, list[list[dict[str, str]]]]] = []
        for call in calls:
            shown = call.method in ("sendMessage", "editMessageReplyMarkup")
            markup = call.params.get("reply_markup") or {}
            if shown and call.result and "inline_keyboard" in markup:
                rows = call.params["reply_markup"]["inline_keyboard"]
                keyboards.append((int(call.result["message_id"]), rows))
        assert keyboards, "no keyboard was shown"
        return keyboards[-1]


def polls_of(tg: TelegramBot) -> PollService:
    assert tg.services.polls is not None
    return tg.services.polls


@pytest.fixture
async def tg(tmp_path: Path, database_url: str, fake_api: FakeBotApi) -> AsyncIterator[TelegramBot]:
    """The bot on each database (SQLite file, PostgreSQL) with the Bot API pointed at the fake."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "vote.yaml").write_text(BUDGET_FLOW)
    settings = telegram_settings(database_url, fake_api.url, flows_dir=flows)
    clock = FixedClock()
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    app = build_app(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield TelegramBot(services, client, fake_api, clock)
    await services.close()
