"""Acceptance: a round created from YAML and opened (pbcore's service), voted in by 200
simulated residents on both simulator channels through ``POST /simulator/api/messages``
(typed numbers and taps, with invalid attempts, changed votes and old-keyboard taps mixed
in, and residents out of scope refused), then closed: the stored ballots are exactly each
voter's last choice, the results equal ``pb tally`` on the round's export, and each voter
finds the result in their thread (``GET /simulator/api/messages``)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from bot.cli import app as cli
from bot.clock import FixedClock
from bot.services import Services
from storage.pb_rounds import PbBallot
from tests.rounds.conftest import API, Resident
from tests.rounds.pbcore_support import PROJECTS, round_yaml

Bot = tuple[Services, httpx.AsyncClient]
ROUND = "riverside-2027"
VOTERS = 200
OUTSIDE = 10
IDS = [pid for pid, _, _, _ in PROJECTS]  # ballot numbers 1..5 are these, in order
NAMES = {pid: en for pid, en, _, _ in PROJECTS}
WARDS = ("cathays", "splott")


def choose(rng: random.Random) -> list[str]:
    """A choice in the order given; stored, like the read-back, in ballot order."""
    return rng.sample(IDS, rng.randint(1, 3))


async def vote(r: Resident, choice: list[str], rng: random.Random, k: int) -> None:
    """One vote in the conversation, with the bad input this resident makes (by ``k``)."""
    numbers = " ".join(str(IDS.index(p) + 1) for p in choice)
    first = await r.say("VOTE")
    assert "choose 1 to 3 projects" in first[-1], first
    if k % 5 == 0:
        [bad] = await r.say("9")
        assert bad.startswith("Sorry, 9 isn't on the list.")
    elif k % 5 == 1:
        [bad] = await r.say("YES")
        assert bad.startswith("You haven't chosen anything yet.")
    elif k % 5 == 2:
        [bad] = await r.say("1 2 3 4")
        assert bad.startswith("Please choose no more than 3.")
    if r.channel == "telegram" and k % 3 == 0:
        for p in choice:
            await r.tap(f"⬜ {NAMES[p]} (")
        data = await r.tap("Done")
        [readback] = [x["text"] for x in data["replies"]]
    else:
        [readback] = await r.say(numbers)
    in_order = sorted(IDS.index(p) + 1 for p in choice)
    assert readback.startswith(f"You chose {', '.join(map(str, in_order))} ("), readback
    if k % 4 == 3:
        [bad] = await r.say("2 two")
        assert bad.startswith('Sorry, "two" isn\'t a number from the list.')
    [cast] = await r.say("YES")
    assert re.search(r"Receipt: [A-Z0-9]{6}\.", cast), cast


async def test_two_hundred_residents_vote_and_hear_the_result(
    bot: Bot, clock: FixedClock, tmp_path: Path
) -> None:
    services, client = bot
    rounds = services.rounds
    await rounds.create(
        round_yaml(
            wards="[DEMO-CATHAYS, DEMO-SPLOTT]",
            rule="mes",
            voting_open="2026-01-06T09:00:00Z",
            voting_close="2026-01-20T21:00:00Z",
        ),
        actor="test",
    )
    rng = random.Random(14)
    voters = [
        Resident(
            client, "sms" if k % 2 else "telegram", f"+4477009{k:05d}" if k % 2 else f"9{k:05d}"
        )
        for k in range(VOTERS)
    ]
    outside = [Resident(client, "sms", f"+4477008{k:05d}") for k in range(OUTSIDE)]
    for k, r in enumerate(voters):
        await r.join(WARDS[k % 2], language="en")
    for r in outside:
        await r.join("riverside")
    await rounds.open(ROUND, actor="test")

    final: dict[str, list[str]] = {}
    for k, r in enumerate(voters):
        choice = choose(rng)
        await vote(r, choice, rng, k)
        final[r.address] = sorted(choice, key=IDS.index)
    for r in outside:
        [reply] = await r.say("VOTE")
        assert reply.startswith("Sorry, Riverside neighbourhood fund is only for residents of")
    # a second pass: some change their vote, and some tap an old keyboard
    for k, r in enumerate(voters):
        if k % 7 == 0:
            choice = choose(rng)
            await vote(r, choice, rng, k + 1)
            final[r.address] = sorted(choice, key=IDS.index)
        if r.channel == "telegram" and r.latest is not None and k % 11 == 0:
            old_id, buttons = r.latest
            data = await r.post({"choice": buttons[0]["data"], "message_id": old_id})
            assert data["notice"] == "That question has closed."

    await rounds.close(ROUND, actor="test")
    async with services.sessions() as session:
        stored = (
            (await session.execute(select(PbBallot).where(PbBallot.round_id == ROUND)))  # type: ignore[arg-type]
            .scalars()
            .all()
        )
    assert len(stored) == VOTERS
    assert Counter(tuple(b.vote) for b in stored) == Counter(tuple(v) for v in final.values())

    results = await rounds.results(ROUND)
    assert results["voters"] == VOTERS
    counts = Counter(p for v in final.values() for p in v)
    assert {p["id"]: p["votes"] for p in results["projects"]} == {p: counts[p] for p in IDS}
    exported = tmp_path / "round.pb"
    exported.write_text(await rounds.export(ROUND))
    tallied = CliRunner().invoke(cli, ["pb", "tally", str(exported), "--rule", "mes", "--json"])
    assert tallied.exit_code == 0, tallied.output
    expected: dict[str, Any] = json.loads(tallied.stdout)
    for key in ("rule", "budget", "voters", "selected", "cost"):
        assert results[key] == expected[key], key

    # each voter finds the result in their thread; those out of scope get none
    for r in voters + outside:
        response = await client.get(API, params={"channel": r.channel, "address": r.address})
        assert response.status_code == 200
        texts = [m["text"] for m in response.json()["messages"]]
        heard = [t for t in texts if t.startswith("Results of Riverside neighbourhood fund")]
        assert len(heard) == (0 if r in outside else 1), (r.address, texts[-3:])
