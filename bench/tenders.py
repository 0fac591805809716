"""Benchmark tender matching: 10,000 subscriptions against 1,000 open notices.

    python bench/tenders.py [--subscriptions 10000] [--notices 1000] [--seed 15]

The notices are the shared Contracts Finder page's 94 processes (../shared/data/ocds),
repeated with seeded variations (category, region, value, deadline, VCSE flag) to the count
asked; the subscriptions are seeded random filters of the kinds people choose by chat (a few
categories, sometimes a CPV prefix, regions or all of the UK, a value band, VCSE-only, 0-2
keywords). It prints, in one run, the indexed matcher's time (index built once, then every
notice matched) beside a plain nested loop over every (notice, subscription) pair, the ratio,
and whether both found the same matches. Goal: the indexed matcher under 1 s. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.tenders.matching import Criteria, Matcher, naive_matches  # noqa: E402
from flows.tenders.normalise import Notice, normalise  # noqa: E402
from flows.tenders.ocds import Compiler, read_file  # noqa: E402
from flows.tenders.taxonomy import CATEGORY_IDS, REGION_IDS  # noqa: E402

PAGE = ROOT.parent / "shared" / "data" / "ocds" / "cf_ocds_search_2025-01-23_page1_100releases.json"
NOW = datetime(2025, 1, 24, 9, 0, tzinfo=UTC)
WORDS = ["services", "support", "youth", "school", "community", "works", "provision", "care"]


def real_notices() -> list[Notice]:
    by = defaultdict(list)
    for release in read_file(PAGE).releases:
        by[release.ocid].append(release)
    compiler = Compiler()
    return [normalise(compiler.compile(v)) for v in by.values()]


def notices(count: int, rng: random.Random) -> list[Notice]:
    base = real_notices()
    out = []
    for i in range(count):
        n = base[i % len(base)]
        amount = rng.choice([None, rng.randrange(1, 2000) * 1000.0])
        out.append(
            replace(
                n,
                ocid=f"{n.ocid}-{i}",
                status="active",
                deadline=NOW + timedelta(days=rng.randrange(1, 60)),
                categories=tuple(rng.sample(CATEGORY_IDS, rng.choice([1, 1, 2]))),
                regions=tuple(rng.sample(REGION_IDS, rng.choice([0, 1, 1, 2, 9]))),
                amount=amount,
                min_value=None,
                max_value=None,
                vcse=rng.random() < 0.3,
            )
        )
    return out


def subscriptions(count: int, rng: random.Random) -> list[Criteria]:
    subs = []
    for i in range(count):
        low = rng.choice([None, None, 0.0, 25000.0, 100000.0, 500000.0])
        subs.append(
            Criteria(
                id=i + 1,
                categories=frozenset(rng.sample(CATEGORY_IDS, rng.choice([1, 2, 3]))),
                cpv=tuple(rng.sample(["45", "4521", "7731", "8531", "60"], rng.choice([0, 0, 1]))),
                regions=frozenset(rng.sample(REGION_IDS, rng.choice([0, 1, 1, 2]))),
                min_value=low,
                max_value=None if low is None or low >= 500000 else low * 4 + 25000,
                vcse_only=rng.random() < 0.25,
                keywords=tuple(rng.sample(WORDS, rng.choice([0, 0, 0, 1, 2]))),
            )
        )
    return subs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--notices", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    if not PAGE.exists():
        sys.exit(f"the shared data is missing: {PAGE}")
    rng = random.Random(args.seed)
    ns = notices(args.notices, rng)
    subs = subscriptions(args.subscriptions, rng)

    start = time.perf_counter()
    matcher = Matcher(subs)
    built = time.perf_counter()
    indexed = {n.ocid: matcher.match(n, NOW) for n in ns if n.is_open(NOW)}
    matched = time.perf_counter()
    naive = naive_matches(ns, subs, NOW)
    done = time.perf_counter()

    pairs = sum(len(v) for v in indexed.values())
    ours, plain = matched - start, done - matched
    print(f"{args.subscriptions:,} subscriptions x {args.notices:,} notices: {pairs:,} matches")
    print(f"indexed matcher: {ours:.3f} s (index {built - start:.3f} s, matching "
          f"{matched - built:.3f} s)  goal: under 1 s")
    print(f"nested loop:     {plain:.3f} s")
    print(f"ratio:           {plain / ours:.1f}x faster")
    print(f"same matches:    {'yes' if indexed == naive else 'NO'}")


if __name__ == "__main__":
    main()
