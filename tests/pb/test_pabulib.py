"""Pabulib parsing, checking and writing."""

from __future__ import annotations

import csv
import random
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.pb.model import Election
from flows.pb.pabulib import (
    PabulibError,
    _Reader,
    check_pabulib,
    parse_pabulib,
    read_pabulib,
    write_pabulib,
)
from tests.pb import DATA_DIR

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
        (GOOD.replace("c;60;1;Library", "cc"), "cc", "expected 4 fields"),
        (GOOD.replace("c;60;1;Library", "c;60;1;Library;x"), "c;60;1", "expected 4 fields"),
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


def test_a_file_with_fewer_votes_than_meta_says_is_read_with_a_warning() -> None:
    # excerpts of real files keep the full round's num_votes; pabutools reads them
    cut = GOOD[: GOOD.index("3;a,b")]
    e = parse_pabulib(cut)
    assert e.num_voters == 2
    (w,) = e.warnings
    assert w.line == _line_of(cut, "num_votes;4")
    assert "num_votes=4 but the file has 2 votes; used the 2 votes" in w.message
    assert "truncated?" in w.message
    assert [i.severity for i in check_pabulib(cut) if "num_votes" in i.message] == ["warning"]


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


CASES = Path(__file__).resolve().parent / "cases"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "read_no_counts_in_meta.pb",
            [
                (12, "META has no 'num_projects' key; used the 4 projects in the file"),
                (12, "META has no 'num_votes' key; used the 5 votes in the file"),
            ],
        ),
        (
            "read_excerpt_cumulative.pb",
            [
                (8, "META says num_votes=2048 but the file has 10 votes; used the 10 votes"),
                (30, "no points cell: read as a blank ballot (it names no project)"),
            ],
        ),
        ("read_excerpt_ordinal.pb", [(8, "META says num_votes=5000 but the file has 6 votes")]),
        (
            "read_short_rows.pb",
            [
                (15, "2 of 4 fields; read the missing 'name', 'category' as empty"),
                (20, "2 of 4 fields; read the missing 'age', 'sex' as empty"),
                (22, "3 of 4 fields; read the missing 'sex' as empty"),
                (24, "2 of 4 fields; read the missing 'age', 'sex' as empty"),
            ],
        ),
    ],
)
def test_incomplete_files_are_read_with_warnings_naming_the_line(
    name: str, expected: list[tuple[int, str]]
) -> None:
    text = (CASES / name).read_text(encoding="utf-8")
    e = parse_pabulib(text)
    got = [(w.line, w.message[: len(m)]) for w, (_, m) in zip(e.warnings, expected, strict=True)]
    assert got == expected
    assert all(w.severity == "warning" for w in e.warnings)
    # pb check: the same warnings, and no error
    assert [i for i in check_pabulib(text) if i.severity == "error"] == []


def test_blank_ballots_count_as_voters() -> None:
    e = parse_pabulib((CASES / "read_excerpt_cumulative.pb").read_text(encoding="utf-8"))
    assert e.num_voters == 10 and any(g.projects == () for g in e.groups)
    ordinal = (CASES / "read_excerpt_ordinal.pb").read_text(encoding="utf-8")
    assert parse_pabulib(ordinal).num_voters == 6
    (blank,) = [i for i in check_pabulib(ordinal) if "blank" in i.message]
    assert blank.severity == "warning" and blank.line == _line_of(ordinal, "4;;paper")


@pytest.mark.parametrize(
    ("broken", "needle", "message"),
    [
        (GOOD.replace("b;40.5;2", "b;-40.5;2"), "b;-40.5", "cost of project 'b' is negative"),
        (GOOD.replace("4;c\n", "2;c\n"), "2;c", "voter '2' voted twice"),
        (GOOD.replace("4;c\n", "4;c,a,c\n"), "4;c,a,c", "names the same project twice"),
        (GOOD.replace("4;c\n", "4;c,q\n"), "4;c,q", "unknown project 'q'"),
        # a vote naming projects with no points cell: pabutools would drop the whole vote
        (
            GOOD.replace("vote_type;approval", "vote_type;cumulative")
            .replace("voter_id;vote\n", "voter_id;vote;points\n")
            .replace("1;a,b\n", "1;a,b;1,1\n")
            .replace("2;a\n", "2;a;1\n")
            .replace("3;a,b\n", "3;a,b;2,1\n"),
            "4;c",
            "vote names 1 projects but has no points",
        ),
    ],
)
def test_what_is_wrong_is_still_refused(broken: str, needle: str, message: str) -> None:
    with pytest.raises(PabulibError) as info:
        parse_pabulib(broken)
    assert info.value.line == _line_of(broken, needle)
    assert message in str(info.value)
    errors = [i for i in check_pabulib(broken) if i.severity == "error"]
    assert [(i.line, message in i.message) for i in errors] == [(_line_of(broken, needle), True)]


