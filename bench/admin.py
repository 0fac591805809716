"""The admin pages with 100,000 contacts and 1,000,000 messages on PostgreSQL.

Creates a throwaway database on the server named by ``CIVICBOT_TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://root@127.0.0.1:5432/test``), migrates it, loads a year of data with
COPY (100,000 contacts with their identities, 500,000 messages each way, a broadcast to 50,000
residents, 50,000 audit entries, Telegram groups and polls), signs in, and times every page
through the whole app (ASGI, sessions, CSRF, templates) as a browser would ask for it. It
prints each page's median and slowest time over ``--runs`` requests, side by side with the
sign-in page (a baseline that reads almost nothing) as a ratio, and the first request's time
(cold: the dashboard then counts the finished days it keeps), names the slowest page, and
prints ``EXPLAIN (ANALYZE)`` plans of the statements the pages ran, flagging any sequential
scan of a big table. The database is dropped at the end.

    .venv/bin/python bench/admin.py [--runs 7] [--contacts 100000] [--messages 1000000]
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import SERVER, admin_sql  # bench/common.py, beside this file: before the folder goes

# This file is bench/admin.py: run as a script, its folder comes first on sys.path and would
# hide the ``admin`` package. Take it off.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from admin.accounts import hash_password  # noqa: E402
from admin.wards_import import read_wards_csv  # noqa: E402
from bot.app import build_app  # noqa: E402
from bot.clock import FixedClock  # noqa: E402
from bot.services import build_services  # noqa: E402
from bot.settings import Settings  # noqa: E402
from storage import repositories as repo  # noqa: E402
from storage.db import create_engine, session_factory, upgrade  # noqa: E402

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
YEAR = 365 * 24 * 3600
BIG_TABLES = (
    "contacts",
    "channel_identities",
    "inbound_messages",
    "outbound_messages",
    "broadcast_recipients",
    "audit_log",
)
PASSWORD = "bench password, long enough"
GOAL_MS = 200


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# ---- data -----------------------------------------------------------------------------------

WARDS = [
    "DEMO-ADAMSDOWN",
    "DEMO-BUTETOWN",
    "DEMO-CATHAYS",
    "DEMO-GABALFA",
    "DEMO-GRANGETOWN",
    "DEMO-RIVERSIDE",
    "DEMO-SPLOTT",
]
STATUSES = (
    ["delivered"] * 70
    + ["sent"] * 20
    + ["failed"] * 3
    + ["undelivered"] * 2
    + ["queued"] * 3
    + ["sending"] * 1
    + ["cancelled"] * 1
)
ERRORS = [
    "21610: Attempt to send to unsubscribed recipient",
    "30003: Unreachable handset",
    "Forbidden: bot was blocked by the user",
    "30005: Unknown destination handset",
]


def when(rng: random.Random) -> datetime:
    """A time in the year before NOW, more of them recent (as a growing service has)."""
    return NOW - timedelta(seconds=int(YEAR * rng.random() ** 1.5))


def contact_rows(n: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    for i in range(1, n + 1):
        created = when(rng)
        erased = created + timedelta(days=3) if rng.random() < 0.01 else None
        consent = None if erased or rng.random() < 0.1 else created + timedelta(minutes=2)
        opted = created + timedelta(days=rng.randint(1, 30)) if rng.random() < 0.05 else None
        ward = None if erased or rng.random() < 0.05 else rng.choice(WARDS)
        language = "en" if erased or rng.random() < 0.8 else "cy"
        yield (
            i,
            language,
            None if ward is None else "CF101EP",
            ward,
            created,
            consent,
            None if erased else opted,
            erased,
        )


def identity(i: int) -> tuple[str, str, str | None]:
    """Contact i's channel, address and (Telegram) name."""
    r = (i * 7919) % 100
    if r < 60:
        return "sms", f"+447{i:09d}", None
    if r < 90:
        return "telegram", str(1_000_000_000 + i), f"Resident{i} Jones (@res{i})"
    if r < 95:
        return "sim-sms", f"+447{i:09d}", None
    return "sim-telegram", f"Sim Resident {i}", None


