"""Pabulib parsing, checking and writing."""

from __future__ import annotations

from fractions import Fraction

import pytest

from flows.pb.pabulib import PabulibError, check_pabulib, parse_pabulib, write_pabulib

GOOD = """META
key;value
description;test
country;Nowhere
unit;Town
instance;2024
num_projects;3
num_votes;4
budget;100
vote_type;approval
rule;greedy
date_begin;2024
date_end;2024
max_length;2
PROJECTS
project_id;cost;votes;name
a;50;3;Park
b;40.5;2;"Bike; lanes"
c;60;1;Library
VOTES
voter_id;vote
1;a,b
2;a
3;a,b
4;c
"""


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


def test_parse_groups_identical_ballots() -> None:
    e = parse_pabulib(GOOD)
    assert [p.id for p in e.projects] == ["a", "b", "c"]
    assert e.projects[1].cost == Fraction(81, 2)
    assert e.projects[1].name == "Bike; lanes"
    assert e.budget == 100 and e.num_voters == 4 and e.vote_type == "approval"
    assert sorted(g.weight for g in e.groups) == [1, 1, 2]
    assert e.votes() == [3, 2, 1]


def test_write_then_parse_round_trips() -> None:
    e = parse_pabulib(GOOD)
    again = parse_pabulib(write_pabulib(e))
    assert again.projects == e.projects or [p.id for p in again.projects] == ["a", "b", "c"]
    assert [(p.id, p.cost) for p in again.projects] == [(p.id, p.cost) for p in e.projects]
    assert {(g.projects, g.voters) for g in again.groups} == {
        (g.projects, g.voters) for g in e.groups
    }


def test_good_file_checks_clean() -> None:
    assert [i for i in check_pabulib(GOOD) if i.severity == "error"] == []


@pytest.mark.parametrize(
    ("broken", "needle", "message"),
    [
        (GOOD.replace("a;50;3", "a;fifty;3"), "a;fifty", "not a number"),
        (GOOD.replace("2;a\n", "2;a,z\n"), "2;a,z", "unknown project 'z'"),
        (GOOD.replace("c;60;1;Library", "c;60;1"), "c;60;1", "expected 4 fields"),
        (GOOD.replace("budget;100", "budget;lots"), "budget;lots", "not a number"),
        (GOOD.replace("b;40.5;2", "a;40.5;2"), "a;40.5;2", "listed twice"),
        # amounts the tally could not hold in a float, or that would take minutes to expand
        (GOOD.replace("a;50;3", "a;1e400;3"), "a;1e400", "too large (at most 1,000,000,"),
        (GOOD.replace("budget;100", "budget;1e999999999"), "budget;1e9", "not a number"),
        (GOOD.replace("a;50;3", "a;" + "9" * 500 + ";3"), "a;999", "over 64 characters"),
        (GOOD.replace("a;50;3", "a;nan;3"), "a;nan", "not a number"),
        (GOOD.replace("a;50;3", "a;1/2;3"), "a;1/2", "not a number"),
    ],
)
def test_errors_carry_the_line_number(broken: str, needle: str, message: str) -> None:
    with pytest.raises(PabulibError) as info:
        parse_pabulib(broken)
    assert info.value.line == _line_of(broken, needle)
    assert message in str(info.value)
    assert len(str(info.value)) < 200  # long cells are cut short in the message


def test_truncated_file_is_reported_at_its_end() -> None:
    cut = GOOD[: GOOD.index("3;a,b")]
    with pytest.raises(PabulibError) as info:
        parse_pabulib(cut)
    assert info.value.line == len(cut.splitlines())
    assert "truncated" in str(info.value)


def test_truncated_in_projects_means_missing_votes() -> None:
    cut = GOOD[: GOOD.index("c;60")]
    with pytest.raises(PabulibError, match="no VOTES section"):
        parse_pabulib(cut)


def test_missing_meta_section() -> None:
    text = GOOD[GOOD.index("PROJECTS") :]
    with pytest.raises(PabulibError) as info:
        parse_pabulib(text)
    assert info.value.line == 1


def test_missing_required_meta_key() -> None:
    text = GOOD.replace("vote_type;approval\n", "")
    with pytest.raises(PabulibError, match="vote_type"):
        parse_pabulib(text)


def test_check_reports_ballot_limits_and_all_problems() -> None:
    text = GOOD.replace("4;c\n", "4;a,b,c\n").replace("1;a,b\n", "1;a,q\n")
    issues = check_pabulib(text)
    errors = [i for i in issues if i.severity == "error"]
    assert any("max_length" in i.message and i.line == _line_of(text, "4;a,b,c") for i in errors)
    assert any(
        "unknown project 'q'" in i.message and i.line == _line_of(text, "1;a,q") for i in errors
    )


def test_cumulative_points_are_parsed() -> None:
    text = (
        GOOD.replace("vote_type;approval", "vote_type;cumulative")
        .replace("voter_id;vote\n", "voter_id;vote;points\n")
        .replace("1;a,b\n", "1;a,b;3,2\n")
        .replace("2;a\n", "2;a;5\n")
        .replace("3;a,b\n", "3;b,a;2,3\n")
        .replace("4;c\n", "4;c;1\n")
    )
    e = parse_pabulib(text)
    assert sorted(g.weight for g in e.groups) == [1, 1, 2]
    with pytest.raises(PabulibError, match="points"):
        parse_pabulib(text.replace("2;a;5", "2;a;x"))


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_an_empty_file_says_so(text: str) -> None:
    with pytest.raises(PabulibError, match="^the file is empty$"):
        parse_pabulib(text)
    assert [str(i) for i in check_pabulib(text)] == ["file: error: the file is empty"]
