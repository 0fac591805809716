"""Inbound SMS webhooks per second through the whole path, against a bare endpoint.

Runs civicbot under uvicorn on a loopback port (SQLite file in a temporary folder, the Twilio
channel enabled, the dispatcher off so only the inbound path is measured) and posts signed
Twilio webhooks at it: signature check, form parsing, dedupe, engine, database commit. The same
server also answers a bare endpoint that does no work; the ratio shows what the whole path
costs over the web stack alone. The load generator shares the machine (and the event loop), so
read the figures as relative, not as capacity.

    .venv/bin/python bench/sms_webhooks.py [--requests 1500] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import uvicorn
from fastapi import Response
from twilio.request_validator import RequestValidator

from bot.app import build_app
from bot.services import build_services
from bot.settings import Settings

TOKEN = "bench-auth-token"
PUBLIC_URL = "https://bot.example.org"
PATH = "/webhooks/twilio/sms"
# What people send while onboarding; phones cycle through it.
SCRIPT = ["JOIN", "1", "1", "CF10 1EP", "2", "MENU", "3", "HELP"]


def signed_requests(count: int, phones: int, batch: str) -> list[tuple[str, dict[str, str]]]:
    """Bodies and headers, signed up front so the client's work is not in the timing."""
    validator = RequestValidator(TOKEN)
    out = []
    for n in range(count):
        form = {
            "MessageSid": f"SM{batch}{n:030x}",
            "AccountSid": "AC" + "0" * 32,
            "From": f"+4477009{n % phones:05d}",
            "To": "+447700900001",
            "Body": SCRIPT[(n // phones) % len(SCRIPT)],
            "NumMedia": "0",
        }
        signature = validator.compute_signature(PUBLIC_URL + PATH, form)
        out.append((urlencode(form), {"X-Twilio-Signature": signature}))
    return out


async def fire(
    client: httpx.AsyncClient,
    path: str,
    requests: list[tuple[str, dict[str, str]]],
    concurrency: int,
) -> float:
    """Requests per second for posting every request, ``concurrency`` at a time."""
    queue = list(reversed(requests))
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    async def worker() -> None:
        while queue:
            body, extra = queue.pop()
            response = await client.post(path, content=body, headers={**headers, **extra})
            if response.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(requests) / (time.perf_counter() - started)


async def main(count: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}",
            public_url=PUBLIC_URL,
            twilio_account_sid="AC" + "0" * 32,
            twilio_auth_token=TOKEN,
            twilio_from_number="+447700900001",
            twilio_api_base="http://127.0.0.1:9",  # never called: the dispatcher is off
            run_dispatcher=False,
        )
        app = build_app(build_services(settings))

        async def bare() -> Response:
            return Response('<?xml version="1.0" encoding="UTF-8"?><Response/>', 200)

        app.add_api_route("/bench/bare", bare, methods=["POST"])

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            limits = httpx.Limits(max_connections=concurrency)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, limits=limits) as client:
                warm = signed_requests(50, 50, "f0")
                await fire(client, "/bench/bare", warm, concurrency)
                await fire(client, PATH, warm, concurrency)
                requests = signed_requests(count, max(1, count // len(SCRIPT)), "b0")
                bare_rate = await fire(client, "/bench/bare", requests, concurrency)
                full_rate = await fire(client, PATH, requests, concurrency)
        finally:
            server.should_exit = True
            await serving
    print(f"requests: {count} each, concurrency {concurrency}")
    print(f"bare endpoint:          {bare_rate:8.1f} req/s")
    print(f"inbound SMS, full path: {full_rate:8.1f} req/s")
    print(f"ratio (full / bare):    {full_rate / bare_rate:8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