def test_a_row_without_its_vote_is_refused() -> None:
    text = GOOD.replace("voter_id;vote\n", "voter_id;age;vote\n")
    with pytest.raises(PabulibError, match="found 2: no 'vote'") as info:
        parse_pabulib(text)
    assert info.value.line == _line_of(text, "1;a,b")


def test_meta_without_its_header_row_is_refused_once() -> None:
    # 9 of pabutools' 272 real test files: pabutools silently loses their first META row
    text = GOOD.replace("key;value\n", "")
    with pytest.raises(PabulibError) as info:
        parse_pabulib(text)
    assert info.value.line == 2 and "no 'key;value' header row" in str(info.value)
    assert "'description;test'" in str(info.value)
    issues = check_pabulib(text)
    assert [i.line for i in issues if i.severity == "error"] == [2]
    assert not any("'description'" in i.message for i in issues)  # the row was still read


@pytest.mark.parametrize(
    ("broken", "needle"),
    [
        (GOOD.replace("2;a\n", "2;a,zz\n"), "2;a,zz"),  # the bad row is still a vote
        (GOOD.replace("a;50;3", "a;-50;3"), "a;-50"),  # and the bad project still a project
        (GOOD.replace("c;60;1;Library", "c;60;1;Library;x"), "c;60;1"),
    ],
)
def test_check_reports_the_cause_once(broken: str, needle: str) -> None:
    errors = [i for i in check_pabulib(broken) if i.severity == "error"]
    assert [i.line for i in errors] == [_line_of(broken, needle)], errors


def test_a_refused_project_counts_the_votes_it_spoils() -> None:
    text = GOOD.replace("a;50;3", "a;5O;3")  # a letter O typed for a zero
    (error,) = [i for i in check_pabulib(text) if i.severity == "error"]
    assert error.line == _line_of(text, "a;5O")
    assert error.message == (
        "cost '5O' of project 'a' is not a number; 3 votes naming 'a' could not be read "
        "(lines 22, 23, 24)"
    )


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


def test_a_typo_in_votes_is_one_error_saying_how_many_lines_it_affects() -> None:
    # issue #11: one mistake gave 47 errors, 43 of them "vote names unknown project"
    text = GOOD.replace("1;a,b\n", "1;a,bb\n").replace("3;a,b\n", "3;a,bb\n")
    text = text.replace("4;c\n", "4;bb\n") + "".join(f"{v};bb,c\n" for v in range(5, 48))
    text = text.replace("num_votes;4", "num_votes;47")
    errors = [i for i in check_pabulib(text) if i.severity == "error"]
    assert len(errors) == 1, errors
    (e,) = errors
    assert e.line == _line_of(text, "1;a,bb")
    assert e.message == (
        "46 votes name unknown project 'bb' (lines 22, 24, 25, 26, 27 and 41 more); "
        "did you mean 'b'?"
    )
    with pytest.raises(PabulibError, match="line 22: vote names unknown project 'bb'"):
        parse_pabulib(text)


SHARED = sorted(DATA_DIR.glob("*.pb")) if DATA_DIR.is_dir() else []


def _vote_cells(e: Election) -> dict[str, dict[str, str]]:
    """Per voter, the cells of every VOTES column other than vote and points."""
    cols = list(e.vote_columns)
    out: dict[str, dict[str, str]] = {}
    for k, line in enumerate(e.vote_lines):
        cells = [c.strip() for c in next(csv.reader([line], delimiter=";"))]
        voter = cells[cols.index("voter_id")] if "voter_id" in cols else str(k + 1)
        out[voter] = {
            c: v for c, v in zip(cols, cells, strict=False) if c not in ("vote", "points")
        }
    return out


def _ballots(e: Election) -> dict[str, tuple[tuple[str, ...], tuple[Fraction, ...] | None]]:
    return {
        v: (tuple(e.projects[j].id for j in g.projects), g.points)
        for g in e.groups
        for v in g.voters
    }


