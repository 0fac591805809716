"""pabutools' own rule-test instances and the cases of issue #17, as Pabulib files.

`tests/pb/cases/*.pb` holds the elections of pabutools' `tests/rules/test_rule.py` (`rule_*`,
written out as Pabulib files; the instance with a pre-funded project, `EmptyProfile_Initial`,
has no Pabulib form and is left out), incomplete files pabutools reads (`read_*`, in the
manner of its parser tests) and the issue's own cases (`free_*`, `add1_*`). Every file is
tallied with every rule that applies and both tie-breaks, and compared with pabutools run on
the same file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.pb.model import TieBreak
from flows.pb.pabulib import read_pabulib
from flows.pb.rules import RULES, Rule, RuleNotApplicable, selected_ids, tally
from tests.pb import pabutools_tally

CASES = Path(__file__).resolve().parent / "cases"
CASE_FILES = sorted(p.name for p in CASES.glob("*.pb"))
# pabutools cannot finish mes-add1 on these (issue #17 item 3); test_add1_bound.py covers them
PABUTOOLS_NEVER_ENDS = {("add1_huge_walk.pb", "mes-add1")}


def test_the_cases_are_there() -> None:
    assert len([n for n in CASE_FILES if n.startswith("rule_")]) == 17
    assert "free_minimal_issue17.pb" in CASE_FILES


@pytest.mark.parametrize("tie_break", ["cost-votes", "lexico"])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", CASE_FILES)
def test_case_matches_pabutools(name: str, rule: Rule, tie_break: TieBreak) -> None:
    if (name, rule) in PABUTOOLS_NEVER_ENDS:
        pytest.skip("pabutools does not finish this one")
    path = CASES / name
    election = read_pabulib(path)
    try:
        ours = selected_ids(election, tally(election, rule, tie_break))
    except RuleNotApplicable:
        assert election.vote_type != "approval"
        return
    assert ours == pabutools_tally(path, rule, tie_break)


def _reasons(name: str, rule: Rule, **kw: bool) -> tuple[list[str], dict[str, str]]:
    election = read_pabulib(CASES / name)
    result = tally(election, rule, **kw)
    why = {election.projects[u.project].id: u.reason for u in result.unfunded}
    return selected_ids(election, result), why


@pytest.mark.parametrize("rule", ["mes", "mes-add1"])
def test_mes_gives_a_free_project_no_weight(rule: Rule) -> None:
    # a (free) is approved by two voters; pabutools' MES with cost satisfaction never funds it
    selected, why = _reasons("free_minimal_issue17.pb", rule)
    assert selected == ["b"]
    assert why["a"] == "free-no-weight"
    assert why["z"] == "no-supporters"  # free too, but nobody named it


@pytest.mark.parametrize("rule", ["mes", "mes-add1"])
def test_funding_free_projects_first_is_an_explicit_option(rule: Rule) -> None:
    selected, why = _reasons("free_minimal_issue17.pb", rule, fund_free=True)
    assert selected == ["a", "b"]  # the rest of the outcome is unchanged
    assert "a" not in why and why["z"] == "no-supporters"


def test_greedy_and_phragmen_fund_approved_free_projects() -> None:
    assert _reasons("free_minimal_issue17.pb", "greedy")[0] == ["a", "b", "z"]  # all fit
    selected, why = _reasons("free_minimal_issue17.pb", "phragmen")
    assert selected == ["a", "b"] and why["z"] == "count-stopped"


def test_project_removed_by_the_city_is_not_funded_by_mes() -> None:
    # the Gdynia 2020 pattern: a withdrawn project kept in the file at cost 0, with votes
    election = read_pabulib(CASES / "free_removed_by_city.pb")
    official = sorted(p.id for p in election.projects if p.fields["selected"] == "1")
    selected, why = _reasons("free_removed_by_city.pb", "mes-add1")
    assert selected == official == ["2", "3", "4"]
    assert why["5"] == "free-no-weight"
    assert _reasons("free_removed_by_city.pb", "mes-add1", fund_free=True)[0] == official + ["5"]
    assert "5" in _reasons("free_removed_by_city.pb", "greedy")[0]
