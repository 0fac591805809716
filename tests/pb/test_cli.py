"""`civicbot pb` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from admin.pb_cli import app
from tests.pb import pabutools_tally
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
