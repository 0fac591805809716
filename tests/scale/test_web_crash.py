"""Crash safety of the inbound path: ``kill -9`` of a web process loses no acknowledged
message (#16).

A real ``civicbot serve --no-worker`` on PostgreSQL, with the Twilio SMS and Telegram webhooks
on, gets signed webhooks from many senders at once, each sender walking an onboarding script
one message at a time (the next only after the last was answered, as a phone does). Once a
third of them have been answered, a web process gets SIGKILL while the rest of the senders'
requests are in flight: the only one (``--workers 1``: its whole process group), or one of
two (``--workers 2``), while the other goes on answering. Then:

- every acknowledged message (a 200 reached the sender) is stored, once, with its reply
  queued: acknowledgement comes after the commit, and a message is stored with its replies in
  one transaction or not at all;
- a fresh web process receives every request again, as Twilio and Telegram deliver what was
  not acknowledged (and here the acknowledged ones too, to show they are dropped as
  duplicates): every message ends stored exactly once, nothing points at a missing row, and
  every sender's conversation ends exactly where a sender who was never interrupted ends,
  with the same replies, none missing or doubled.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select

from storage.models import (
    ChannelIdentity,
    Contact,
    Conversation,
    InboundMessage,
    OutboundMessage,
)
from tests.conftest import load_demo_wards
from tests.fuzzing import check_database
from tests.scale.conftest import Builder
from tests.scale.support import CIVICBOT, free_port, poll, stop_group
from tests.sms.conftest import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, PUBLIC_URL, sign
from tests.telegram.conftest import SECRET as TELEGRAM_SECRET
from tests.telegram.conftest import TOKEN as TELEGRAM_TOKEN

SMS_PATH = "/webhooks/twilio/sms"
TELEGRAM_PATH = "/webhooks/telegram"
# What each sender says, in order: join, consent, language, postcode, then the menu.
SCRIPT = ["JOIN", "1", "1", "CF10 1EP", "2", "MENU", "3", "HELP"]
SENDERS = 15  # per channel; each has one request in flight at a time
KILL_AFTER = (2 * SENDERS * len(SCRIPT)) // 3  # acknowledged messages before the kill
NOWHERE = "http://127.0.0.1:9"  # provider APIs: never called, the web process sends nothing


@dataclass(frozen=True)
class Webhook:
    """One inbound message as its provider delivers it (and delivers it again)."""

    channel: str  # as stored: "sms" or "telegram"
    address: str  # the sender, as stored
    provider_id: str  # MessageSid or update_id, as stored
    path: str
    body: bytes
    headers: dict[str, str]


def sms(sender: int, step: int) -> Webhook:
    phone = f"+4477009{sender:05d}"
    sid = f"SM{sender:016x}{step:016x}"
    form = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": phone,
        "To": FROM_NUMBER,
        "Body": SCRIPT[step],
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": sign(SMS_PATH, form),  # twilio's RequestValidator
    }
    return Webhook("sms", phone, sid, SMS_PATH, urlencode(form).encode(), headers)


def telegram(sender: int, step: int) -> Webhook:
    chat = 7_000_000 + sender
    update_id = 100_000 + sender * 100 + step
    update = {
        "update_id": update_id,
        "message": {
            "message_id": step + 1,
            "date": 1767600000 + step,
            "chat": {"id": chat, "type": "private", "first_name": "Sam"},
            "from": {"id": chat, "is_bot": False, "first_name": "Sam"},
            "text": SCRIPT[step],
        },
    }
    headers = {
        "Content-Type": "application/json",
        "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET,
    }
    return Webhook("telegram", str(chat), str(update_id), TELEGRAM_PATH,
                   json.dumps(update).encode(), headers)  # fmt: skip


def web_env(pg_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "CIVICBOT_DATABASE_URL": pg_url,
        "CIVICBOT_PORT": str(port),
        "CIVICBOT_PUBLIC_URL": PUBLIC_URL,  # what the signatures are computed against
        "CIVICBOT_SIMULATOR": "off",
        "CIVICBOT_INBOUND_PER_MINUTE": "1000",  # no message dropped as a flood
        "CIVICBOT_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "CIVICBOT_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "CIVICBOT_TWILIO_FROM_NUMBER": FROM_NUMBER,
        "CIVICBOT_TWILIO_API_BASE": NOWHERE,
        "CIVICBOT_TELEGRAM_TOKEN": TELEGRAM_TOKEN,
        "CIVICBOT_TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "CIVICBOT_TELEGRAM_API_BASE": NOWHERE,
    }


def start_web(
    pg_url: str, log: Path, cwd: Path, workers: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    """``civicbot serve --no-worker --workers N`` in its own process group, every one of its
    web processes answering; its base URL."""
    port = free_port()
    with log.open("wb") as out:
        web = subprocess.Popen(
            [CIVICBOT, "serve", "--no-worker", "--workers", str(workers)],
            env=web_env(pg_url, port),
            cwd=cwd,  # no stray .env is read
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    poll(base + "/healthz", lambda r: r.status_code == 200, web)
    if workers > 1:  # uvicorn's processes share the socket: wait until each one accepts
        poll(base + "/healthz",
             lambda r: log.read_text().count("Application startup complete") >= workers,
             web)  # fmt: skip
    return web, base


def web_processes(supervisor: int) -> list[int]:
    """The web processes uvicorn's supervisor (``serve --workers N``) has started: its
    children run by multiprocessing's spawn (not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == supervisor and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def key(hook: Webhook) -> tuple[str, str]:
    """What identifies a message: its channel and provider id, as stored."""
    return (hook.channel, hook.provider_id)


