"""Close and results: the ballots are tallied with the round's rule by the flows/pb engine,
and `civicbot pb round results --json` equals `civicbot pb tally` on the round's exported
`.pb` for every ballot type and rule; each voter is told what was funded and, for each
project they backed that was not, the reason from the rule, in their language."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from bot.cli import app as cli
from bot.clock import FixedClock
from bot.services import Services
from flows.pb.pabulib import parse_pabulib
from tests.rounds.pbcore_support import PROJECTS, bulk_to, cast, contact_of, resident, round_yaml

OPEN = datetime(2026, 2, 1, 9, tzinfo=UTC)
BUDGET = 60000
COSTS = {pid: cost for pid, _, _, cost in PROJECTS}
# what `pb tally --explain` calls each reason, and the round's English text for it
REASONS = {
    "no-supporters": "nobody voted for it",
    "not-enough-money": "its supporters' equal shares of the budget could not cover its cost",
    "no-longer-fit": "the budget left after more-voted projects was too small",
    "count-stopped": "the count stopped at a project that did not fit the budget left",
}


def ballot_of(kind: str, rng: random.Random) -> tuple[list[str], list[int] | None]:
    ids = [pid for pid, _, _, _ in PROJECTS]
    if kind == "approval":
        return rng.sample(ids, rng.randint(1, 3)), None
    if kind == "knapsack":
        chosen: list[str] = []
        for pid in rng.sample(ids, len(ids)):
            if sum(COSTS[p] for p in chosen) + COSTS[pid] <= BUDGET and rng.random() < 0.6:
                chosen.append(pid)
        return chosen or [rng.choice(ids)], None
    if kind == "cumulative":
        picked = rng.sample(ids, rng.randint(1, 3))
        points = [rng.randint(1, 3) for _ in picked]
        return picked, points
    return rng.sample(ids, rng.randint(1, 3)), None  # ranked: best first


BALLOTS = {
    "approval": "{type: approval, min: 1, max: 3}",
    "knapsack": "{type: knapsack}",
    "cumulative": "{type: cumulative, points: 10}",
    "ranked": "{type: ranked, top: 3}",
}


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        ("approval", "greedy"),
        ("approval", "mes"),
        ("approval", "mes-add1"),
        ("approval", "phragmen"),
        ("knapsack", "mes-add1"),
        ("knapsack", "greedy"),
        ("cumulative", "greedy"),
        ("cumulative", "mes"),
        ("ranked", "greedy"),
        ("ranked", "mes"),
    ],
)
async def test_results_equal_pb_tally_on_the_export(
    bot: tuple[Services, httpx.AsyncClient],
    clock: FixedClock,
    tmp_path: Path,
    kind: str,
    rule: str,
) -> None:
    services, _ = bot
    rounds = services.rounds
    await rounds.create(round_yaml(budget=BUDGET, ballot=BALLOTS[kind], rule=rule), actor="t")
    clock.current = OPEN
    await rounds.run_due()
    rng = random.Random(f"{kind}-{rule}")
    for _ in range(120):
        vote, points = ballot_of(kind, rng)
        await cast(services, "riverside-2027", None, vote, points, now=OPEN)
    await rounds.close("riverside-2027", actor="test")
    results = await rounds.results("riverside-2027")
    assert set(results) == {"round", "rule", "budget", "voters", "selected", "cost", "projects"}
    for p in results["projects"]:
        assert {"id", "cost", "votes", "selected", "reason"} <= set(p)
        assert isinstance(p["reason"], str) and p["reason"] == p["reasons"]["en"]
        assert set(p["reasons"]) == {"en", "cy"} and all(p["reasons"].values())

    exported = tmp_path / "round.pb"
    exported.write_text(await rounds.export("riverside-2027"))
    runner = CliRunner()
    tallied = runner.invoke(
        cli, ["pb", "tally", str(exported), "--rule", rule, "--json", "--explain"]
    )
    assert tallied.exit_code == 0, tallied.output
    expected: dict[str, Any] = json.loads(tallied.stdout)
    checked = runner.invoke(cli, ["pb", "check", str(exported)])  # the limits META gives hold
    assert checked.exit_code == 0 and "OK (0 warning(s))" in checked.stdout, checked.output
    for key in ("rule", "budget", "voters", "selected", "cost"):
        assert results[key] == expected[key], key
    assert results["round"] == "riverside-2027" and results["voters"] == 120
    why = {u["project"]: u["reason"] for u in expected["unfunded"]}
    election = parse_pabulib(exported.read_text())
    votes = dict(zip((p.id for p in election.projects), election.votes(), strict=True))
    for p in results["projects"]:
        assert p["selected"] == (p["id"] in expected["selected"])
        assert p["votes"] == votes[p["id"]] and p["cost"] == COSTS[p["id"]]
        if p["selected"]:
            assert p["reason"] == "funded" and p["reason_code"] == "funded"
        else:
            assert p["reason"] == REASONS[why[p["id"]]] and p["reason_code"] == why[p["id"]]
    # the export says the same in its PROJECTS section, and what the format defines in META
    for project in election.projects:
        assert project.fields["selected"] == ("1" if project.id in results["selected"] else "0")
        assert int(project.fields["votes"]) == votes[project.id]
    meta = election.meta
    assert meta["vote_type"] == {"ranked": "ordinal", "cumulative": "cumulative"}.get(
        kind, "approval"
    )
    assert meta["num_votes"] == "120" and meta["budget"] == str(BUDGET)
    for key in (
        "description",
        "country",
        "unit",
        "instance",
        "num_projects",
        "rule",
        "date_begin",
        "date_end",
        "currency",
    ):
        assert meta[key], key
    assert set(election.vote_columns) == (
        {"voter_id", "vote", "points"} if kind == "cumulative" else {"voter_id", "vote"}
    )


async def test_each_voter_is_told_the_result_and_why_their_projects_were_not_funded(
    bot: tuple[Services, httpx.AsyncClient], clock: FixedClock
) -> None:
    services, client = bot
    rounds = services.rounds
    await rounds.create(round_yaml(budget=BUDGET, rule="greedy"), actor="test")
    await resident(client, "en", "DEMO-CATHAYS")
    await resident(client, "cy", "DEMO-SPLOTT", welsh=True)
    await resident(client, "abstained", "DEMO-SPLOTT")
    clock.current = OPEN
    await rounds.run_due()
    en, cy = await contact_of(services, "en"), await contact_of(services, "cy")
    # 1, 2 and 5 (33,000) are funded first; 3 (50,000) no longer fits what is left
    await cast(services, "riverside-2027", en, ["1", "2", "3"], now=OPEN)
    await cast(services, "riverside-2027", cy, ["3", "5"], now=OPEN)
    for _ in range(3):
        await cast(services, "riverside-2027", None, ["1", "2", "5"], now=OPEN)
    await rounds.close("riverside-2027", actor="test")
    results = await rounds.results("riverside-2027")
    assert results["selected"] == ["1", "2", "5"]
    [text_en] = [t for t in await bulk_to(services, "en") if t.startswith("Results")]
    assert text_en == (
        "Results of Riverside neighbourhood fund (5 voters): funded 1 Benches, 2 Trees, "
        "5 Bike racks, costing £33,000 of £60,000.\n"
        "3 Lights, which you backed, was not funded: the budget left after more-voted "
        "projects was too small."
    )
    [text_cy] = [t for t in await bulk_to(services, "cy") if t.startswith("Canlyniadau")]
    assert "Ni chafodd 3 Goleuadau, a gefnogwyd gennych, ei ariannu: roedd y gyllideb" in text_cy
    assert not any(t.startswith("Results") for t in await bulk_to(services, "abstained"))
    # announcing again sends nothing twice
    assert await rounds.announce() == 0
    assert len([t for t in await bulk_to(services, "en") if t.startswith("Results")]) == 1

    # a delivery update reaches those who backed the project (and nobody else)
    queued, backers = await rounds.project_update(
        "riverside-2027",
        "2",
        text_en="The trees go in next week.",
        text_cy="Mae'r coed yn cael eu plannu wythnos nesaf.",
        actor="test",
    )
    assert backers == 1 and queued == 1
    assert (await bulk_to(services, "en"))[-1] == (
        "Update on Trees (Riverside neighbourhood fund): The trees go in next week."
    )
    assert not any("trees" in t.lower() for t in await bulk_to(services, "cy"))
