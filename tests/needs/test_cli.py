"""``civicbot needs`` and ``civicbot census`` from the command line: bad files are refused
whole (every problem with its line, exit status 2, nothing written), an assessment can be
changed until it opens, closed, listed, reported for people and exported with small cells
suppressed."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from bot.app import build_app
from bot.cli import app as cli
from bot.services import build_services
from tests.conftest import REPO, make_settings
from tests.needs.support import CENSUS, assessment_yaml, join, say


@pytest.fixture
def civicbot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    env = {"CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"}
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == code, result.output
        return result

    run("db", "upgrade")
    run("wards", "load", str(REPO / "admin" / "data" / "demo_wards.csv"))
    run.url = env["CIVICBOT_DATABASE_URL"]  # type: ignore[attr-defined]
    return run


def test_a_broken_census_file_changes_nothing(civicbot: Any, tmp_path: Path) -> None:
    bad = tmp_path / "census.csv"
    bad.write_text(
        "ward_code,dimension,group,population\n"
        "DEMO-CATHAYS,age_band,16-24,100\n"
        "DEMO-CATHAYS,age_band,25-44,-5\n"
        "DEMO-SPLOTT,age_band,16-24,12.5\n"
        "NOWHERE,age_band,16-24,10\n"
        "DEMO-SPLOTT,age_band,16-24,10\n"
        "DEMO-SPLOTT,Age Band,x,10\n"
        "DEMO-GABALFA,age_band,16-24\n"
        "DEMO-RIVERSIDE,age_band,25-44,7\n"
    )
    out = civicbot("census", "load", str(bad), code=2).output
    assert "line 3: population '-5' is negative" in out
    assert "line 4: population '12.5' is not a whole number" in out
    assert "line 5: unknown ward 'NOWHERE'" in out
    assert "line 7: dimension 'Age Band'" in out
    assert "line 8: expected 4 columns, found 3" in out
    assert "line 2: ward DEMO-CATHAYS has no age_band row for '25-44'" in out
    assert "line 9: ward DEMO-RIVERSIDE has no age_band row for '16-24'" in out
    assert "nothing was written" in out
    bad.write_text("ward,dim,group,count\n")
    assert "line 1: the header must be" in civicbot("census", "load", str(bad), code=2).output
    bad.write_bytes(b"\xff\xfe\x00bad")
    assert "not UTF-8" in civicbot("census", "load", str(bad), code=2).output
    # Nothing was written: an assessment can't ask about age_band yet.
    (tmp_path / "a.yaml").write_text(assessment_yaml(about_you="[age_band]"))
    out = civicbot("needs", "open", str(tmp_path / "a.yaml"), code=2).output
    assert "no census loaded for 'age_band' (loaded: none yet" in out
    assert "loaded 77 census rows: 3 dimension(s) over 7 ward(s)" in civicbot(
        "census", "load", str(CENSUS)
    ).output


def test_a_broken_assessment_file_changes_nothing(civicbot: Any, tmp_path: Path) -> None:
    civicbot("census", "load", str(CENSUS))
    path = tmp_path / "a.yaml"
    path.write_text("id: spring\ntitle: {en: [unclosed\n")
    out = civicbot("needs", "open", str(path), code=2).output
    assert "a.yaml: line 3: not valid YAML" in out or "a.yaml: line 2: not valid YAML" in out
    path.write_text(
        "id: Spring 2027!\n"
        "title: {en: \"Fix\\u0007 it\", cy: \"\"}\n"
        "wards: [DEMO-CATHAYS, NOWHERE]\n"
        "opens_at: \"2027-05-01T09:00:00Z\"\n"
        "closes_at: \"next week\"\n"
        "picks: 100000000000000000000\n"
        "ask_free_text: maybe\n"
        "about_you: [age_band, shoe_size]\n"
        "colour: blue\n"
        "categories:\n"
        "  - {id: youth, en: Youth, cy: Ieuenctid}\n"
        "  - {id: youth, en: Care, cy: Gofal}\n"
    )
    out = civicbot("needs", "open", str(path), code=2).output
    for expected in (
        "line 1: id: use 1-64 lower-case letters",
        "line 2: title: the en text has control characters",
        "line 2: title: the cy text is missing or empty",
        "line 3: wards: unknown ward 'NOWHERE'",
        "line 5: closes_at: 'next week' is not a date and time",
        "line 6: picks: a whole number from 1 to 10",
        "line 7: ask_free_text: true or false",
        "line 8: about_you: no census loaded for 'shoe_size'",
        "line 9: unknown field 'colour'",
        "line 10: categories: give 3 to 40 (there are 2)",
        "line 12: categories: id 'youth' is used twice",
    ):
        assert expected in out, (expected, out)
    path.write_text(assessment_yaml(opens_at="2027-04-01T09:00", closes_at="2027-03-01T09:00"))
    assert "line 5: closes_at must be after opens_at" in civicbot(
        "needs", "open", str(path), code=2
    ).output
    path.write_text(assessment_yaml(closes_at="2020-03-01T09:00Z", opens_at="2020-01-01T09:00"))
    assert "closes_at is in the past" in civicbot("needs", "open", str(path), code=2).output
    assert "no needs assessments yet" in civicbot("needs", "list").output


def test_changed_until_it_opens_then_closed(civicbot: Any, tmp_path: Path) -> None:
    civicbot("census", "load", str(CENSUS))
    path = tmp_path / "a.yaml"
    path.write_text(assessment_yaml(opens_at="2099-03-01T09:00", closes_at="2099-04-30T21:00"))
    out = civicbot("needs", "open", str(path)).output
    # Times without a zone are Europe/London (British Summer Time by the end of April).
    assert "created needs assessment spring-2027: opens 01/03/2099 09:00" in out
    assert "closes 30/04/2099 21:00 (Europe/London); 5 categories" in out
    path.write_text(
        assessment_yaml(picks=2, opens_at="2099-03-02T09:00", closes_at="2099-04-30T21:00")
    )
    assert "updated needs assessment spring-2027" in civicbot("needs", "open", str(path)).output
    assert "scheduled" in civicbot("needs", "list").output
    path.write_text(assessment_yaml(ident="now", closes_at="2099-01-01T00:00Z"))
    assert "created needs assessment now" in civicbot("needs", "open", str(path)).output
    refused = civicbot("needs", "open", str(path), code=2).output
    assert "needs assessment now has opened, so it can't be changed" in refused
    assert "needs assessment now closed" in civicbot("needs", "close", "now").output
    listing = civicbot("needs", "list").output
    assert "now " in listing and "closed" in listing
    assert "closed at" in civicbot("needs", "close", "now", code=2).output
    assert "no needs assessment 'nope'" in civicbot("needs", "report", "nope", code=2).output
    assert "give --csv" in civicbot("needs", "export", "now", code=2).output
    assert "--under-represented" in civicbot("needs", "remind", "now", code=2).output


def test_human_report_and_suppressed_export(civicbot: Any, tmp_path: Path) -> None:
    civicbot("census", "load", str(CENSUS))
    path = tmp_path / "a.yaml"
    path.write_text(assessment_yaml(closes_at="2099-01-01T00:00Z"))
    civicbot("needs", "open", str(path))

    async def residents() -> None:
        services = build_services(make_settings(civicbot.url))
        transport = httpx.ASGITransport(app=build_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for i in range(6):
                answer = ("NEEDS", "2 1", "=1+1", "2")
                await say(client, f"resident-{i}", *join("DEMO-CATHAYS"), *answer)
            answer = ("NEEDS", "3", "SKIP", "1", "1", "1", "4")
            await say(client, "resident-s", *join("DEMO-SPLOTT"), *answer)
        await services.close()

    asyncio.run(residents())
    human = civicbot("needs", "report", "spring-2027").output
    assert "== Cathays (DEMO-CATHAYS): 6 responses" in human
    assert "== Splott (DEMO-SPLOTT): 1 responses" in human
    assert "<< UNDER-REPRESENTED" in human  # wards nobody answered in
    assert "   age_band      16-24" in human and "<< under-represented" in human
    assert "Care at home" in human and "Telegram group polls linked to it: 0" in human
    exported = civicbot("needs", "export", "spring-2027", "--csv").stdout
    table = list(csv.DictReader(io.StringIO(exported)))
    wards = {r["ward_code"]: r for r in table if r["table"] == "ward"}
    assert wards["DEMO-CATHAYS"]["responses"] == "6" and wards["DEMO-CATHAYS"]["per_1000"]
    assert wards["DEMO-SPLOTT"]["responses"] == "<5" and wards["DEMO-SPLOTT"]["per_1000"] == ""
    needs = {r["category"]: r for r in table if r["table"] == "need"}
    assert needs["care"]["responses"] == "6" and needs["care"]["score"] == "18"
    assert needs["parks"]["responses"] == "<5" and needs["parks"]["score"] == ""
    rows = civicbot("needs", "export", "spring-2027", "--csv", "--rows").stdout
    assert rows.count("'=1+1") == 6  # shown as text, never run as a spreadsheet formula
    assert "resident-" not in rows
