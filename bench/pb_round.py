"""Benchmark PB rounds (issue #14): close-to-results time for 60,000 ballots with mes-add1
(goal: under 5 s), on a SQLite file and on PostgreSQL.

    python bench/pb_round.py [--section close|messages|cast] [--ballots 60000]
                             [--projects 30] [--rule mes-add1] [--repeat 3]
                             [--voters 10000] [--residents 300] [--no-postgres]

Sections (``--section all`` runs every one; each prints its own figures):

- ``close``: a round is created from YAML and opened; ``--ballots`` approval ballots (1 to 5
  projects each, some projects far more popular than others) are written straight into
  ``pb_ballots``; then ``RoundsService.close`` is timed: it locks the round, marks it closed,
  reads every ballot, builds the election, tallies it with the round's rule and stores the
  results, in one transaction (the ballots have no contact, so no result messages are queued:
  that is the broadcast path's own cost). The tally alone is timed beside it, on the same
  election, to show what the database part costs.

- ``messages``: the same with ``--voters`` of the ballots cast by residents (simulated SMS
  contacts, written straight into the tables, a third of them Welsh speakers): the close, then
  the result messages queued through the broadcast path (each voter told what was funded and
  why their projects were not), timed apart; with how many broadcasts that took.
- ``cast``: ballots cast per second through the full pipeline, beside a plain text message.
  ``--residents`` simulated residents join on the simulator's SMS style (not timed), and a
  round is opened. Then, through ``POST /simulator/api/messages`` (the app in process, the
  ASGI transport, one message at a time): a plain text message from each (a reply the
  engine answers with "not understood" plus the menu again), then each one's ballot:
  ``VOTE`` (the round and its projects are loaded), ``2 5`` (checked and read back) and
  ``YES`` (the cast: the round row locked, the ballot upserted, the receipt sent). Printed:
  plain messages per second, YES (cast) messages per second, and whole ballots (three
  messages) per second. Goal: casting at least half the plain rate.

The PostgreSQL server is ``CIVICBOT_TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://root@127.0.0.1:5432/test``); a throwaway database is created there and
dropped after. Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from common import SERVER, admin_sql  # noqa: E402 (bench/common.py, beside this file)
from sqlalchemy import insert, text, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bot.app import build_app  # noqa: E402
from bot.clock import FixedClock  # noqa: E402
from bot.services import Services, build_services  # noqa: E402
from bot.settings import Settings  # noqa: E402
from flows.pb.rules import kernel_available, parse_rule, tally  # noqa: E402
from storage.db import upgrade  # noqa: E402
from storage.erasure import table_of  # noqa: E402
from storage.models import ChannelIdentity, Contact, Ward  # noqa: E402
from storage.pb_rounds import PbBallot, PbRound, RoundStatus  # noqa: E402

OPEN = datetime(2027, 5, 1, 9, 0, tzinfo=UTC)
GOAL_CLOSE_S = 5.0
BATCH = 5000


def round_yaml(ident: str, projects: int, rule: str, rng: random.Random) -> tuple[str, int]:
    costs = [rng.randrange(5, 120) * 1000 for _ in range(projects)]
    budget = sum(costs) // 3
    lines = "\n".join(
        f'  - {{id: "{i + 1}", title: {{en: "Project {i + 1}", cy: "Prosiect {i + 1}"}}, '
        f'cost: {cost}, summary: {{en: "About {i + 1}", cy: "Am {i + 1}"}}}}'
        for i, cost in enumerate(costs)
    )
    return (
        f"id: {ident}\n"
        'title: {en: "Bench fund", cy: "Cronfa mainc"}\n'
        "wards: all\n"
        f"budget: {budget}\n"
        "currency: GBP\n"
        "ballot: {type: approval, min: 1, max: 5}\n"
        f"rule: {rule}\n"
        "verification: none\n"
        'phases: {voting_open: "2027-05-01T09:00:00Z", voting_close: "2027-05-31T21:00:00Z"}\n'
        f"projects:\n{lines}\n"
    ), budget


def ballots(n: int, projects: int, rng: random.Random) -> list[list[str]]:
    """Approval ballots of 1 to 5 projects; popularity falls off with the project number."""
    ids = [str(i + 1) for i in range(projects)]
    weights = [1.0 / (1 + 0.15 * i) for i in range(projects)]
    out = []
    for _ in range(n):
        k = rng.randint(1, 5)
        chosen: set[str] = set()
        while len(chosen) < k:
            chosen.add(rng.choices(ids, weights)[0])
        out.append(sorted(chosen, key=int))
    return out


async def seeded(
    url: str, ident: str, n: int, projects: int, rule: str, seed: int, voters: int = 0
) -> Services:
    """Services on ``url`` with an open round holding ``n`` ballots."""
    settings = Settings(_env_file=None, database_url=url, run_dispatcher=False, simulator="on")
    clock = FixedClock(OPEN)
    services = build_services(settings, clock=clock)
    await upgrade(services.db)
    rng = random.Random(seed)
    text_, _ = round_yaml(ident, projects, rule, rng)
    clock.current = OPEN - timedelta(days=30)
    await services.rounds.create(text_, actor="bench")
    clock.current = OPEN
    async with services.sessions() as session, session.begin():
        await session.execute(
            update(table_of(PbRound))
            .where(table_of(PbRound).c.id == ident)
            .values(status=RoundStatus.VOTING, opened_at=OPEN)
        )
    table = table_of(PbBallot)
    rows: list[dict[str, Any]] = [
        {
            "round_id": ident,
            "contact_id": None,
            "voter_key": secrets.token_hex(8),
            "vote": vote,
            "points": None,
            "ward_code": None,
            "channel": "sms",
            "receipt": secrets.token_hex(3).upper(),
            "extra": None,
            "cast_at": OPEN,
            "updated_at": OPEN,
        }
        for vote in ballots(n, projects, rng)
    ]
    if voters:
        contacts = await residents(services, voters, seed)
        for row, contact in zip(rows, contacts, strict=False):
            row["contact_id"] = contact
    for i in range(0, len(rows), BATCH):
        async with services.sessions() as session, session.begin():
            await session.execute(insert(table), rows[i : i + BATCH])
    return services


async def residents(services: Services, n: int, seed: int) -> list[int]:
    """``n`` consented SMS residents of one ward, a third Welsh speakers; their ids."""
    async with services.sessions() as session, session.begin():
        if await session.get(Ward, "BENCH-WARD") is None:
            session.add(Ward(code="BENCH-WARD", name="Bench ward"))
    ids: list[int] = []
    for start in range(0, n, BATCH):
        async with services.sessions() as session, session.begin():
            batch = [
                Contact(
                    language="cy" if (start + k) % 3 == 0 else "en",
                    ward_code="BENCH-WARD",
                    created_at=OPEN,
                    consent_at=OPEN,
                )
                for k in range(min(BATCH, n - start))
            ]
            session.add_all(batch)
            await session.flush()
            for k, contact in enumerate(batch):
                assert contact.id is not None
                ids.append(contact.id)
                session.add(
                    ChannelIdentity(
                        channel="sim-sms",
                        address=f"+4477{seed:02d}{start + k:07d}",
                        contact_id=contact.id,
                        created_at=OPEN,
                    )
                )
    return ids


async def close_once(
    url: str, args: argparse.Namespace, k: int
) -> tuple[float, float, dict[str, Any]]:
    ident = f"bench-{k}"
    services = await seeded(url, ident, args.ballots, args.projects, args.rule, seed=k)
    try:
        started = time.perf_counter()
        row = await services.rounds.close(ident, actor="bench")
        close_s = time.perf_counter() - started
        assert row.results is not None
        async with services.sessions() as session:
            stored = await session.get(PbRound, ident)
            assert stored is not None
            election = await services.rounds.election(session, stored)
        started = time.perf_counter()
        tally(election, parse_rule(args.rule))
        tally_s = time.perf_counter() - started
        return close_s, tally_s, row.results
    finally:
        await services.close()


async def section_close(args: argparse.Namespace, databases: list[tuple[str, str]]) -> None:
    print(
        f"close-to-results: {args.ballots:,} approval ballots, {args.projects} projects, "
        f"rule {args.rule} (C kernel {'built' if kernel_available() else 'NOT built'}); "
        f"goal under {GOAL_CLOSE_S:.0f} s"
    )
    for name, url in databases:
        closes, tallies = [], []
        results: dict[str, Any] = {}
        for k in range(args.repeat):
            close_s, tally_s, results = await close_once(url, args, k)
            closes.append(close_s)
            tallies.append(tally_s)
        best, median = min(closes), statistics.median(closes)
        print(
            f"  {name:<11} close {median:6.2f} s median ({best:.2f} s best, {args.repeat} runs);"
            f" tally alone {statistics.median(tallies):5.2f} s; "
            f"{len(results['selected'])} of {args.projects} funded, "
            f"{'within' if median < GOAL_CLOSE_S else 'OVER'} the goal"
        )


async def cast_once(url: str, residents: int) -> tuple[float, float, float]:
    """Seconds for ``residents`` plain messages, their YES messages, and their whole
    ballots (VOTE, numbers, YES)."""
    settings = Settings(
        _env_file=None,
        database_url=url,
        run_dispatcher=False,
        run_scheduler=False,
        public_url="http://127.0.0.1",
        simulator="on",
        simulator_per_minute=10_000_000,
    )
    clock = FixedClock(OPEN - timedelta(days=1))
    services = build_services(settings, clock=clock)
    try:
        await upgrade(services.db)
        from admin.wards_import import read_wards_csv
        from storage import repositories as repo

        parsed = read_wards_csv(ROOT / "admin" / "data" / "demo_wards.csv")
        async with services.sessions() as session, session.begin():
            await repo.upsert_wards(session, wards=parsed.wards, postcodes=parsed.postcodes)
        text_, _ = round_yaml("cast", 12, "greedy", random.Random(1))
        await services.rounds.create(text_, actor="bench")
        transport = httpx.ASGITransport(app=build_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:

            async def say(address: str, message: str) -> dict[str, Any]:
                response = await client.post(
                    "/simulator/api/messages",
                    json={"channel": "sms", "address": address, "text": message},
                )
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                return body

            addresses = [f"+4477009{k:05d}" for k in range(residents)]
            for address in addresses:
                for message in ("HI", "1", "1", "CF10 1EP"):
                    await say(address, message)
            await services.rounds.open("cast", actor="bench")
            started = time.perf_counter()
            for address in addresses:
                await say(address, "hello there")
            plain_s = time.perf_counter() - started
            yes_s = 0.0
            started = time.perf_counter()
            for address in addresses:
                await say(address, "VOTE")
                await say(address, "2 5")
                before = time.perf_counter()
                reply = await say(address, "YES")
                yes_s += time.perf_counter() - before
                assert "Receipt:" in reply["replies"][0]["text"], reply
            ballots_s = time.perf_counter() - started
        async with services.sessions() as session:
            count = await session.scalar(text("SELECT count(*) FROM pb_ballots"))
        assert count == residents, count
        return plain_s, yes_s, ballots_s
    finally:
        await services.close()


async def section_cast(args: argparse.Namespace, databases: list[tuple[str, str]]) -> None:
    n = args.residents
    print(
        f"ballots cast through the full pipeline (simulator API, in process, one message at "
        f"a time), {n} residents; goal: casting at least half the plain message rate"
    )
    for name, url in databases:
        plain_s, yes_s, ballots_s = await cast_once(url, n)
        plain, yes, whole = n / plain_s, n / yes_s, n / ballots_s
        print(
            f"  {name:<11} plain {plain:6.1f} msg/s; YES (cast) {yes:6.1f} msg/s "
            f"({yes / plain:.2f} of plain, {'within' if yes >= plain / 2 else 'UNDER'} the "
            f"goal); whole ballots (3 messages) {whole:5.1f}/s"
        )
async def section_messages(args: argparse.Namespace, databases: list[tuple[str, str]]) -> None:
    print(
        f"result messages: {args.ballots:,} ballots of which {args.voters:,} cast by residents "
        f"(SMS simulator), {args.projects} projects, rule {args.rule}"
    )
    for name, url in databases:
        ident = "bench-messages"
        services = await seeded(
            url, ident, args.ballots, args.projects, args.rule, seed=99, voters=args.voters
        )
        try:
            sends: list[float] = []
            original = services.rounds.announce

            async def timed(
                *, actor: str = "scheduler", original: Any = original, sends: Any = sends
            ) -> int:
                started = time.perf_counter()
                try:
                    return int(await original(actor=actor))
                finally:
                    sends.append(time.perf_counter() - started)

            services.rounds.announce = timed  # type: ignore[method-assign]
            started = time.perf_counter()
            await services.rounds.close(ident, actor="bench")
            total = time.perf_counter() - started
            async with services.sessions() as session:
                queued = (
                    await session.execute(
                        text("SELECT count(*) FROM outbound_messages WHERE priority > 0")
                    )
                ).scalar_one()
                broadcasts = (
                    await session.execute(text("SELECT count(*) FROM broadcasts"))
                ).scalar_one()
            print(
                f"  {name:<11} close + messages {total:6.2f} s, of which messages "
                f"{sum(sends):.2f} s: {queued:,} messages queued in {broadcasts:,} broadcasts"
            )
        finally:
            await services.close()


SECTIONS: dict[str, Callable[[argparse.Namespace, list[tuple[str, str]]], Awaitable[None]]] = {
    "close": section_close,
    "cast": section_cast,
    "messages": section_messages,
}


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        databases = [("SQLite", f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")]
        pg_name = f"civicbot_bench_{uuid.uuid4().hex[:8]}"
        if args.postgres:
            try:
                await admin_sql(SERVER, f'CREATE DATABASE "{pg_name}"')
            except Exception as exc:  # noqa: BLE001 (a bench without PostgreSQL says so)
                print(
                    f"PostgreSQL not reachable at {SERVER}: {exc.__class__.__name__}; SQLite only"
                )
            else:
                url = make_url(SERVER).set(database=pg_name)
                databases.append(("PostgreSQL", url.render_as_string(hide_password=False)))
        try:
            names = list(SECTIONS) if args.section == "all" else [args.section]
            for name in names:
                await SECTIONS[name](args, databases)
        finally:
            if len(databases) > 1:
                await admin_sql(SERVER, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--ballots", type=int, default=60_000)
    parser.add_argument("--projects", type=int, default=30)
    parser.add_argument("--rule", default="mes-add1")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--residents", type=int, default=300)
    parser.add_argument("--voters", type=int, default=10_000, help="messages: residents")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    asyncio.run(main(parser.parse_args()))
