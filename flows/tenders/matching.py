"""Which notices match which subscriptions. The rules (also in the README, "Tender alerts"):

A notice matches a subscription when all of these hold:

1. it is **open**: status ``active`` and a deadline still in the future;
2. a **category** overlaps: one of the notice's categories is one the subscriber chose, or
   one of its CPV codes starts with a CPV prefix the subscriber gave (a subscription with
   neither matches every category);
3. a **region** overlaps: the notice names none (or the whole UK), the subscriber chose all
   of the UK, or they share a region;
4. the **value** is in the band: the notice's value (or its min-max range) overlaps the
   subscriber's band; a notice without a value matches every band;
5. if the subscriber asked for **VCSE-suitable only**: the notice says it is suitable for
   VCSEs, or participation is reserved;
6. every **keyword** appears in the title or description as whole words, ignoring case
   ("youth work" matches "Youth Work services", not "youthworker").

:func:`matches` says it for one pair, plainly. :class:`Matcher` answers the same for many
subscriptions at once through bit-set indexes (one Python integer per category, CPV
prefix and region, a bit per subscription), so a notice is checked against only the
subscriptions its categories and regions can reach. ``bench/tenders.py`` times both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from flows.tenders.normalise import Notice
from flows.tenders.taxonomy import REGION_IDS

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


@dataclass(frozen=True)
class Criteria:
    """One subscription's filters. Empty ``categories`` and ``cpv``: any category; empty
    ``regions``: all of the UK; ``min_value`` / ``max_value`` None: no bound."""

    id: int
    categories: frozenset[str] = frozenset()
    cpv: tuple[str, ...] = ()
    regions: frozenset[str] = frozenset()
    min_value: float | None = None
    max_value: float | None = None
    vcse_only: bool = False
    keywords: tuple[str, ...] = ()


def words(text: str) -> list[str]:
    """Lower-case words, for whole-word keyword matching."""
    return [w.lower() for w in _WORD.findall(text)]


def phrase(keyword: str) -> str:
    """A keyword as the space-separated words it must appear as."""
    return " ".join(words(keyword))


class NoticeText:
    """A notice's title and description as one space-padded string of lower-case words:
    a keyword phrase is in it as whole words when `` <phrase> `` is a substring."""

    def __init__(self, notice: Notice) -> None:
        self.padded = " " + " ".join(words(f"{notice.title} {notice.description}")) + " "

    def has(self, keyword: str) -> bool:
        wanted = phrase(keyword)
        return bool(wanted) and f" {wanted} " in self.padded


def _value_ok(notice: Notice, low: float | None, high: float | None) -> bool:
    n_low, n_high = notice.low, notice.high
    if n_low is None or n_high is None:
        return True  # an unknown value matches every band
    if low is not None and n_high < low:
        return False
    return not (high is not None and n_low > high)


def matches(notice: Notice, sub: Criteria, now: datetime, text: NoticeText | None = None) -> bool:
    """The rules above, for one notice and one subscription."""
    if not notice.is_open(now):
        return False
    if sub.categories or sub.cpv:
        category = bool(sub.categories.intersection(notice.categories))
        prefix = any(code.startswith(p) for code in notice.cpv for p in sub.cpv)
        if not (category or prefix):
            return False
    if notice.regions and sub.regions and not sub.regions.intersection(notice.regions):
        return False
    if not _value_ok(notice, sub.min_value, sub.max_value):
        return False
    if sub.vcse_only and not notice.vcse_suitable:
        return False
    if sub.keywords:
        text = text or NoticeText(notice)
        if not all(text.has(k) for k in sub.keywords):
            return False
    return True


def naive_matches(
    notices: Sequence[Notice], subs: Sequence[Criteria], now: datetime
) -> dict[str, list[int]]:
    """ocid -> subscription ids, by checking every pair (the reference for :class:`Matcher`)."""
    return {
        n.ocid: [s.id for s in subs if matches(n, s, now)] for n in notices if n.is_open(now)
    }


def _bits(mask: int) -> Iterable[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class Matcher:
    """Many subscriptions, indexed once; :meth:`match` gives a notice's subscriptions."""

    def __init__(self, subs: Sequence[Criteria]) -> None:
        self.subs = list(subs)
        self.any_category = 0
        self.by_category: dict[str, int] = {}
        self.by_prefix: dict[str, int] = {}
        self.all_regions = 0
        self.by_region: dict[str, int] = dict.fromkeys(REGION_IDS, 0)
        self.everyone = 0
        self.vcse_only = 0
        self.detailed = 0  # subscriptions with a value band or keywords: checked one by one
        for index, sub in enumerate(self.subs):
            bit = 1 << index
            self.everyone |= bit
            if not sub.categories and not sub.cpv:
                self.any_category |= bit
            for category in sub.categories:
                self.by_category[category] = self.by_category.get(category, 0) | bit
            for prefix in sub.cpv:
                self.by_prefix[prefix] = self.by_prefix.get(prefix, 0) | bit
            if not sub.regions:
                self.all_regions |= bit
            for region in sub.regions:
                self.by_region[region] = self.by_region.get(region, 0) | bit
            if sub.vcse_only:
                self.vcse_only |= bit
            if sub.keywords or sub.min_value is not None or sub.max_value is not None:
                self.detailed |= bit
        self.prefix_lengths = sorted({len(p) for p in self.by_prefix})

    def match(self, notice: Notice, now: datetime) -> list[int]:
        """The ids of the subscriptions ``notice`` matches (in subscription order)."""
        if not notice.is_open(now):
            return []
        mask = self.any_category
        for category in notice.categories:
            mask |= self.by_category.get(category, 0)
        for code in notice.cpv:
            for length in self.prefix_lengths:
                mask |= self.by_prefix.get(code[:length], 0)
        if notice.regions:
            places = self.all_regions
            for region in notice.regions:
                places |= self.by_region.get(region, 0)
            mask &= places
        if not notice.vcse_suitable:
            mask &= ~self.vcse_only
        found = []
        check = mask & self.detailed
        text: NoticeText | None = None
        for index in _bits(mask):
            sub = self.subs[index]
            if check >> index & 1:
                if not _value_ok(notice, sub.min_value, sub.max_value):
                    continue
                if sub.keywords:
                    text = text or NoticeText(notice)
                    if not all(text.has(k) for k in sub.keywords):
                        continue
            found.append(sub.id)
        return found