async def load(url: str, contacts: int, messages: int) -> dict[str, Any]:
    rng = random.Random(12)
    conn = await asyncpg.connect(dsn(url))
    facts: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        rows = list(contact_rows(contacts, rng))
        erased = {r[0] for r in rows if r[7] is not None}
        await conn.copy_records_to_table(
            "contacts",
            records=rows,
            columns=[
                "id",
                "language",
                "postcode",
                "ward_code",
                "created_at",
                "consent_at",
                "opted_out_at",
                "erased_at",
            ],
        )
        live = [r[0] for r in rows if r[0] not in erased]
        ids = []
        for i in live:
            channel, address, name = identity(i)
            ids.append((i, channel, address, i, rows[i - 1][4], name))
        await conn.copy_records_to_table(
            "channel_identities",
            records=ids,
            columns=["id", "channel", "address", "contact_id", "created_at", "display_name"],
        )
        # Messages: half in, half out; contact 1 has a long thread.
        heavy = live[0]
        half = messages // 2

        def who(k: int) -> int:
            return heavy if k % 250 == 0 else live[rng.randrange(len(live))]

        inbound = []
        for k in range(1, half + 1):
            cid = who(k)
            channel, address, _ = identity(cid)
            inbound.append(
                (
                    k,
                    channel,
                    f"in-{k}",
                    address,
                    cid,
                    f"message {k} from a resident",
                    json.dumps({"n": k}),
                    when(rng),
                )
            )
        await conn.copy_records_to_table(
            "inbound_messages",
            records=inbound,
            columns=[
                "id",
                "channel",
                "provider_id",
                "address",
                "contact_id",
                "text",
                "raw",
                "received_at",
            ],
        )
        del inbound
        outbound = []
        for k in range(1, half + 1):
            cid = who(k)
            channel, address, _ = identity(cid)
            status = STATUSES[k % len(STATUSES)]
            created = when(rng)
            if status in ("queued", "sending"):
                created = NOW - timedelta(minutes=rng.randint(0, 90))
            error = rng.choice(ERRORS) if status in ("failed", "undelivered") else None
            outbound.append(
                (
                    k,
                    channel,
                    address,
                    cid,
                    json.dumps({"text": f"reply {k}", "segments": 1}),
                    10 if k % 3 else 0,
                    False,
                    status,
                    1,
                    created,
                    f"P{k}",
                    error,
                    1,
                    created,
                    created + timedelta(seconds=5),
                )
            )
        await conn.copy_records_to_table(
            "outbound_messages",
            records=outbound,
            columns=[
                "id",
                "channel",
                "address",
                "contact_id",
                "content",
                "priority",
                "ignore_opt_out",
                "status",
                "attempts",
                "next_attempt_at",
                "provider_id",
                "error",
                "segments",
                "created_at",
                "updated_at",
            ],
        )
        # A broadcast to 50,000 residents, linked to outbox rows.
        await conn.execute(
            "INSERT INTO broadcasts (id, key, label, kind, texts, variables, audience, actor,"
            " status, recipients, created_at) VALUES (1, 'bench', 'Bins on Tuesday', 'message',"
            ' \'{"en": "Bins on Tuesday"}\', \'{}\', \'{"segment": {"wards": []}}\','
            " 'admin:bench@example.org', 'queued', 50000, $1)",
            NOW - timedelta(days=1),
        )
        seen: set[int] = set()
        recipients = []
        for k in range(1, half + 1):
            cid = outbound[k - 1][3]
            if cid in seen:
                continue
            seen.add(cid)
            recipients.append(
                (len(recipients) + 1, 1, cid, None, outbound[k - 1][1], k, NOW - timedelta(days=1))
            )
            if len(recipients) == 50_000:
                break
        await conn.copy_records_to_table(
            "broadcast_recipients",
            records=recipients,
            columns=[
                "id",
                "broadcast_id",
                "contact_id",
                "group_chat_id",
                "channel",
                "outbound_id",
                "created_at",
            ],
        )
        del outbound
        actions = [
            "opted_out",
            "broadcast_sent",
            "admin_signed_in",
            "telegram_poll_sent",
            "wards_loaded",
        ]
        audit = [
            (
                k,
                when(rng),
                "admin:bench@example.org" if k % 2 else "dispatcher",
                actions[k % len(actions)],
                f"contact:{k}",
                json.dumps({"k": k}),
            )
            for k in range(1, 50_001)
        ]
        await conn.copy_records_to_table(
            "audit_log",
            records=audit,
            columns=["id", "at", "actor", "action", "subject", "detail"],
        )
        groups = [
            (f"-100{g:07d}", f"Neighbours {g}", "supergroup", WARDS[g % 7], True, NOW, NOW)
            for g in range(20)
        ]
        await conn.copy_records_to_table(
            "telegram_groups",
            records=groups,
            columns=["chat_id", "title", "kind", "ward_code", "active", "added_at", "updated_at"],
        )
        for p in range(1, 6):
            await conn.execute(
                "INSERT INTO telegram_polls (id, chat_id, question, options, multiple,"
                " telegram_poll_id, message_id, created_at) VALUES ($1, $2, $3, $4, false,"
                " $5, $6, $7)",
                p,
                groups[p][0],
                f"Question {p}?",
                json.dumps(["Potholes", "Lights", "Bins"]),
                f"poll-{p}",
                p,
                NOW,
            )
            answers = [(p * 10_000 + a, p, live[a], json.dumps([a % 3]), NOW) for a in range(1000)]
            await conn.copy_records_to_table(
                "telegram_poll_answers",
                records=answers,
                columns=["id", "poll_id", "contact_id", "option_ids", "updated_at"],
            )
        for table in (
            "contacts",
            "channel_identities",
            "inbound_messages",
            "outbound_messages",
            "broadcast_recipients",
            "audit_log",
            "telegram_poll_answers",
        ):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        await conn.execute("VACUUM ANALYZE")
        facts["load_seconds"] = time.perf_counter() - started
        facts["heavy_contact"] = heavy
        facts["contacts"] = contacts
        facts["messages"] = half * 2
        tg = next(i for i in live if identity(i)[0] == "telegram")
        facts["telegram_name"] = f"Resident{tg} Jones"
        sms = next(i for i in live if identity(i)[0] == "sms")
        facts["phone"] = "0" + identity(sms)[1][3:]  # as a person types it: 07...
    finally:
        await conn.close()
    return facts


