"""flows/pb/report.py: amounts, plurals and the explanation's wording for each rule."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from flows.pb.model import natural_key
from flows.pb.pabulib import read_pabulib
from flows.pb.report import Money, decimal_amount, explain_lines, plural
from flows.pb.rules import RULES, Rule, tally
from tests.pb import DATA_DIR

CASES = Path(__file__).resolve().parent / "cases"


@pytest.mark.parametrize(
    ("x", "cents"),
    [
        (Fraction(25000, 21), "1190.48"),
        (Fraction(1, 200), "0.01"),  # half a cent rounds up
        (Fraction(-1, 200), "-0.01"),
        (Fraction(10**15 + 1, 3), "333333333333333.67"),  # no float on the way
        (Fraction(7), "7.00"),
    ],
)
def test_decimal_amounts_are_exact_cents(x: Fraction, cents: str) -> None:
    assert decimal_amount(x) == Decimal(cents)


def test_plurals_and_money() -> None:
    assert plural(1, "voter") == "1 voter" and plural(2, "voter") == "2 voters"
    assert plural(1_000, "vote") == "1,000 votes"
    election = read_pabulib(CASES / "free_removed_by_city.pb")
    assert Money(election)(Fraction(99500)) == "99,500.00 EUR"
    assert Money(read_pabulib(CASES / "free_minimal_issue17.pb"))(Fraction(1, 3)) == "0.33"


def test_ids_sort_as_numbers() -> None:
    ids = ["11", "2", "p10", "p2", "b", "a", "1a", "10"]
    assert sorted(ids, key=natural_key) == ["1a", "2", "10", "11", "a", "b", "p2", "p10"]


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_is_explained_with_every_project(rule: Rule) -> None:
    election = read_pabulib(CASES / "free_removed_by_city.pb")
    result = tally(election, rule)
    text = "\n".join(explain_lines(election, result))
    assert text.startswith("How ")
    for p in election.projects:
        assert f"{p.id} ({p.name})" in text
    assert "1 voters" not in text and "1 supporters " not in text


@pytest.mark.parametrize("name", ["Switzerland_Zurich_D10", "Netherlands_Assen_2024"])
@pytest.mark.parametrize("rule", ["greedy", "mes"])
def test_singular_payments_read_as_singular(name: str, rule: Rule) -> None:
    path = DATA_DIR / f"{name}.pb"
    if not path.is_file():
        pytest.skip(f"shared Pabulib data not found at {path}")
    election = read_pabulib(path)
    text = "\n".join(explain_lines(election, tally(election, rule)))
    one_each = r"(?<![\d,])1 (supporter )?paid (all they had left, )?[\d,.]+( [A-Z]{3})? each"
    assert re.search(one_each, "1 supporter paid 333.33 CHF each")  # what it must not say
    assert not re.search(one_each, text)
    assert not re.search(r"(?<![\d,])1 (voters|supporters|votes)\b", text)
