"""A round's YAML file is read and checked whole: the issue's example is taken as it is, and
every problem is reported with its line; a rule that does not fit the ballot is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.rounds.definition import DefinitionError, parse_round
from tests.rounds.pbcore_support import round_yaml

ISSUE_EXAMPLE = (
    """\
id: riverside-2027
title: {en: "Riverside neighbourhood fund", cy: "Cronfa cymdogaeth Glan-yr-afon"}
wards: all                  # or [W05000870]
budget: 100000
currency: GBP
ballot: {type: approval, min: 1, max: 3}   # knapsack | cumulative (points: 10) | ranked (top: 3)
rule: mes
verification: none          # or phone
phases: {voting_open: "2027-05-01T09:00:00Z", voting_close: "2027-05-31T21:00:00Z"}
projects:
"""
    '  - {id: "1", title: {en: "Benches", cy: "Meinciau"}, cost: 9000, '
    'summary: {en: "Six benches", cy: "Chwe mainc"}}\n'
)


def problems(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        parse_round(text, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def test_the_issue_example_is_read_as_it_is() -> None:
    d = parse_round(ISSUE_EXAMPLE)
    assert d.id == "riverside-2027" and d.wards is None and d.budget == 100000
    # max is a cap: more than the projects there are is allowed (ideas may add projects)
    assert d.ballot == {"type": "approval", "min": 1, "max": 3}
    assert d.rule == "mes" and d.verification == "none" and d.currency == "GBP"
    assert d.voting_open == datetime(2027, 5, 1, 9, tzinfo=UTC)
    assert d.voting_close == datetime(2027, 5, 31, 21, tzinfo=UTC)
    [p] = d.projects
    assert (p.id, p.cost, p.title["cy"], p.summary["en"]) == ("1", 9000, "Meinciau", "Six benches")


def test_every_ballot_type_with_the_rules_that_fit_it() -> None:
    for ballot, rules in (
        ("{type: approval, min: 1, max: 3}", ("greedy", "mes", "mes-add1", "phragmen")),
        ("{type: knapsack}", ("greedy", "mes", "mes-add1", "phragmen")),
        ("{type: cumulative, points: 10}", ("greedy", "mes")),
        ("{type: ranked, top: 3}", ("greedy", "mes")),
    ):
        for rule in rules:
            d = parse_round(round_yaml(ballot=ballot, rule=rule))
            assert d.rule == rule and d.ballot["type"] in ballot
    for ballot in ("{type: cumulative, points: 10}", "{type: ranked, top: 3}"):
        for rule in ("mes-add1", "phragmen"):
            [message] = problems(round_yaml(ballot=ballot, rule=rule))
            assert message.startswith("line 7: rule: ") and "needs approval ballots" in message


def test_every_problem_is_reported_with_its_line() -> None:
    text = (
        round_yaml(projects=[("1", "Benches", "Meinciau", 9000), ("1", "Trees", "", 70000)])
        .replace("budget: 60000", "budget: -5")
        .replace("rule: mes", "rule: borda")
        .replace("verification: none", "verification: email\ncolour: blue")
    )
    found = problems(text)
    assert "line 4: budget: a whole number of pounds from 1 to 1,000,000,000,000" in found
    assert "line 7: rule: one of greedy, mes, mes-add1, phragmen" in found
    assert "line 8: verification: none or phone" in found
    assert any(p.startswith("line 9: unknown field 'colour'") for p in found)
    assert "line 13: projects: id '1' is used twice" in found
    assert "line 13: project 1 title: the cy text is missing or empty" in found
    assert found == sorted(found, key=lambda p: int(p.split(":")[0].split()[1]))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            (
                "ballot: {type: approval, min: 1, max: 3}",
                "ballot: {type: approval, min: 6, max: 9}",
            ),
            "line 6: ballot: min 6 is more than the 5 projects",
        ),
        (
            (
                "ballot: {type: approval, min: 1, max: 3}",
                "ballot: {type: approval, min: 3, max: 2}",
            ),
            "line 6: ballot: max is a whole number, at least min",
        ),
        (
            ("ballot: {type: approval, min: 1, max: 3}", "ballot: {type: knapsack, max: 3}"),
            "line 6: ballot: 'max' does not go with type knapsack (it takes type)",
        ),
        (
            ("ballot: {type: approval, min: 1, max: 3}", "ballot: {type: cumulative}"),
            "line 6: ballot: cumulative needs points, a whole number from 1 to 1000",
        ),
        (
            ("ballot: {type: approval, min: 1, max: 3}", "ballot: {type: ranked, top: 0}"),
            "line 6: ballot: ranked needs top, a whole number, at least 1",
        ),
        (
            ("ballot: {type: approval, min: 1, max: 3}", "ballot: {type: borda}"),
            "line 6: ballot: give {type: ...} with type approval, knapsack, cumulative, ranked",
        ),
        (
            ('voting_close: "2026-02-28T21:00:00Z"', 'voting_close: "2026-01-28T21:00:00Z"'),
            "line 9: phases: voting_close must be after voting_open",
        ),
        (
            (', voting_close: "2026-02-28T21:00:00Z"', ""),
            "line 9: phases: voting_close is missing (the voting pair is required)",
        ),
        (
            ("{voting_open", '{proposals_open: "2026-01-10T09:00Z", voting_open'),
            "line 9: phases: give proposals_open and proposals_close together",
        ),
        (
            (
                "{voting_open",
                '{proposals_open: "2026-01-10T09:00Z", proposals_close: '
                '"2026-03-01T09:00Z", voting_open',
            ),
            "line 9: phases: voting_open must be after proposals_close",
        ),
        (
            ("{voting_open", '{ideas_open: "2026-01-10T09:00Z", voting_open'),
            "line 9: phases: unknown phase 'ideas_open' (phases: proposals_open, "
            "proposals_close, voting_open, voting_close)",
        ),
        (
            ("cost: 50000", "cost: 500000"),
            "line 13: project 3: costs 500,000, more than the budget 60,000",
        ),
        (("cost: 50000", "cost: 0"), "line 13: project 3: cost is a whole number above 0"),
        (
            ('summary: {en: "About Lights"', 'summary: {en: "' + "x" * 301 + '"'),
            "line 13: project 3 summary: the en text is over 300 characters",
        ),
        (
            ("id: riverside-2027", "id: Riverside 2027"),
            "line 1: id: use 1-64 lower-case letters, digits, - and _ (like riverside-2027)",
        ),
        (
            ("wards: all", "wards: [NOWHERE]"),
            "line 3: wards: unknown ward 'NOWHERE' (load it with `civicbot wards load`)",
        ),
        (("currency: GBP", "currency: pounds"), "line 5: currency: a three-letter code like GBP"),
    ],
)
def test_one_problem(change: tuple[str, str], expected: str) -> None:
    text = round_yaml()
    assert change[0] in text
    found = problems(text.replace(*change), known_wards={"DEMO-CATHAYS"})
    assert expected in found, found


def test_a_project_ward_must_be_in_the_round() -> None:
    text = round_yaml(wards="[DEMO-CATHAYS]").replace(
        "cost: 9000,", "cost: 9000, ward: DEMO-SPLOTT,"
    )
    assert problems(text) == [
        "line 11: project 1: ward 'DEMO-SPLOTT' is not one of the round's wards"
    ]


def test_a_voting_close_in_the_past_is_refused_when_now_is_given() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert problems(round_yaml(), now=now) == ["line 9: phases: voting_close is in the past"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id: x\ntitle: {en: [unclosed\n", "line 3: not valid YAML"),
        ("- just\n- a list\n", "line 1: expected a mapping"),
        ("", "line 1: expected a mapping"),
        ("id: a\nid: b\n", "line 2: 'id' is given twice"),
    ],
)
def test_not_a_round_file(text: str, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(text)), problems(text)


def test_a_huge_file_is_refused_before_it_is_read() -> None:
    assert problems("#" * 300_000) == ["line 1: the file is larger than 262144 bytes"]