# ---- timing ---------------------------------------------------------------------------------


class Statements:
    """The SQL each page runs (to EXPLAIN afterwards)."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.seen: dict[str, list[tuple[str, Any]]] = {}

    def __call__(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if self.current is None or executemany:
            return
        if statement.lstrip().upper().startswith("SELECT"):
            self.seen.setdefault(self.current, []).append((statement, parameters))


async def time_pages(
    url: str, facts: dict[str, Any], runs: int
) -> tuple[list[tuple[str, float, float, float]], Statements]:
    # SMS and Telegram are on (so a broadcast reaches the whole audience), with made-up
    # credentials: the dispatcher is off and nothing is ever sent from here.
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=url,
        run_dispatcher=False,
        run_scheduler=False,
        public_url="http://bench",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="bench-token",
        twilio_from_number="+447700900001",
        twilio_api_base="http://127.0.0.1:9",
        telegram_token="123456:bench",
        telegram_mode="polling",
        telegram_api_base="http://127.0.0.1:9",
    )
    services = build_services(settings, clock=FixedClock(NOW))
    statements = Statements()
    event.listen(services.db.sync_engine, "before_cursor_execute", statements)
    try:
        transport = httpx.ASGITransport(app=build_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            login = await client.get("/admin/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
            assert token
            signed = await client.post(
                "/admin/login",
                data={
                    "email": "bench@example.org",
                    "password": PASSWORD,
                    "csrf_token": token.group(1),
                    "next": "/admin/",
                },
            )
            assert signed.status_code == 303, signed.text
            page = await client.get("/admin/broadcasts/new")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            key = re.search(r'name="key" value="([^"]+)"', page.text)
            assert csrf and key
            draft = {
                "csrf_token": csrf.group(1),
                "key": key.group(1),
                "when": "now",
                "text_en": "The library reopens on Monday.",
                "text_cy": "Mae'r llyfrgell yn ailagor ddydd Llun.",
            }
            pages: list[tuple[str, str, dict[str, Any] | None]] = [
                ("sign-in page (baseline)", "/admin/login", None),
                ("dashboard", "/admin/", None),
                ("contacts: newest", "/admin/contacts", None),
                ("contacts: phone search", f"/admin/contacts?q={facts['phone']}", None),
                ("contacts: Telegram name", f"/admin/contacts?q={facts['telegram_name']}", None),
                (
                    "contact: 2,000-message thread",
                    f"/admin/contacts/{facts['heavy_contact']}",
                    None,
                ),
                ("broadcasts", "/admin/broadcasts", None),
                ("broadcast: 50,000 progress", "/admin/broadcasts/1", None),
                ("broadcast: compose", "/admin/broadcasts/new", None),
                (
                    "broadcast: check, one ward",
                    "/admin/broadcasts/new",
                    {**draft, "ward": "DEMO-SPLOTT", "channel": "sms"},
                ),
                ("broadcast: check, everyone", "/admin/broadcasts/new", draft),
                ("wards and groups", "/admin/groups", None),
                ("polls", "/admin/polls", None),
                ("poll: live counts", "/admin/polls/1", None),
                ("audit log", "/admin/audit", None),
                ("audit log: one action", "/admin/audit?action=broadcast_sent", None),
                ("audit log: who", "/admin/audit?actor=dispatcher", None),
                ("accounts", "/admin/users", None),
            ]
            results = []
            for name, path, form in pages:
                times = []
                first = 0.0
                for run in range(runs + 1):
                    statements.current = name if run == 0 else None
                    started = time.perf_counter()
                    if form is None:
                        response = await client.get(path)
                    else:
                        response = await client.post(path, data=form)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert response.status_code == 200, (name, response.status_code)
                    if run:  # the first request warms caches (and records the SQL)
                        times.append(elapsed)
                    else:
                        first = elapsed
                results.append((name, statistics.median(times), max(times), first))
            statements.current = None
    finally:
        await services.close()
    return results, statements


async def explain(url: str, statements: Statements) -> list[tuple[str, str, bool]]:
    """Each distinct statement's plan; True where a big table is read by a sequential scan."""
    conn = await asyncpg.connect(dsn(url))
    out = []
    done: set[str] = set()
    try:
        for page, items in statements.seen.items():
            for statement, parameters in items:
                if statement in done or "admin_sessions" in statement:
                    continue
                done.add(statement)
                rows = await conn.fetch(
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, *(parameters or ())
                )
                plan = "\n".join(r[0] for r in rows)
                scan = any(re.search(rf"Seq Scan on {t}\b", plan) for t in BIG_TABLES)
                out.append((page, statement, plan, scan))
    finally:
        await conn.close()
    return out  # type: ignore[return-value]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--plans", choices=["all", "scans", "none"], default="all")
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (prints its name) to look into"
    )
    args = parser.parse_args()
    name = f"civicbot_bench_{uuid.uuid4().hex[:10]}"
    await admin_sql(SERVER, f'CREATE DATABASE "{name}"')
    url = make_url(SERVER).set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_engine(url)
        await upgrade(engine)
        parsed = read_wards_csv(Path(__file__).resolve().parents[1] / "admin/data/demo_wards.csv")
        async with session_factory(engine)() as session, session.begin():
            await repo.upsert_wards(session, wards=parsed.wards, postcodes=parsed.postcodes)
        await engine.dispose()
        print(f"loading {args.contacts:,} contacts and {args.messages:,} messages into {name}")
        facts = await load(url, args.contacts, args.messages)
        conn = await asyncpg.connect(dsn(url))
        await conn.execute(
            "INSERT INTO admin_users (email, password_hash, role, created_at, updated_at,"
            " password_changed_at) VALUES ('bench@example.org', $1, 'admin', $2, $2, $2)",
            hash_password(PASSWORD),
            NOW,
        )
        await conn.close()
        print(f"loaded in {facts['load_seconds']:.0f} s\n")
        results, statements = await time_pages(url, facts, args.runs)
        baseline = results[0][1]
        print(f"{'page':<34}{'median ms':>10}{'max ms':>9}{'x sign-in':>11}{'first ms':>10}")
        for page, median, slowest, first in results:
            print(
                f"{page:<34}{median:>10.1f}{slowest:>9.1f}{median / baseline:>11.1f}{first:>10.1f}"
            )
        worst = max(results[1:], key=lambda r: r[1])
        verdict = "within" if worst[1] < GOAL_MS else "OVER"
        print(
            f"\nslowest page: {worst[0]}, median {worst[1]:.1f} ms ({verdict} the "
            f"{GOAL_MS} ms goal), slowest single request {max(r[2] for r in results):.1f} ms"
        )
        if args.plans != "none":
            plans = await explain(url, statements)
            scans = [p for p in plans if p[3]]
            print(
                f"\n{len(plans)} statements explained; sequential scans of big tables: {len(scans)}"
            )
            for page, statement, plan, scan in plans:
                if args.plans == "scans" and not scan:
                    continue
                print(
                    f"\n---- {page}{' (SEQ SCAN)' if scan else ''}\n{' '.join(statement.split())}"
                    f"\n{plan}"
                )
    finally:
        if args.keep:
            print(f"\nkept database {name}; drop it with: DROP DATABASE \"{name}\"")
        else:
            await admin_sql(SERVER, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
