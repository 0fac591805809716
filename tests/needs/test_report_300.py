"""Done when: 300 simulated residents across the demo wards, through
``POST /simulator/api/messages``, with mixed demographics and some "prefer not to say",
give a report whose counts, shares, Borda scores and weighted margins are right. Every
expected value here is computed in this file from what the residents were made to say and
from the census file, not from civicbot's code."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import re
from collections import Counter, defaultdict
from typing import Any

import httpx
from typer.testing import CliRunner

from bot.cli import app as cli
from bot.services import Services
from tests.needs.support import CATEGORIES, CENSUS, POSTCODES, join, say, set_up

DIMENSIONS = ("age_band", "disability", "ethnic_group")
WARDS = sorted(POSTCODES)
K = 3


def read_census() -> dict[str, dict[str, dict[str, int]]]:
    """dimension -> ward -> group -> population, in the file's group order."""
    lines = [line for line in CENSUS.read_text().splitlines() if not line.startswith("#")]
    census: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for row in csv.DictReader(lines):
        census[row["dimension"]].setdefault(row["ward_code"], {})[row["group"]] = int(
            row["population"]
        )
    return census


def groups_of(census: dict[str, dict[str, dict[str, int]]], dimension: str) -> list[str]:
    return list(next(iter(census[dimension].values())))


def make_residents(census: dict[str, dict[str, dict[str, int]]]) -> list[dict[str, Any]]:
    """300 residents: skewed across wards and groups, some declining the "about you"
    questions, some preferring not to say, some repeating a pick or giving only one."""
    rng = random.Random(13)
    residents = []
    ward_bias = [5, 1, 3, 4, 2, 6, 3]
    for i in range(300):
        ward = rng.choices(WARDS, weights=ward_bias)[0]
        picks = rng.sample(range(1, len(CATEGORIES) + 1), rng.choice([1, 2, 3, 3, 3]))
        typed = list(picks)
        if rng.random() < 0.15:  # a repeat of the same pick counts once
            typed.insert(1, typed[0])
        text = rng.choice([" ", ", "]).join(str(p) for p in typed)
        consent = rng.random() < 0.85
        demographics: dict[str, str] = {}
        answers: list[str] = []
        if consent:
            for dimension in DIMENSIONS:
                names = groups_of(census, dimension)
                if rng.random() < 0.12:
                    demographics[dimension] = "prefer_not_to_say"
                    answers.append(str(len(names) + 1))
                    continue
                bias = [1 + 2 * (j % 2) for j in range(len(names))]
                index = rng.choices(range(len(names)), weights=bias)[0]
                demographics[dimension] = names[index]
                answers.append(str(index + 1))
        residents.append(
            {
                "address": f"+4477009{i:05d}",
                "ward": ward,
                "typed": text,
                "picks": [CATEGORIES[p - 1][0] for p in picks],
                "free_text": f"Resident {i} says: fix the {rng.choice(['roads', 'lights'])}"
                if rng.random() < 0.4
                else None,
                "consent": consent,
                "answers": answers,
                "demographics": demographics,
            }
        )
    return residents


async def take_part(client: httpx.AsyncClient, r: dict[str, Any]) -> None:
    await say(client, r["address"], *join(r["ward"]))
    replies = await say(client, r["address"], "NEEDS", r["typed"], r["free_text"] or "SKIP")
    assert "may we ask a few optional questions" in replies[-1], replies
    replies = await say(client, r["address"], "1" if r["consent"] else "2", *r["answers"])
    assert replies[-1].startswith(("Thank you.", "No problem")), replies


