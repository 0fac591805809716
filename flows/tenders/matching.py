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
prefix and region, a bit per subscription) and numpy, so a notice is checked against only
the subscriptions its categories and regions can reach. ``bench/tenders.py`` times both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

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


class Matcher:
    """Many subscriptions, indexed once; :meth:`match` gives a notice's subscriptions.

    Categories, CPV prefixes, regions and the VCSE-only flag are bit sets (a Python integer
    each, one bit per subscription): OR-ing a notice's few sets gives its candidates. Value
    bands and keywords are then checked for all candidates at once with numpy: bands as two
    arrays of bounds, keywords by counting, per subscription, how many of its keywords the
    notice has (looked up from the notice's words, not tried one keyword at a time)."""

    def __init__(self, subs: Sequence[Criteria]) -> None:
        self.subs = list(subs)
        count = len(self.subs)
        self.ids = np.array([s.id for s in self.subs], dtype=np.int64)
        self.low = np.array(
            [-np.inf if s.min_value is None else s.min_value for s in self.subs], dtype=float
        )
        self.high = np.array(
            [np.inf if s.max_value is None else s.max_value for s in self.subs], dtype=float
        )
        self.any_category = 0
        self.by_category: dict[str, int] = {}
        self.by_prefix: dict[str, int] = {}
        self.all_regions = 0
        self.by_region: dict[str, int] = dict.fromkeys(REGION_IDS, 0)
        self.vcse_only = 0
        # keyword phrase -> the subscriptions needing it; phrases by their first word
        wanted: dict[str, list[int]] = {}
        self.keyword_counts = np.zeros(count, dtype=np.int32)
        for index, sub in enumerate(self.subs):
            bit = 1 << index
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
            phrases = {phrase(k) for k in sub.keywords}
            self.keyword_counts[index] = len(phrases)
            for p in phrases:
                wanted.setdefault(p, []).append(index)
        self.needing = {p: np.array(v, dtype=np.int64) for p, v in wanted.items()}
        self.by_first_word: dict[str, list[str]] = {}
        for p in wanted:
            self.by_first_word.setdefault(p.split(" ")[0] if p else "", []).append(p)
        self.prefix_lengths = sorted({len(p) for p in self.by_prefix})
        self.nbytes = max(1, (count + 7) // 8)

    def _indexes(self, mask: int) -> NDArray[np.int64]:
        bits = np.unpackbits(
            np.frombuffer(mask.to_bytes(self.nbytes, "little"), dtype=np.uint8),
            bitorder="little",
        )
        return np.flatnonzero(bits).astype(np.int64)

    def match(self, notice: Notice, now: datetime) -> list[int]:
        """The ids of the subscriptions ``notice`` matches (in subscription order)."""
        if not notice.is_open(now) or not self.subs:
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
        candidates = self._indexes(mask)
        if not len(candidates):
            return []
        keep = np.ones(len(candidates), dtype=bool)
        low, high = notice.low, notice.high
        if low is not None and high is not None:
            keep &= (self.high[candidates] >= low) & (self.low[candidates] <= high)
        if self.needing:
            has = np.zeros(len(self.subs), dtype=np.int32)
            text = NoticeText(notice)
            for word in set(text.padded.split()):
                for p in self.by_first_word.get(word, ()):
                    if f" {p} " in text.padded:
                        has[self.needing[p]] += 1
            keep &= has[candidates] == self.keyword_counts[candidates]
        return [int(i) for i in self.ids[candidates[keep]]]