async def walk(
    client: httpx.AsyncClient,
    base: str,
    webhooks: list[Webhook],
    answers: dict[tuple[str, str], int | None],
    on_answer: Callable[[], None] = lambda: None,
) -> None:
    """Deliver one sender's webhooks in order, each after the last was answered; stop at the
    first that gets no answer (the server is gone). ``answers``: the status, or None."""
    for hook in webhooks:
        try:
            response = await client.post(base + hook.path, content=hook.body,
                                         headers=hook.headers)  # fmt: skip
        except httpx.HTTPError:
            answers[key(hook)] = None
            return
        answers[key(hook)] = response.status_code
        on_answer()
        if response.status_code != 200:
            return


async def stored_ids(build: Builder) -> Counter[tuple[str, str]]:
    """How many times each (channel, provider id) is stored."""
    services = build("observer")
    async with services.sessions() as session:
        rows = (await session.execute(select(InboundMessage))).scalars().all()
    return Counter((row.channel, row.provider_id) for row in rows)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [1, 2])
async def test_kill_9_of_a_web_process_loses_no_acknowledged_message(
    build: Builder,
    pg_url: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    workers: int,
) -> None:
    await load_demo_wards(build("setup"))  # the script's postcode is in a demo ward
    senders = [[sms(s, i) for i in range(len(SCRIPT))] for s in range(SENDERS)] + [
        [telegram(s, i) for i in range(len(SCRIPT))] for s in range(SENDERS)
    ]
    everything = [hook for sender in senders for hook in sender]
    timeout = httpx.Timeout(60.0)

    # 1. Many senders at once; SIGKILL to a web process mid-stream.
    web, base = start_web(pg_url, tmp_path / "web-killed.log", tmp_path, workers)
    processes.append(web)
    answers: dict[tuple[str, str], int | None] = {}
    killed = []
    victims = web_processes(web.pid)[:1] if workers > 1 else []
    assert victims or workers == 1, "uvicorn started no web process"

    def kill_when_enough() -> None:
        acknowledged = sum(1 for status in answers.values() if status == 200)
        if acknowledged == KILL_AFTER:  # the other senders' requests are in flight now
            if victims:
                os.kill(victims[0], signal.SIGKILL)  # one of two; the other goes on
            else:
                os.killpg(web.pid, signal.SIGKILL)
            killed.append(acknowledged)

    async with httpx.AsyncClient(timeout=timeout) as client:
        await asyncio.gather(
            *(walk(client, base, sender, answers, kill_when_enough) for sender in senders)
        )
    assert killed, f"never killed: answers {Counter(answers.values())}"
    if victims:
        # The survivor answered the senders it was serving to the end of their scripts.
        assert sum(1 for status in answers.values() if status == 200) > KILL_AFTER
        stop_group(web)
    else:
        web.communicate(timeout=30)
        assert web.returncode == -signal.SIGKILL
    acknowledged = {k for k, status in answers.items() if status == 200}
    unanswered = {k for k, status in answers.items() if status is None}
    assert set(answers.values()) <= {200, None}, Counter(answers.values())  # no 4xx/5xx
    assert len(acknowledged) >= KILL_AFTER
    assert unanswered, "no request was in flight when the process was killed"

    after_kill = await stored_ids(build)
    # Every acknowledged message is stored, exactly once (the 200 came after the commit).
    lost = sorted(k for k in acknowledged if after_kill[k] != 1)
    assert not lost, f"{len(lost)} acknowledged but not stored, such as {lost[:5]}"
    assert set(after_kill) <= {key(h) for h in everything}
    assert max(after_kill.values()) == 1
    # Stored but never acknowledged: committed just before the kill; the redelivery must be
    # dropped as a duplicate below. (How many depends on the moment of the kill.)
    committed_unacknowledged = set(after_kill) - acknowledged
    assert committed_unacknowledged <= unanswered
    services = build("observer-after-kill")
    async with services.sessions() as session:
        inbound = (await session.execute(select(InboundMessage))).scalars().all()
        replied = set(
            (await session.execute(select(OutboundMessage.inbound_id))).scalars()
        )
    # Each stored message was handled whole: linked to its sender, its replies queued with it.
    assert all(row.contact_id is not None and row.id in replied for row in inbound)
    await check_database(services)
    print(  # noqa: T201 (-s shows it)
        f"\nkilled {'one of ' if victims else ''}{workers} web process(es) after {killed[0]} "
        f"acknowledged; {len(acknowledged)} of {len(everything)} acknowledged in all; "
        f"{len(unanswered)} in flight got no answer, {len(committed_unacknowledged)} of "
        f"them committed before the kill; {len(everything) - len(answers)} not yet sent"
    )

    # 2. Fresh web processes; every request delivered again, each sender's in order.
    web, base = start_web(pg_url, tmp_path / "web-fresh.log", tmp_path, workers)
    processes.append(web)
    again: dict[tuple[str, str], int | None] = {}
    reference = [[sms(SENDERS, i) for i in range(len(SCRIPT))],
                 [telegram(SENDERS, i) for i in range(len(SCRIPT))]]  # fmt: skip
    async with httpx.AsyncClient(timeout=timeout) as client:
        await asyncio.gather(*(walk(client, base, sender, again) for sender in senders))
        # One sender per channel that is never interrupted: what everyone should end like.
        await asyncio.gather(*(walk(client, base, sender, again) for sender in reference))
    assert Counter(again.values()) == {200: len(everything) + 2 * len(SCRIPT)}

    final = await stored_ids(build)
    assert final == {key(h): 1 for h in everything + reference[0] + reference[1]}
    services = build("observer-final")
    await check_database(services)
    async with services.sessions() as session:
        identities = (await session.execute(select(ChannelIdentity))).scalars().all()
        contacts = {c.id: c for c in (await session.execute(select(Contact))).scalars()}
        conversations = (await session.execute(select(Conversation))).scalars().all()
        inbound = (await session.execute(select(InboundMessage))).scalars().all()
        outbox = (
            await session.execute(select(OutboundMessage).order_by(OutboundMessage.id))  # type: ignore[arg-type]
        ).scalars().all()
    identity_ids = {i.id for i in identities}
    inbound_ids = {row.id for row in inbound}
    assert all(c.identity_id in identity_ids for c in conversations)
    assert all(o.inbound_id is None or o.inbound_id in inbound_ids for o in outbox)
    assert all(o.contact_id in contacts for o in outbox)  # every reply is to someone
    assert len(identities) == len(contacts) == len(senders) + 2  # one contact per sender
    contact_of = {(i.channel, i.address): contacts[i.contact_id] for i in identities}
    assert all(
        row.contact_id == contact_of[(row.channel, row.address)].id for row in inbound
    )
    replies: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in outbox:
        assert row.address is not None
        replies[(row.channel, row.address)].append(row.content.get("text"))
    conversation_of = {c.identity_id: (c.flow_id, c.node_id, c.state) for c in conversations}
    where = {(i.channel, i.address): conversation_of.get(i.id) for i in identities}

    def person(contact: Contact) -> tuple[object, ...]:
        return (contact.language, contact.postcode, contact.ward_code,
                contact.consent_at is not None, contact.opted_out_at)  # fmt: skip

    for ref in reference:
        expected = (ref[0].channel, ref[0].address)
        assert contact_of[expected].ward_code is not None  # the script got through onboarding
        assert len(replies[expected]) >= len(SCRIPT)  # every message was answered
        for sender in senders:
            if sender[0].channel != ref[0].channel:
                continue
            got = (sender[0].channel, sender[0].address)
            # The same replies in the same order: none lost, none doubled by the redelivery.
            assert replies[got] == replies[expected], got
            assert person(contact_of[got]) == person(contact_of[expected]), got
            assert where[got] == where[expected], got
    log = (tmp_path / "web-fresh.log").read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
