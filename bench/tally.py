"""Benchmark civicbot's PB tally engine against pabutools (the reference).

    python bench/tally.py [--rule mes-add1|mes|greedy|phragmen] [--cap-seconds 60]
                          [--ours-cap-seconds 600] [--files NAME ...] [--no-reference]
                          [--repeat 3] [--synthetic-voters 100000] [--cpu]

For each shared Pabulib file (../shared/data/pabulib) and a seeded synthetic election
(100,000 voters by default, 60 projects, 3-7 approvals each; named synthetic_100k_60) it
prints our time (parsing included, measured inside the process that parses and tallies;
the best of --repeat runs) and how much of it was parsing, pabutools' time (parsing
included) and the ratio, and whether both selected the same projects. Times are wall
seconds, or with --cpu the CPU seconds of the process (steadier on a shared, busy machine).
Each side runs in a forked child process, one after the other, killed at its cap (wall
time); a run that would exceed it is reported as "> cap". Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.pb.pabulib import read_pabulib  # noqa: E402
from flows.pb.rules import RuleNotApplicable, selected_ids, tally  # noqa: E402
from tests.pb import DATA_DIR, pabutools_tally  # noqa: E402


def synthetic(path: Path, voters: int = 100_000, projects: int = 60, seed: int = 2026) -> None:
    rng = random.Random(seed)
    costs = [rng.randrange(20, 400) * 1000 for _ in range(projects)]
    lines = ["META", "key;value", f"num_projects;{projects}", f"num_votes;{voters}"]
    lines += [f"budget;{sum(costs) // 4}", "vote_type;approval", "PROJECTS", "project_id;cost"]
    lines += [f"{j + 1};{c}" for j, c in enumerate(costs)]
    lines += ["VOTES", "voter_id;vote"]
    popularity = [rng.random() ** 2 + 0.05 for _ in range(projects)]
    for v in range(voters):
        k = rng.randint(3, 7)
        chosen: set[int] = set()
        while len(chosen) < k:
            chosen.add(rng.choices(range(projects), popularity)[0] + 1)
        lines.append(f"{v + 1};" + ",".join(map(str, sorted(chosen))))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


_clock = time.perf_counter  # time.process_time with --cpu (set before the children fork)


def _ref(path: str, rule: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    start = _clock()
    result = pabutools_tally(path, rule)  # type: ignore[arg-type]
    queue.put((_clock() - start, result))


def _ours(path: str, rule: str, queue: mp.Queue, repeat: int = 1) -> None:  # type: ignore[type-arg]
    best = (math.inf, math.inf)
    result: list[str] | None = None
    for _ in range(repeat):
        start = _clock()
        election = read_pabulib(path)
        parsed = _clock()
        try:
            result = selected_ids(election, tally(election, rule))  # type: ignore[arg-type]
        except RuleNotApplicable:
            result = None
        total = _clock() - start
        if total < best[0]:
            best = (total, parsed - start)
    queue.put((best[0], result, best[1]))


def _timed(
    target: object, path: Path, rule: str, cap: float, *extra: object
) -> tuple[float, object] | tuple[float, object, float] | None:
    """(seconds, result[, parse seconds]) of target(path, rule) in a forked child, or None
    past the cap."""
    ctx = mp.get_context("fork")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    proc = ctx.Process(target=target, args=(str(path), rule, queue, *extra))  # type: ignore[arg-type]
    proc.start()
    deadline = time.monotonic() + cap
    while proc.is_alive() and queue.empty() and time.monotonic() < deadline:
        proc.join(0.05)
    if queue.empty():
        proc.kill()
        proc.join()
        return None
    got = queue.get()
    proc.join()
    return got  # type: ignore[no-any-return]


def reference(path: Path, rule: str, cap: float) -> tuple[float, list[str]] | None:
    return _timed(_ref, path, rule, cap)  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rule", default="mes-add1", choices=["greedy", "mes", "mes-add1", "phragmen"])
    ap.add_argument("--cap-seconds", type=float, default=60.0, help="pabutools time cap per run")
    ap.add_argument(
        "--ours-cap-seconds", type=float, default=600.0, help="civicbot time cap per run"
    )
    ap.add_argument("--files", nargs="*", help="file stems to run (default: all + synthetic)")
    ap.add_argument("--no-reference", action="store_true", help="only time civicbot")
    ap.add_argument("--repeat", type=int, default=3, help="our runs per file (best shown)")
    ap.add_argument(
        "--synthetic-voters", type=int, default=100_000, help="voters of the synthetic election"
    )
    ap.add_argument("--cpu", action="store_true", help="CPU seconds instead of wall seconds")
    args = ap.parse_args()
    if args.synthetic_voters < 1:
        ap.error("--synthetic-voters must be at least 1")
    global _clock
    _clock = time.process_time if args.cpu else time.perf_counter

    paths = sorted(DATA_DIR.glob("*.pb")) if DATA_DIR.is_dir() else []
    tmp = Path(tempfile.mkdtemp())
    v = args.synthetic_voters
    label = f"{v // 1000}k" if v % 1000 == 0 else str(v)
    synth = tmp / f"synthetic_{label}_60.pb"
    synthetic(synth, voters=v)
    paths.append(synth)
    if args.files:
        paths = [p for p in paths if p.stem in args.files]

    print(
        f"rule={args.rule}; pabutools cap {args.cap_seconds:.0f}s; "
        f"ours cap {args.ours_cap_seconds:.0f}s; {os.cpu_count()} CPUs; "
        f"{'CPU' if args.cpu else 'wall'} seconds"
    )
    print(
        f"{'file':<58} {'voters':>7} {'ours (s)':>9} {'parse':>6} {'pabutools (s)':>14} "
        f"{'ratio':>8}  same"
    )
    for path in paths:
        voters = _voters(path)
        got = _timed(_ours, path, args.rule, args.ours_cap_seconds, args.repeat)
        if got is not None and got[1] is None:
            print(f"{path.stem[:58]:<58} {voters:>7}  n/a: needs approval ballots")
            continue
        ours_txt = f"> {args.ours_cap_seconds:.0f}" if got is None else f"{got[0]:.3f}"
        parse_txt = "" if got is None else f"{got[2]:.3f}"  # type: ignore[misc]
        head = f"{path.stem[:58]:<58} {voters:>7} {ours_txt:>9} {parse_txt:>6}"
        ref = None if args.no_reference else reference(path, args.rule, args.cap_seconds)
        if ref is None:
            note = "skipped" if args.no_reference else f"> {args.cap_seconds:.0f} (cap)"
            # past the cap, the ratio is at least cap / ours
            ratio = "" if args.no_reference or got is None else f">{args.cap_seconds / got[0]:.0f}x"
            print(f"{head} {note:>14} {ratio:>8}", flush=True)
            continue
        t_ref, ref_sel = ref
        if got is None:
            print(f"{head} {t_ref:>14.2f}", flush=True)
            continue
        same = "yes" if ref_sel == got[1] else "NO"
        print(f"{head} {t_ref:>14.2f} {t_ref / got[0]:>7.1f}x  {same}", flush=True)


def _voters(path: Path) -> int:
    """Number of voters, from META num_votes (cheap; the timed runs parse the file)."""
    with path.open(encoding="utf-8-sig") as f:
        for line in f:
            parts = line.strip().split(";")
            if parts[0].strip() == "num_votes" and len(parts) > 1 and parts[1].strip().isdigit():
                return int(parts[1])
            if line.strip().upper() == "PROJECTS":
                break
    return read_pabulib(path).num_voters


if __name__ == "__main__":
    main()