def civicbot(url: str, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"CIVICBOT_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    return result.stdout


def ranks(values: dict[str, float]) -> dict[str, int]:
    """1 for the highest; ties share a rank."""
    rounded = {c: round(v, 9) for c, v in values.items()}
    return {c: 1 + sum(1 for o in rounded.values() if o > v) for c, v in rounded.items()}


async def test_300_residents_give_the_right_report(
    bot: tuple[Services, httpx.AsyncClient], database_url: str
) -> None:
    services, client = bot
    ident = await set_up(services, closes_at="2099-12-31T21:00:00Z")
    census = read_census()
    residents = make_residents(census)
    for start in range(0, len(residents), 25):  # 25 residents texting at once
        await asyncio.gather(*(take_part(client, r) for r in residents[start : start + 25]))

    printed = await asyncio.to_thread(civicbot, database_url, "needs", "report", ident, "--json")
    report = json.loads(printed)
    assert set(report) >= {
        "needs_assessment", "responses", "weights", "wards", "groups", "needs", "sources"
    }
    assert report["needs_assessment"] == ident
    assert report["responses"] == 300
    assert report["sources"] == {"residents": 300, "group_polls": 0}

    # ---- wards: counts and responses per 1,000 residents ----------------------------------
    population = {
        w: max(sum(census[d][w].values()) for d in census) for w in WARDS
    }
    per_ward = Counter(r["ward"] for r in residents)
    total_population = sum(population.values())
    by_ward = {w["ward_code"]: w for w in report["wards"]}
    assert sorted(by_ward) == WARDS
    for ward in WARDS:
        got = by_ward[ward]
        assert set(got) >= {"ward_code", "ward_name", "population", "responses", "per_1000"}
        assert got["population"] == population[ward]
        assert got["responses"] == per_ward[ward]
        assert abs(got["per_1000"] - 1000 * per_ward[ward] / population[ward]) < 0.001

    # ---- groups: shares among those who answered, against the census ---------------------
    threshold = 0.8
    by_group = {(g["dimension"], g["group"]): g for g in report["groups"]}
    for dimension in DIMENSIONS:
        names = groups_of(census, dimension)
        answered = [
            r["demographics"][dimension]
            for r in residents
            if r["demographics"].get(dimension, "prefer_not_to_say") != "prefer_not_to_say"
        ]
        counts = Counter(answered)
        census_total = sum(sum(census[dimension][w].values()) for w in WARDS)
        for name in names:
            got = by_group[(dimension, name)]
            share = counts[name] / len(answered)
            population_share = sum(census[dimension][w][name] for w in WARDS) / census_total
            assert got["responses"] == counts[name]
            assert abs(got["share"] - share) < 1e-9
            assert abs(got["population_share"] - population_share) < 1e-9
            assert abs(got["ratio"] - share / population_share) < 1e-9
            assert got["under_represented"] == (share / population_share < threshold)
    assert any(g["under_represented"] for g in report["groups"])  # the data is skewed

    # ---- needs: Borda counts (k points for a first choice, then k-1, ...) -----------------
    score: dict[str, float] = {c: 0 for c, _, _ in CATEGORIES}
    picked: Counter[str] = Counter()
    for r in residents:
        for position, category in enumerate(r["picks"]):
            score[category] += K - position
            picked[category] += 1
    by_need = {n["category"]: n for n in report["needs"]}
    expected_ranks = ranks(score)
    for category, _, _ in CATEGORIES:
        assert by_need[category]["score"] == score[category]
        assert by_need[category]["responses"] == picked[category]
        assert by_need[category]["rank"] == expected_ranks[category]

    # ---- weights: the exported weights match the census margins ---------------------------
    weights = report["weights"]
    assert weights["method"] == "raking"
    assert weights["dimensions"] == ["ward", *DIMENSIONS]
    assert weights["converged"] is True
    exported = await asyncio.to_thread(
        civicbot, database_url, "needs", "export", ident, "--csv", "--rows"
    )
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 300
    for r in residents:  # no phone numbers (or anything else that identifies the person)
        assert r["address"] not in exported and r["address"][1:] not in exported
    assert len({row["respondent"] for row in rows}) == 300
    assert all(re.fullmatch(r"[0-9a-f]{16}", row["respondent"]) for row in rows)
    w = [float(row["weight"]) for row in rows]
    assert abs(sum(w) / len(w) - 1) < 1e-9 and max(w) <= 5 + 1e-6
    assert abs(max(w) - weights["max_weight"]) < 1e-6
    assert abs(sum(w) ** 2 / (len(w) * sum(x * x for x in w)) - weights["efficiency"]) < 1e-6
    worst = 0.0
    ward_weight: Counter[str] = Counter()
    for row, weight in zip(rows, w, strict=True):
        ward_weight[row["ward_code"]] += weight
    for ward in WARDS:
        worst = max(worst, abs(ward_weight[ward] / sum(w) - population[ward] / total_population))
    for dimension in DIMENSIONS:
        names = groups_of(census, dimension)
        given = [
            (row[dimension], x) for row, x in zip(rows, w, strict=True) if row[dimension] in names
        ]
        whole = sum(x for _, x in given)
        census_total = sum(sum(census[dimension][ward].values()) for ward in WARDS)
        for name in names:
            weighted = sum(x for g, x in given if g == name) / whole
            target = sum(census[dimension][ward][name] for ward in WARDS) / census_total
            worst = max(worst, abs(weighted - target))
            assert abs(by_group[(dimension, name)]["weighted_share"] - weighted) < 1e-6
    assert worst < 0.001
    assert weights["max_margin_error"] < 0.001
    # The exported rows are the residents' answers, as given.
    given_rows = sorted(
        (row["ward_code"], row["pick_1"], row["pick_2"], row["pick_3"], row["free_text"])
        + tuple(row[d] for d in DIMENSIONS)
        for row in rows
    )
    expected_rows = sorted(
        (r["ward"], *(r["picks"] + ["", "", ""])[:3], r["free_text"] or "")
        + tuple(r["demographics"].get(d, "") for d in DIMENSIONS)
        for r in residents
    )
    assert given_rows == expected_rows
    # Weighted Borda scores from the exported weights.
    weighted_score: dict[str, float] = {c: 0.0 for c, _, _ in CATEGORIES}
    for row, weight in zip(rows, w, strict=True):
        for position, key in enumerate(("pick_1", "pick_2", "pick_3")):
            if row[key]:
                weighted_score[row[key]] += weight * (K - position)
    expected_weighted_ranks = ranks(weighted_score)
    for category, _, _ in CATEGORIES:
        assert abs(by_need[category]["weighted_score"] - weighted_score[category]) < 1e-4
        assert by_need[category]["weighted_rank"] == expected_weighted_ranks[category]
