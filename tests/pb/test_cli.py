"""`civicbot pb` through Typer's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from admin.pb_cli import app
from tests.pb import DATA_DIR, pabutools_tally
from tests.pb.test_pabulib import GOOD

runner = CliRunner()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "round.pb"
    path.write_text(text, encoding="utf-8")
    return path


def test_json_output_equals_pabutools(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    for rule in ("greedy", "mes", "mes-add1", "phragmen"):
        result = runner.invoke(app, ["tally", str(path), "--rule", rule, "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["rule"] == rule
        assert out["selected"] == pabutools_tally(path, rule)  # type: ignore[arg-type]
        assert out["budget"] == 100 and out["voters"] == 4 and out["projects"] == 3


def test_explain_says_who_paid_and_why_not(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    result = runner.invoke(app, ["tally", str(path), "--rule", "mes", "--json", "--explain"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    funded = {f["project"]: f for f in out["funded"]}
    assert "a" in funded
    assert {p["voter"] for p in funded["a"]["payments"]} == {"1", "2", "3"}
    assert all(u["why"] for u in out["unfunded"])
    text = runner.invoke(app, ["tally", str(path), "--rule", "greedy", "--explain"])
    assert text.exit_code == 0
    assert "no longer fit" in text.stdout


def test_broken_file_exits_2_with_line_number(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("2;a\n", "2;a,zz\n"))
    result = runner.invoke(app, ["tally", str(path)])
    assert result.exit_code == 2
    assert "line 23" in result.output and "zz" in result.output
    assert "Traceback" not in result.output


def test_truncated_file_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD[: GOOD.index("VOTES")])
    result = runner.invoke(app, ["tally", str(path), "--json"])
    assert result.exit_code == 2
    assert "VOTES" in result.output


def test_check_reports_problems(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["check", str(_write(tmp_path, GOOD))])
    assert ok.exit_code == 0 and "OK" in ok.stdout
    bad = runner.invoke(app, ["check", str(_write(tmp_path, GOOD.replace("4;c\n", "4;a,b,c\n")))])
    assert bad.exit_code == 2
    assert "line 25" in bad.output and "max_length" in bad.output


def test_rule_that_does_not_apply_exits_2(tmp_path: Path) -> None:
    text = GOOD.replace("vote_type;approval", "vote_type;ordinal")
    result = runner.invoke(app, ["tally", str(_write(tmp_path, text)), "--rule", "phragmen"])
    assert result.exit_code == 2
    assert "approval" in result.output


def test_large_files_show_progress_and_tally(tmp_path: Path) -> None:
    # over 20,000 lines: parsed under a progress bar on stderr (it once crashed rendering)
    n = 25_000
    lines = GOOD.replace("num_votes;4", f"num_votes;{n}").split("VOTES")[0].splitlines()
    lines += ["VOTES", "voter_id;vote"] + [f"{v};a,b" if v % 3 else f"{v};c" for v in range(n)]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    for command in (["tally", str(path), "--rule", "mes-add1", "--json"], ["check", str(path)]):
        result = runner.invoke(app, command)
        assert result.exit_code in (0, 1), result.output  # check may warn; never a traceback
        assert result.exception is None or isinstance(result.exception, SystemExit)
    tally = runner.invoke(app, ["tally", str(path), "--rule", "mes-add1", "--json"])
    assert json.loads(tally.stdout)["voters"] == n


def test_explain_says_what_happened_to_a_free_project() -> None:
    path = Path(__file__).parent / "cases" / "free_minimal_issue17.pb"
    out = runner.invoke(app, ["tally", str(path), "--rule", "mes", "--json", "--explain"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["selected"] == ["b"] and data["fund_free_projects"] is False
    (a,) = [u for u in data["unfunded"] if u["project"] == "a"]
    assert a["reason"] == "free-no-weight"
    assert "costs nothing" in a["why"] and "outside the vote" in a["why"]
    text = runner.invoke(app, ["tally", str(path), "--rule", "mes", "--explain"])
    assert "a (Free and approved): costs nothing; MES with cost satisfaction" in text.stdout
    funded = runner.invoke(
        app, ["tally", str(path), "--rule", "mes", "--json", "--explain", "--fund-free-projects"]
    )
    data = json.loads(funded.stdout)
    assert data["selected"] == ["a", "b"] and data["fund_free_projects"] is True
    assert "outside the vote" in data["funded"][0]["note"]


def test_check_lists_warnings_and_exits_0_and_tally_shows_them(tmp_path: Path) -> None:
    path = Path(__file__).parent / "cases" / "read_excerpt_cumulative.pb"
    check = runner.invoke(app, ["check", str(path)])
    assert check.exit_code == 0, check.output
    assert f"{path}:line 8: warning: META says num_votes=2048" in check.stdout
    assert f"{path}:line 30: warning: no points cell" in check.stdout
    assert ": OK (5 warning(s))" in check.stdout  # + 3 recommended META keys missing
    result = runner.invoke(app, ["tally", str(path), "--rule", "mes", "--json"])
    assert result.exit_code == 0
    assert f"warning: {path}:30: no points cell" in result.stderr
    assert json.loads(result.stdout)["voters"] == 10


def test_check_reports_one_typo_once(tmp_path: Path) -> None:
    # issue #11: a typo in one cost gave 47 errors, 43 of them "vote names unknown project"
    votes = "".join(f"{v};a,c\n" for v in range(5, 48))
    text = GOOD.replace("a;50;3", "a;5O;3").replace("num_votes;4", "num_votes;47") + votes
    result = runner.invoke(app, ["check", str(_write(tmp_path, text))])
    assert result.exit_code == 2
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert errors == [
        f"{tmp_path / 'round.pb'}:line 17: error: cost '5O' of project 'a' is not a number; "
        "46 votes naming 'a' could not be read (lines 22, 23, 24, 26, 27 and 41 more)"
    ]
    assert "1 error(s)" in result.stderr


ASSEN = DATA_DIR / "Netherlands_Assen_2024.pb"


def _assen() -> Path:
    if not ASSEN.is_file():
        pytest.skip(f"shared Pabulib data not found at {ASSEN}")
    return ASSEN


def test_explain_on_assen_explains_add1_in_euros_without_voter_ids() -> None:
    result = runner.invoke(app, ["tally", str(_assen()), "--rule", "mes-add1", "--explain"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # undo the terminal's line wrapping
    assert "76,700.00 EUR of 100,000.00 EUR (84 voters)" in out
    assert "split equally among the 84 voters gives each 1,190.48 EUR" in out
    assert (
        "Add1 completion raised every voter's share 1.00 EUR at a time" in out
        and "from 1,190.48 EUR to 2,033.48 EUR" in out
    )
    assert "with 2,034.48 EUR each MES would fund projects costing 105,700.00 EUR" in out
    assert "13 supporters paid 363.33 EUR each; 1 paid all they had left, 276.75 EUR." in out
    assert "vote046173fb" not in out  # a voter id from the file
    assert not re.search(r"(?<![\d,])1 (voters|supporters)\b", out)


def test_json_sorts_ids_as_numbers_names_projects_and_gives_decimal_amounts() -> None:
    result = runner.invoke(app, ["tally", str(_assen()), "--json", "--explain"])
    data = json.loads(result.stdout)
    # every key councils' scripts read is still there, with the same meaning
    for key in ("rule", "selected", "cost", "budget", "voters", "projects", "funded"):
        assert key in data
    assert {"unfunded", "voter_budget"} <= data.keys()
    assert data["selected"] == ["2", "3", "5", "6", "9", "11", "12", "13", "14"]
    assert data["currency"] == "EUR" and data["voter_budget"] == "42703/21"
    assert data["voter_budget_amount"] == 2033.48
    eleven = {"id": "11", "name": "Muziekproductie studio", "cost": 15000}
    assert data["selected_projects"][5] == eleven
    step6 = data["funded"][5]
    assert (step6["project"], step6["name"], step6["step"]) == ("14", "In gesprek", 6)
    assert {"voter", "paid", "amount"} == set(step6["payments"][0])
    amounts = {(p["paid"], p["amount"]) for p in step6["payments"]}
    assert ("4265096/11739", 363.33) in amounts  # exact fraction and the amount in cents
    assert {"voters": 13, "amount": 363.33, "paid": "4265096/11739"} in step6["shares"]
    assert data["add1"]["start_voter_budget"] == "25000/21"
    assert data["add1"]["next_cost"] == 105700
    assert data["unfunded"][0]["name"] == "Crossbaan in Peelo"


@pytest.mark.parametrize(
    ("alias", "rule"),
    [("equalshares/add1", "mes-add1"), ("equalshares", "mes"), ("greedy", "greedy")],
)
def test_pabulib_rule_names_are_aliases(alias: str, rule: str, tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    ours = runner.invoke(app, ["tally", str(path), "--rule", alias, "--json"])
    assert ours.exit_code == 0, ours.output
    assert json.loads(ours.stdout) == json.loads(
        runner.invoke(app, ["tally", str(path), "--rule", rule, "--json"]).stdout
    )
    assert json.loads(ours.stdout)["rule"] == rule


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("equalshares/add1-comparison", "comparison with greedy"),
        ("unknown", "does not say which rule"),
        ("greedy-threshold", "threshold"),
        ("nonsense", "unknown rule 'nonsense'"),
    ],
)
def test_rules_civicbot_does_not_run_are_refused_with_what_to_do(
    name: str, says: str, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["tally", str(_write(tmp_path, GOOD)), "--rule", name])
    assert result.exit_code == 2
    assert says in result.output and "equalshares/add1" in result.output