@pytest.mark.parametrize("path", SHARED, ids=[p.stem for p in SHARED])
def test_shared_files_round_trip_losslessly(path: Path) -> None:
    e = read_pabulib(path)
    again = parse_pabulib(write_pabulib(e))
    assert again.meta == e.meta  # every key, every value as written
    assert again.project_columns == e.project_columns
    assert [p.fields for p in again.projects] == [p.fields for p in e.projects]
    assert [(p.id, p.cost, p.name) for p in again.projects] == [
        (p.id, p.cost, p.name) for p in e.projects
    ]
    assert again.vote_columns == e.vote_columns
    assert _vote_cells(again) == _vote_cells(e)  # age, sex, district... per voter
    assert _ballots(again) == _ballots(e)  # votes and points per voter
    assert [line.split(";")[0] for line in again.vote_lines][:50] == [
        line.split(";")[0] for line in e.vote_lines
    ][:50]  # votes in the order they were read
    assert again.num_voters == e.num_voters and again.budget == e.budget


def test_shared_files_are_all_there() -> None:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared Pabulib data not found at {DATA_DIR}")
    assert len(SHARED) == 12


def test_an_election_built_in_code_is_written_with_minimal_columns() -> None:
    e = parse_pabulib(GOOD)
    built = replace(e, vote_columns=(), vote_lines=(), meta={"budget": "100"})
    text = write_pabulib(built)
    assert "VOTES\nvoter_id;vote\n" in text and "num_votes;4" in text
    assert _ballots(parse_pabulib(text)) == _ballots(e)


def _both_readers(text: str) -> tuple[object, object]:
    """What the whole-column reader and the line-by-line reader make of a file."""
    out: list[object] = []
    for whole in (True, False):
        reader = _Reader(text, strict=True, limits=False, progress=None, whole_columns=whole)
        try:
            reader.read()
            out.append(reader.election())
        except PabulibError as e:
            out.append((e.line, e.message))
    return out[0], out[1]


@pytest.mark.parametrize("path", SHARED, ids=[p.stem for p in SHARED])
def test_whole_column_reading_equals_line_by_line_on_shared_files(path: Path) -> None:
    whole, by_line = _both_readers(path.read_text(encoding="utf-8-sig"))
    assert whole == by_line


@settings(max_examples=200, deadline=None)
@given(
    ids=st.sampled_from([["1", "2", "10", "11"], ["a", "b", "c", "d"], ["7", "07", "x", "12"]]),
    ordinal=st.booleans(),
    votes=st.lists(
        st.tuples(
            st.sampled_from(["v1", "v2", "v3", "v4", "v5", " v6", ""]),
            st.lists(
                st.sampled_from(["1", "2", "10", "11", "a", "b", "07", "7", " 2", "", "q"]),
                max_size=4,
            ),
            st.sampled_from(["", ";x"]),
        ),
        min_size=2,
        max_size=8,
    ),
)
def test_whole_column_reading_equals_line_by_line(
    ids: list[str], ordinal: bool, votes: list[tuple[str, list[str], str]]
) -> None:
    # the same election, or the same first error (line and message), whatever the votes
    vote_type = "ordinal" if ordinal else "approval"
    lines = ["META", "key;value", "budget;100", f"vote_type;{vote_type}"]
    lines += ["PROJECTS", "project_id;cost"] + [f"{i};10" for i in ids]
    lines += ["VOTES", "voter_id;vote"] + [f"{v};{','.join(n)}{tail}" for v, n, tail in votes]
    whole, by_line = _both_readers("\n".join(lines) + "\n")
    assert whole == by_line


def test_whole_column_reading_of_many_projects_equals_line_by_line() -> None:
    # ballots of more than 64 projects are compared as several 64-bit masks: sets written in
    # other orders, sets differing only in a high project, blank ballots
    rng = random.Random(7)
    ids = [str(i) for i in range(1, 151)]
    lines = ["META", "key;value", "budget;1000", "vote_type;approval"]
    lines += ["PROJECTS", "project_id;cost"] + [f"{i};10" for i in ids]
    lines += ["VOTES", "voter_id;vote;age"]
    sets = [rng.sample(ids, rng.randint(1, 6)) for _ in range(40)] + [["1", "150"], ["1", "149"]]
    used: set[frozenset[str]] = set()
    for v in range(600):
        chosen = list(rng.choice(sets + [[]]))
        rng.shuffle(chosen)
        used.add(frozenset(chosen))
        lines.append(f"{v};{','.join(chosen)};{20 + v % 50}")
    whole, by_line = _both_readers("\n".join(lines) + "\n")
    assert isinstance(whole, Election)
    assert whole == by_line
    assert len(whole.groups) == len(used)
