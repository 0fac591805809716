"""`civicbot pb round`, `pb proposals` and `pb project` from the command line: the whole life
of a round, results equal to `pb tally` on the export, import printing the id last; and bad
input (unknown ids, bad files, the wrong phase) gets one clear line and exit status 2, with
no traceback and nothing changed."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.cli import app as cli
from bot.clock import SystemClock
from bot.services import build_services
from tests.conftest import REPO, SHARED_DATA, make_settings
from tests.rounds.pbcore_support import cast, round_yaml

FUTURE = {"voting_open": "2030-05-01T09:00:00Z", "voting_close": "2030-05-31T21:00:00Z"}


@pytest.fixture
def civicbot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    env = {"CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"}
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == code, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        assert "Traceback" not in result.output
        return result

    run("db", "upgrade")
    run("wards", "load", str(REPO / "admin" / "data" / "demo_wards.csv"))
    run.url = env["CIVICBOT_DATABASE_URL"]  # type: ignore[attr-defined]
    return run


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def seed(url: str, votes: list[list[str]]) -> None:
    async def go() -> None:
        services = build_services(make_settings(url))
        clock = SystemClock()
        try:
            for vote in votes:
                await cast(services, "riverside-2027", None, vote, now=clock.now())
        finally:
            await services.close()

    asyncio.run(go())


def test_a_round_from_file_to_results_equal_to_pb_tally(civicbot: Any, tmp_path: Path) -> None:
    yaml = write(tmp_path, "r.yaml", round_yaml(rule="mes-add1", **FUTURE))
    created = civicbot("pb", "round", "create", yaml)
    assert created.stdout.strip() == "riverside-2027"
    assert "riverside-2027" in civicbot("pb", "round", "list").stdout
    shown = json.loads(civicbot("pb", "round", "show", "riverside-2027", "--json").stdout)
    assert shown["status"] == "draft" and len(shown["projects"]) == 5
    assert shown["ballot"] == {"type": "approval", "min": 1, "max": 3}
    # before voting opens the file may change
    changed = write(tmp_path, "r2.yaml", round_yaml(rule="mes-add1", budget=65000, **FUTURE))
    assert "updated" in civicbot("pb", "round", "update", "riverside-2027", changed).stdout
    assert "voting is open" in civicbot("pb", "round", "open", "riverside-2027").stdout
    # after: the rules are locked, and nothing changes
    locked = write(tmp_path, "r3.yaml", round_yaml(rule="greedy", budget=65000, **FUTURE))
    before = civicbot("pb", "round", "show", "riverside-2027", "--json").stdout
    out = civicbot("pb", "round", "update", "riverside-2027", locked, code=2).output
    assert "voting has opened; the rules are locked" in out
    assert civicbot("pb", "round", "show", "riverside-2027", "--json").stdout == before
    later = write(
        tmp_path,
        "r4.yaml",
        round_yaml(
            rule="mes-add1",
            budget=65000,
            voting_open=FUTURE["voting_open"],
            voting_close="2030-06-07T21:00:00Z",
        ),
    )
    assert "--reason" in civicbot("pb", "round", "update", "riverside-2027", later, code=2).output
    moved = civicbot("pb", "round", "update", "riverside-2027", later, "--reason", "a strike")
    assert "voting now closes 07/06/2030" in moved.stdout

    rng = random.Random(14)
    seed(
        civicbot.url, [rng.sample(["1", "2", "3", "4", "5"], rng.randint(1, 3)) for _ in range(150)]
    )
    assert "150 voter(s)" in civicbot("pb", "round", "close", "riverside-2027").stdout
    results = json.loads(civicbot("pb", "round", "results", "riverside-2027", "--json").stdout)
    exported = tmp_path / "out.pb"
    civicbot("pb", "round", "export", "riverside-2027", "--out", str(exported))
    tallied = json.loads(
        civicbot("pb", "tally", str(exported), "--rule", results["rule"], "--json").stdout
    )
    assert {k: results[k] for k in ("rule", "budget", "voters", "selected", "cost")} == {
        k: tallied[k] for k in ("rule", "budget", "voters", "selected", "cost")
    }
    assert civicbot("pb", "round", "export", "riverside-2027").stdout == exported.read_text()
    text = civicbot("pb", "round", "results", "riverside-2027").stdout
    assert "mes-add1, 150 voter(s)" in text

    # an export imported again is the same round, under a new id, with the same results
    imported = civicbot("pb", "round", "import", str(exported), "--id", "again")
    new_id = imported.stdout.split()[-1]
    assert new_id == "again"
    again = json.loads(civicbot("pb", "round", "results", new_id, "--json").stdout)
    assert {k: v for k, v in again.items() if k != "round"} == {
        k: v for k, v in results.items() if k != "round"
    }


def test_import_prints_the_round_id_as_its_last_word(civicbot: Any) -> None:
    path = SHARED_DATA / "pabulib" / "Poland_Czestochowa_2020_Grabowka.pb"
    out = civicbot("pb", "round", "import", str(path)).stdout
    round_id = out.split()[-1]
    assert round_id == "poland_czestochowa_2020_grabowka"
    results = json.loads(civicbot("pb", "round", "results", round_id, "--json").stdout)
    tallied = json.loads(civicbot("pb", "tally", str(path), "--rule", "greedy", "--json").stdout)
    assert results["selected"] == tallied["selected"] and results["voters"] == 201


def test_bad_input_gets_a_clear_line_and_exit_2(civicbot: Any, tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", round_yaml(budget=0, rule="borda", **FUTURE))
    out = civicbot("pb", "round", "create", bad, code=2).output
    assert "bad.yaml: line 4: budget:" in out and "bad.yaml: line 7: rule:" in out
    assert "nothing was written" in out
    assert "no PB rounds yet" in civicbot("pb", "round", "list").stdout
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    assert (
        "not UTF-8" in civicbot("pb", "round", "create", str(tmp_path / "bin.yaml"), code=2).output
    )
    assert "cannot read it" in civicbot("pb", "round", "create", "missing.yaml", code=2).output
    for args in (
        ("show", "nope"),
        ("open", "nope"),
        ("close", "nope"),
        ("results", "nope"),
        ("export", "nope"),
        ("update", "nope", bad),
    ):
        out = civicbot("pb", "round", *args, code=2).output
        assert "no PB round 'nope'" in out or "line 4" in out, (args, out)
    good = write(tmp_path, "r.yaml", round_yaml(**FUTURE))
    civicbot("pb", "round", "create", good)
    assert "exists already" in civicbot("pb", "round", "create", good, code=2).output
    assert "has not opened" in civicbot("pb", "round", "close", "riverside-2027", code=2).output
    assert "has not closed" in civicbot("pb", "round", "results", "riverside-2027", code=2).output
    assert "exported yet" in civicbot("pb", "round", "export", "riverside-2027", code=2).output
    out = civicbot("pb", "project", "update", "riverside-2027", "9", "--text-en", "x", code=2)
    assert "has no project '9'" in out.output
    out = civicbot("pb", "project", "update", "riverside-2027", "1", "--text-en", "x", code=2)
    assert "has not closed" in out.output
    assert "no ideas" in civicbot("pb", "proposals", "riverside-2027").stdout
    assert json.loads(civicbot("pb", "proposals", "riverside-2027", "--json").stdout) == []
    assert "no PB round 'nope'" in civicbot("pb", "proposals", "nope", code=2).output
    out = civicbot(
        "pb", "proposals", "accept", "riverside-2027", "x", "--cost", "5", "--id", "9", code=2
    ).output
    assert "an idea's number" in out
    assert (
        "needs --cost"
        in civicbot("pb", "proposals", "accept", "riverside-2027", "1", code=2).output
    )
    out = civicbot(
        "pb", "proposals", "accept", "riverside-2027", "1", "--cost", "5", "--id", "9", code=2
    ).output
    assert "no idea 1 in round riverside-2027" in out
    broken = write(tmp_path, "broken.pb", "META\nkey;value\nbudget;x\n")
    assert "broken.pb" in civicbot("pb", "round", "import", broken, code=2).output
    assert "cannot read" in civicbot("pb", "round", "import", "missing.pb", code=2).output
    path = str(SHARED_DATA / "pabulib" / "Switzerland_Zurich_D10.pb")
    out = civicbot("pb", "round", "import", path, "--rule", "phragmen", code=2).output
    assert "needs approval ballots" in out
    out = civicbot("pb", "round", "import", path, "--id", "Bad id", code=2).output
    assert "round id 'Bad id': use 1-64 lower-case letters" in out
    assert [
        line.split()[0] for line in civicbot("pb", "round", "list").stdout.splitlines()[1:]
    ] == ["riverside-2027"]
