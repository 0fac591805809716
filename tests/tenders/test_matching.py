"""The matching rules, one by one, and the indexed matcher against the plain one on many
random subscriptions and the real notices."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime

from flows.tenders.matching import Criteria, Matcher, matches, naive_matches
from flows.tenders.normalise import normalise
from flows.tenders.ocds import Compiler, read_file
from flows.tenders.taxonomy import CATEGORY_IDS, REGION_IDS, category_of, region_of
from tests.tenders.support import AFTER_PAGE, CF_PAGE, shared

NOW = datetime(2025, 1, 24, 9, 0, tzinfo=UTC)


def notices() -> list:  # type: ignore[type-arg]
    parsed = read_file(shared(CF_PAGE.name))
    by = defaultdict(list)
    for r in parsed.releases:
        by[r.ocid].append(r)
    compiler = Compiler()
    return [normalise(compiler.compile(v)) for v in by.values()]


def test_each_rule() -> None:
    base = next(n for n in notices() if n.is_open(NOW) and n.title.startswith("Linking"))
    assert base.categories == ("environment",) and base.regions == ("TLE",)
    assert (base.min_value, base.max_value) == (5000.0, 22000.0)
    sub = Criteria(id=1)
    assert matches(base, sub, NOW)
    assert not matches(base, sub, base.deadline)  # type: ignore[arg-type]  # closed by then
    assert not matches(replace(base, status="complete"), sub, NOW)
    assert matches(base, replace(sub, categories=frozenset({"environment", "youth"})), NOW)
    assert not matches(base, replace(sub, categories=frozenset({"youth"})), NOW)
    assert matches(base, replace(sub, categories=frozenset({"youth"}), cpv=(base.cpv[0][:4],)),
                   NOW)
    assert matches(base, replace(sub, regions=frozenset({"TLE", "TLL"})), NOW)
    assert not matches(base, replace(sub, regions=frozenset({"TLL"})), NOW)
    assert matches(replace(base, regions=()), replace(sub, regions=frozenset({"TLL"})), NOW)
    assert matches(base, replace(sub, min_value=20000), NOW)  # ranges overlap
    assert not matches(base, replace(sub, min_value=22001), NOW)
    assert not matches(base, replace(sub, max_value=4999), NOW)
    unknown = replace(base, amount=None, min_value=None, max_value=None)
    assert matches(unknown, replace(sub, min_value=1e9), NOW)  # unknown value matches
    assert matches(base, replace(sub, vcse_only=True), NOW) is bool(base.vcse)
    assert matches(replace(base, vcse=False, reserved=True), replace(sub, vcse_only=True), NOW)
    text = replace(base, title="Youth Work services", description="Young people's clubs")
    assert matches(text, replace(sub, keywords=("youth work",)), NOW)
    assert matches(text, replace(sub, keywords=("YOUTH", "people's")), NOW)
    assert not matches(text, replace(sub, keywords=("youth", "sport")), NOW)
    assert not matches(replace(text, title="youthworker"), replace(sub, keywords=("youth",)), NOW)


def test_taxonomy() -> None:
    assert category_of("85311300") == "youth"  # longest prefix beats social work (853)
    assert category_of("85300000") == "social_care"
    assert category_of("80110000") == "childcare" and category_of("80200000") == "education"
    assert category_of("03000000") == "other"
    assert region_of("UKM71") == ("TLM",) and region_of("TLL") == ("TLL",)
    assert region_of("Yorkshire and the Humber") == ("TLE",)
    assert region_of("UK") == () and region_of("Europe") is None and region_of(None) is None
    assert len(region_of("England") or ()) == 9


def random_criteria(rng: random.Random, n: int) -> list[Criteria]:
    words = ["services", "support", "school", "council", "works", "youth", "provision", "the"]
    subs = []
    for i in range(n):
        low = rng.choice([None, None, 1000.0, 25000.0, 100000.0])
        subs.append(
            Criteria(
                id=i + 1,
                categories=frozenset(rng.sample(CATEGORY_IDS, rng.choice([0, 1, 2, 3]))),
                cpv=tuple(rng.sample(["45", "4521", "7731", "85", "9"], rng.choice([0, 0, 1]))),
                regions=frozenset(rng.sample(REGION_IDS, rng.choice([0, 1, 2, 4]))),
                min_value=low,
                max_value=rng.choice([None, None, 50000.0, 1e6]) if low is None else low * 20,
                vcse_only=rng.random() < 0.2,
                keywords=tuple(rng.sample(words, rng.choice([0, 0, 0, 1, 2]))),
            )
        )
    return subs


def test_indexed_matcher_agrees_with_the_plain_rules() -> None:
    rng = random.Random(15)
    real = notices()
    subs = random_criteria(rng, 2000)
    matcher = Matcher(subs)
    for now in (NOW, AFTER_PAGE.replace(day=10)):
        expected = naive_matches(real, subs, now)
        got = {n.ocid: matcher.match(n, now) for n in real if n.is_open(now)}
        assert got == expected
        assert sum(len(v) for v in got.values()) > 100  # the comparison means something


def test_dates_show_their_year_only_when_it_is_not_this_one() -> None:
    from flows.catalogue import load_catalogue
    from flows.tenders.alerts import AlertTexts

    catalogue = load_catalogue()
    when = datetime(2025, 3, 12, 12, 0, tzinfo=UTC)  # 12:00 GMT
    assert AlertTexts(catalogue, "en", now=NOW).date(when) == "12 March 12:00"
    assert AlertTexts(catalogue, "cy", now=NOW).date(when, False) == "12 Mawrth"
    summer = datetime(2026, 7, 1, 11, 0, tzinfo=UTC)  # 12:00 BST, next year
    assert AlertTexts(catalogue, "en", now=NOW).date(summer) == "1 July 2026 12:00"
