"""Reading, checking and writing Pabulib `.pb` files (https://pabulib.org/format).

A `.pb` file has three `;`-separated sections, each introduced by its name and a header row:
META (`key;value`), PROJECTS (`project_id;cost;...`) and VOTES (`voter_id;vote;...`).

`parse_pabulib` builds an `Election` and raises `PabulibError` (with a 1-based line number) on
the first problem that makes the file unusable. `check_pabulib` reads the whole file and
returns every problem it finds, including ballots that break the limits given in META.
Identical ballots are grouped while reading, which is what makes large files cheap to tally.

What is wrong is refused: a negative cost, a project listed twice, a voter who votes twice, a
project named twice in one ballot, a vote for an unknown project, a META section without its
`key;value` header row (pabutools would silently lose its first row). What is only incomplete
is read as pabutools reads it, with a warning that names the line and says what was assumed
(`Election.warnings`): META without `num_projects` or `num_votes`, counts that do not match the
file (excerpts of real files), a row whose last optional cells are missing, and a cumulative or
scoring vote that names no project and has no `points` cell (a blank ballot).
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import functools
import gc
import itertools
import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from flows.pb.model import BallotGroup, Election, Issue, Project, Severity, VoteType

ProgressFn = Callable[[int, int], None]
"""Called as `progress(lines_done, lines_total)` while a file is read."""

REQUIRED_META = ("budget", "vote_type")
# pabutools does not need these: when missing, the reader counts what the file holds
COUNT_META = ("num_projects", "num_votes")
RECOMMENDED_META = ("description", "country", "unit", "instance", "rule", "date_begin", "date_end")
_VOTE_TYPES: dict[str, VoteType] = {
    "approval": "approval",
    "choose-1": "approval",
    "cumulative": "cumulative",
    "scoring": "scoring",
    "ordinal": "ordinal",
}
_SECTIONS = ("meta", "projects", "votes")
_POWERS_OF_TEN = np.array([10**k for k in range(19)], dtype=np.int64)
IntArray = npt.NDArray[np.int64]
_PROGRESS_EVERY = 4096


class PabulibError(ValueError):
    """A Pabulib file that cannot be used; `line` is 1-based (None when not tied to a line)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


# Amounts (costs, budgets, points) above this are refused: no real PB round comes near it, and
# the tally needs amounts that fit a float64 with room to spare.
MAX_AMOUNT = 10**15
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")


def _number(text: str) -> Fraction:
    """Parse a Pabulib number exactly (`,` is accepted as the decimal separator).

    Raises ValueError whose message completes "... is ...": "not a number" (also for
    anything over 64 characters, or an exponent of more than 3 digits, which would take
    Fraction minutes to expand) or "too large".
    """
    cleaned = text.strip().replace(",", ".")
    if len(cleaned) > 64:
        raise ValueError("not a number (over 64 characters)")
    if not _NUMBER.fullmatch(cleaned):
        raise ValueError("not a number")
    value = Fraction(cleaned)
    if abs(value) > MAX_AMOUNT:
        raise ValueError(f"too large (at most {MAX_AMOUNT:,})")
    return value


def _show(raw: str) -> str:
    """A cell as quoted in a message: cut short if long."""
    return raw if len(raw) <= 40 else raw[:37] + "..."


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" if n == 1 else f"{n:,} {what}s"


def _lines(lines: list[int], shown: int = 5) -> str:
    """'3, 8, 9' or '3, 8, 9, 12, 15 and 40 more'."""
    head = ", ".join(str(n) for n in lines[:shown])
    return head if len(lines) <= shown else f"{head} and {len(lines) - shown:,} more"


def _split(line: str) -> list[str]:
    if '"' in line:
        return next(csv.reader([line], delimiter=";"))
    return line.split(";")


class _Reader:
    """One pass over the file. In strict mode the first error raises `PabulibError`."""

    def __init__(
        self,
        text: str,
        *,
        strict: bool,
        limits: bool,
        progress: ProgressFn | None,
        whole_columns: bool = True,
    ):
        self.lines = text.splitlines()
        self.strict = strict
        self.limits = limits
        self.whole_columns = whole_columns  # False: read votes line by line only (tests)
        self.progress = progress
        self.issues: list[Issue] = []
        self.assumed: list[Issue] = []  # warnings about what reading an incomplete file assumed
        self.meta: dict[str, str] = {}
        self.meta_lines: dict[str, int] = {}
        self.projects: list[Project] = []
        self.index: dict[str, int] = {}
        self.project_columns: tuple[str, ...] = ()
        self.groups: dict[tuple[tuple[int, ...], tuple[Fraction, ...] | None], list[str]] = {}
        self.num_voters = 0
        # rows of each section, valid or not: the counts META must match (a refused row
        # already has its own error; it must not also make the counts look wrong)
        self.project_rows = 0
        self.vote_rows = 0
        self.meta_end = 0
        self.seen: set[str] = set()
        # refused project rows (id -> index of their error in `issues`) and the vote lines
        # naming them, which are not read and not reported one by one
        self.refused: dict[str, int] = {}
        self.refused_votes: dict[str, list[int]] = {}
        self.unknown: dict[str, list[int]] = {}  # unknown project name -> vote lines
        # VOTES columns, and where each vote read is, so that writing back loses nothing
        self.vote_columns: tuple[str, ...] = ()
        self.vote_line_at: list[int] = []  # index of each vote read, in file order
        self.decoded: dict[str, tuple[int, ...]] = {}  # vote cell -> project indices
        self.bulk_groups: list[BallotGroup] = []  # the groups `bulk_votes` read
        # projects by decimal id (sorted ids, their indices), when all ids are decimal numbers
        self.decimal: tuple[IntArray, IntArray] | None = None
        self.vote_type: VoteType | None = None
        self.budget: Fraction | None = None
        self.votes_line = 0
        self.sections: dict[str, int] = {}

    def problem(self, line: int | None, message: str, severity: Severity = "error") -> None:
        if self.strict and severity == "error":
            raise PabulibError(message, line)
        self.issues.append(Issue(line, severity, message))

    def assume(self, line: int | None, message: str) -> None:
        """A warning about something the file lacks and the reader assumed, as pabutools does."""
        self.problem(line, message, "warning")
        self.assumed.append(Issue(line, "warning", message))

    def read(self) -> None:
        section = ""
        header: list[str] = []
        expect_header = False
        sections_seen: dict[str, int] = {}
        lines = self.lines
        total = len(lines)
        progress = self.progress
        in_votes = False  # in the VOTES section, past its header: try the fast reader first
        bulk = False
        i = -1
        while i + 1 < total:
            i += 1
            if in_votes:
                if bulk:  # first try the whole rest of the section at once
                    bulk = False
                    if self.bulk_votes(i):
                        break
                i = self.plain_votes(i)
                if i >= total:
                    break
            raw = lines[i]
            if progress is not None and i % _PROGRESS_EVERY == 0:
                progress(i, total)
            line = raw.lstrip("\ufeff") if i == 0 else raw
            if not line.strip():
                continue
            lineno = i + 1
            try:
                row = _split(line)
            except csv.Error as e:
                self.problem(lineno, f"cannot split the line into fields: {e}")
                continue
            if len(row) == 1 and not row[0].strip():
                continue
            first = row[0].strip().lower()
            if len(row) == 1 and first in _SECTIONS:
                if first in sections_seen:
                    self.problem(lineno, f"section {first.upper()} appears twice")
                if first == "votes":
                    self.start_votes(lineno, sections_seen)
                elif first == "projects" and "meta" not in sections_seen:
                    self.problem(lineno, "PROJECTS section before the META section")
                section = first
                sections_seen[first] = lineno
                expect_header = True
                in_votes = False
                continue
            if not section:
                self.problem(lineno, "expected a section name (META, PROJECTS or VOTES)")
                section = "junk"
                continue
            if section == "junk":
                continue
            if expect_header:
                header = [h.strip() for h in row]
                expect_header = False
                if section == "meta" and [h.lower() for h in header[:2]] != ["key", "value"]:
                    # pabutools takes this row for the header and silently drops it
                    self.problem(
                        lineno,
                        "the META section has no 'key;value' header row: its first row "
                        f"'{_show(';'.join(row))}' would be taken for the header and lost",
                    )
                    self.meta_row(row, lineno)
                    continue
                self.check_header(section, header, lineno)
                if section == "votes":
                    self.vote_columns = tuple(header)
                    in_votes = self.vote_type in ("approval", "ordinal") and "vote" in header
                    bulk = in_votes and not self.limits and self.whole_columns
                continue
            if section == "meta":
                self.meta_row(row, lineno)
            elif section == "projects":
                self.project_row(row, header, lineno)
            else:
                self.vote_row(row, header, lineno)
        if progress is not None:
            progress(total, total)
        last = len(self.lines)
        if not any(line.strip() for line in self.lines):
            self.problem(None, "the file is empty")
            return
        self.sections = sections_seen
        for name in _SECTIONS:
            if name not in sections_seen:
                self.problem(last, f"the file has no {name.upper()} section (is it truncated?)")
        if expect_header:
            self.problem(last, f"section {section.upper()} has no header row (is it truncated?)")
        self.final_checks(last)

    def check_header(self, section: str, header: list[str], lineno: int) -> None:
        needed = {"meta": (), "projects": ("project_id", "cost"), "votes": ("vote",)}
        if section == "votes" and self.vote_type in ("cumulative", "scoring"):
            needed["votes"] = ("vote", "points")
        for col in needed[section]:
            if col not in header:
                self.problem(lineno, f"{section.upper()} header has no '{col}' column")
        if section == "projects":
            self.project_columns = tuple(header)

    def bulk_votes(self, start: int) -> bool:
        """Read the rest of the VOTES section at once if every line is a plain vote (approval
        or ordinal, every cell there, no quotes, only known projects, each voter once, no
        project twice in a ballot), the common case, with whole-column operations instead of
        a loop per line. Returns False, having read nothing, if any line is not plain; the
        line-by-line readers then read the section and report what is wrong, with its line."""
        lines = self.lines
        end = len(lines)
        while end > start and not lines[end - 1].strip():
            end -= 1
        n = end - start
        if n < 2 or self.groups or self.seen or self.bulk_groups:
            return False
        header = self.vote_columns
        ncols = len(header)
        rows = lines[start:end]
        block = "\n".join(rows)
        if '"' in block or "\ufeff" in block:
            return False
        if set(map(str.count, rows, itertools.repeat(";"))) != {ncols - 1}:
            return False  # a short or long row, a blank line, a section name...
        cells_all = block.replace("\n", ";").split(";")  # row after row, ncols cells each
        if "voter_id" in header:
            voters = list(map(str.strip, cells_all[header.index("voter_id") :: ncols]))
            if "" in voters or len(set(voters)) != n:
                return False
        else:
            voters = [str(self.vote_rows + k + 1) for k in range(n)]
        cells = cells_all[header.index("vote") :: ncols]
        if self.vote_type == "approval":
            groups = self.approval_groups(cells, voters)
            if groups is None:
                return False
            self.bulk_groups = groups
        elif not self.ordinal_groups(cells, voters):
            return False
        self.vote_line_at.extend(range(start, end))
        self.vote_rows += n
        self.num_voters += n
        return True

    def ballot_projects(self, filled: list[str]) -> tuple[IntArray, IntArray] | None:
        """The project indices the non-blank vote cells `filled` name, one after the other,
        and how many each names; None if a name is not exactly a project's id."""
        sizes = np.fromiter(map(str.count, filled, itertools.repeat(",")), np.int64) + 1
        joined = ",".join(filled)
        decimal = self.decimal_ids(joined, int(sizes.sum()))
        if decimal is not None:
            return decimal, sizes
        found = list(map(self.index.get, joined.split(",")))
        if None in found:
            return None  # spaces around names, an unknown project, "a,,b"...
        return np.array(found, dtype=np.int64), sizes

    def approval_groups(self, cells: list[str], voters: list[str]) -> list[BallotGroup] | None:
        """Approval votes grouped by the set of projects they name, groups in order of first
        appearance and voters in file order, with whole-array operations: each ballot is a
        bit mask of projects (sets that are equal have equal masks, whatever the order they
        were written in); None if a cell is not plain (see `bulk_votes`)."""
        n, m = len(cells), len(self.projects)
        words = max(1, (m + 63) // 64)
        masks = np.zeros((n, words), dtype=np.uint64)
        present = list(map(bool, map(str.strip, cells)))  # blank cells are blank ballots
        rows = np.flatnonzero(np.fromiter(present, bool, count=n))
        flat: list[int] = []
        ends: list[int] = []
        if len(rows):
            got = self.ballot_projects(list(itertools.compress(cells, present)))
            if got is None:
                return None
            projects, sizes = got
            # sort within each ballot: one sort of ballot * m + project, already sorted by
            # ballot, so the stable (run-merging) sort is nearly linear
            ballot = np.repeat(np.arange(len(rows), dtype=np.int64), sizes)
            combined = np.sort(ballot * m + projects, kind="stable")
            if bool(np.any(combined[1:] == combined[:-1])):
                return None  # a project twice in one ballot
            ordered = combined % m
            starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
            bits = np.left_shift(np.uint64(1), (ordered % 64).astype(np.uint64))
            for w in range(words):
                in_word = np.where(ordered // 64 == w, bits, np.uint64(0))
                masks[rows, w] = np.add.reduceat(in_word, starts)  # distinct bits: a sum is an or
            flat = ordered.tolist()
            ends = np.cumsum(sizes).tolist()
        # equal masks are one ballot; a stable sort keeps each ballot's rows in file order
        if words == 1:
            by_mask = np.argsort(masks[:, 0], kind="stable")
        else:
            by_mask = np.lexsort(masks.T[::-1])
        sorted_masks = masks[by_mask]
        new = np.ones(n, dtype=bool)
        new[1:] = (sorted_masks[1:] != sorted_masks[:-1]).any(axis=1)
        first_rows = by_mask[new]  # each ballot's first row
        number = np.empty(len(first_rows), dtype=np.int64)  # ballots by first appearance
        number[np.argsort(first_rows, kind="stable")] = np.arange(len(first_rows))
        of_row = np.empty(n, dtype=np.int64)
        of_row[by_mask] = number[np.cumsum(new) - 1]
        by_ballot = np.argsort(of_row, kind="stable")
        bounds = np.searchsorted(of_row[by_ballot], np.arange(len(first_rows) + 1)).tolist()
        voters_in_order = list(map(voters.__getitem__, by_ballot.tolist()))
        # each ballot's projects, from its first row (a row without projects: an empty slice)
        begin = np.zeros(n, dtype=np.int64)
        finish = np.zeros(n, dtype=np.int64)
        if len(rows):
            finish[rows] = ends
            begin[rows] = [0, *ends[:-1]]
        firsts = np.sort(first_rows)
        # built with C-level maps: tens of thousands of ballots (NamedTuple's own __new__ is
        # a Python function; tuple.__new__ makes the same object)
        projects_of = map(
            flat.__getitem__, map(slice, begin[firsts].tolist(), finish[firsts].tolist())
        )
        voters_of = map(voters_in_order.__getitem__, map(slice, bounds[:-1], bounds[1:]))
        make = functools.partial(tuple.__new__, BallotGroup)
        return list(
            map(make, zip(map(tuple, projects_of), itertools.repeat(None), map(tuple, voters_of)))
        )

    def ordinal_groups(self, cells: list[str], voters: list[str]) -> bool:
        """Ordinal votes grouped by the ranking they give (see `approval_groups`); False if
        a cell is not plain."""
        n = len(cells)
        distinct = list(dict.fromkeys(cells))
        filled = [c for c in distinct if c.strip()]
        decoded: dict[str, tuple[int, ...]] = dict.fromkeys(distinct, ())  # blank: a blank ballot
        if filled:
            got = self.ballot_projects(filled)
            if got is None:
                return False
            projects, sizes = got
            m = len(self.projects)
            ballot = np.repeat(np.arange(len(filled), dtype=np.int64), sizes)
            combined = np.sort(ballot * m + projects, kind="stable")
            if bool(np.any(combined[1:] == combined[:-1])):
                return False  # a project twice in one ballot
            flat = projects.tolist()
            ends = np.cumsum(sizes).tolist()
            starts = [0, *ends[:-1]]
            keys = (tuple(flat[a:b]) for a, b in zip(starts, ends, strict=True))
            decoded.update(zip(filled, keys, strict=True))
        # number the ballots, then gather each one's voters in file order (`seen` is not
        # needed: the whole section is read, and its voters are all different)
        ballots = list(dict.fromkeys(decoded.values()))
        number = {k: b for b, k in enumerate(ballots)}
        cell_number = {c: number[k] for c, k in decoded.items()}
        of_row = np.fromiter(map(cell_number.__getitem__, cells), np.int64, count=n)
        by_ballot = np.argsort(of_row, kind="stable")
        bounds = np.searchsorted(of_row[by_ballot], np.arange(len(ballots) + 1)).tolist()
        ordered = [voters[k] for k in by_ballot.tolist()]
        self.bulk_groups = [
            BallotGroup(key, None, tuple(ordered[bounds[b] : bounds[b + 1]]))
            for b, key in enumerate(ballots)
        ]
        return True

    def decimal_ids(self, joined: str, count: int) -> IntArray | None:
        """The project indices named in `joined` (ids separated by commas), read by numpy's
        C parser when every project id is a plain decimal number (as in most Pabulib files);
        None, to read them as text, if not, or if any name is not exactly a project's id."""
        if self.decimal is None:
            ids = list(self.index)
            plain = all(i.isascii() and i.isdigit() and (i == "0" or i[0] != "0") for i in ids)
            if not plain or not ids or max(len(i) for i in ids) > 18:
                self.decimal = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            else:
                values = np.array([int(i) for i in ids], dtype=np.int64)
                order = np.argsort(values)
                self.decimal = (values[order], np.array(list(self.index.values()))[order])
        known, at = self.decimal
        if not len(known):
            return None
        try:
            values = np.fromstring(joined, dtype=np.int64, sep=",")
        except ValueError:
            return None
        if len(values) != count or bool((values < 0).any()):
            return None
        # a name written other than as the id ("012", "+12", " 12") is longer than its digits
        digits = np.maximum(np.searchsorted(_POWERS_OF_TEN, values, side="right"), 1)
        if int(digits.sum()) + count - 1 != len(joined):
            return None
        pos = np.minimum(np.searchsorted(known, values), len(known) - 1)
        if not bool((known[pos] == values).all()):
            return None
        return at[pos]

    def plain_votes(self, start: int) -> int:
        """Read plain vote rows (approval or ordinal, every cell there, only known projects,
        a new voter) from line index `start` on, the common case, without the general
        machinery; return the index of the first line left to the general reader, which
        reports what is wrong with it. Identical vote cells are decoded once."""
        header = self.vote_columns
        ncols = len(header)
        at_vote = header.index("vote")
        at_voter = header.index("voter_id") if "voter_id" in header else -1
        ordinal = self.vote_type == "ordinal"
        lines, total, progress = self.lines, len(self.lines), self.progress
        index, seen, groups, order = self.index, self.seen, self.groups, self.vote_line_at
        decoded = self.decoded
        strip = str.strip
        limits = self.limits
        i = start
        read = 0
        while i < total:
            if progress is not None and i % _PROGRESS_EVERY == 0:
                progress(i, total)
            raw = lines[i]
            if '"' in raw:
                break
            row = raw.split(";")
            if len(row) != ncols:
                break
            if at_voter >= 0:
                voter = strip(row[at_voter])
                if not voter or voter in seen:
                    break
            else:
                voter = str(self.vote_rows + read + 1)
            cell = row[at_vote]
            idx = decoded.get(cell)
            if idx is None:
                text = strip(cell)
                if text:
                    js = list(map(index.get, text.split(",")))
                    if None in js:  # spaces around names, or a name that is not a project
                        js = [index.get(strip(n)) for n in text.split(",")]
                        if None in js:
                            break
                    known = cast("list[int]", js)
                    if len(set(known)) != len(known):
                        break
                    idx = tuple(known) if ordinal else tuple(sorted(known))
                else:
                    idx = ()
                decoded[cell] = idx
            seen.add(voter)
            if limits:
                self.check_limits(list(idx), None, i + 1)
            key = (idx, None)
            group = groups.get(key)
            if group is None:
                groups[key] = [voter]
            else:
                group.append(voter)
            order.append(i)
            read += 1
            i += 1
        self.vote_rows += read
        self.num_voters += read
        return i

    def meta_row(self, row: list[str], lineno: int) -> None:
        if len(row) < 2:
            self.problem(lineno, "META rows must be 'key;value'")
            return
        key = row[0].strip()
        if key in self.meta:
            self.problem(lineno, f"META key '{key}' appears twice", "warning")
        self.meta[key] = row[1].strip()
        self.meta_lines[key] = lineno

    def start_votes(self, lineno: int, sections_seen: dict[str, int]) -> None:
        """VOTES needs the budget and the vote type: check META once, here."""
        self.votes_line = lineno
        if "projects" not in sections_seen:
            self.problem(lineno, "VOTES section before the PROJECTS section")
        if "meta" not in sections_seen:
            return
        meta_end = sections_seen.get("projects", lineno)
        self.meta_end = meta_end
        for key in REQUIRED_META:
            if key not in self.meta:
                self.problem(meta_end, f"META has no '{key}' key")
        for key in RECOMMENDED_META:
            if key not in self.meta:
                self.problem(meta_end, f"META has no '{key}' key", "warning")
        raw_type = self.meta.get("vote_type")
        if raw_type is not None:
            vt = _VOTE_TYPES.get(raw_type.strip().lower())
            if vt is None:
                self.problem(
                    self.meta_lines["vote_type"],
                    f"unsupported vote_type '{raw_type}' (expected one of: "
                    + ", ".join(_VOTE_TYPES)
                    + ")",
                )
            self.vote_type = vt
        raw_budget = self.meta.get("budget")
        if raw_budget is not None:
            try:
                self.budget = _number(raw_budget)
            except ValueError as e:
                self.problem(self.meta_lines["budget"], f"budget '{_show(raw_budget)}' is {e}")
            else:
                if self.budget < 0:
                    self.problem(self.meta_lines["budget"], "budget is negative")
        for key in ("min_length", "max_length"):
            if key in self.meta and not self.meta[key].strip().isdigit():
                self.problem(self.meta_lines[key], f"META '{key}' must be a whole number")

    def fields(
        self, row: list[str], header: list[str], lineno: int, required: tuple[str, ...]
    ) -> dict[str, str] | None:
        """The row's cells by column. Missing trailing cells are read as absent (as pabutools
        reads them) with a warning, unless a `required` column is among them."""
        if len(row) > len(header) and any(x.strip() for x in row[len(header) :]):
            self.problem(
                lineno, f"expected {len(header)} fields ({';'.join(header)}), found {len(row)}"
            )
            return None
        f = {h: v.strip() for h, v in zip(header, row, strict=False)}
        missing = header[len(row) :]
        if missing:
            lost = [c for c in missing if c in required]
            if lost:
                self.problem(
                    lineno,
                    f"expected {len(header)} fields ({';'.join(header)}), found {len(row)}: "
                    f"no {', '.join(repr(c) for c in lost)}",
                )
                return None
            if not ("points" in missing and not f.get("vote")):  # a blank ballot: see vote_row
                self.assume(
                    lineno,
                    f"{len(row)} of {len(header)} fields; read the missing "
                    + ", ".join(repr(c) for c in missing)
                    + " as empty",
                )
        return f

    def refuse_project(self, pid: str, lineno: int, message: str) -> None:
        """Refuse a project row; votes naming the project are then not read, and not reported
        one by one: `final_checks` adds their number to this one error."""
        self.problem(lineno, message)
        if pid and pid not in self.index and pid not in self.refused:
            self.refused[pid] = len(self.issues) - 1

    def project_row(self, row: list[str], header: list[str], lineno: int) -> None:
        self.project_rows += 1
        f = self.fields(row, header, lineno, ("project_id", "cost"))
        if f is None or "project_id" not in f or "cost" not in f:
            pid = row[header.index("project_id")].strip() if "project_id" in header else ""
            if pid and pid not in self.index and pid not in self.refused and self.issues:
                self.refused[pid] = len(self.issues) - 1  # the row's error, just reported
            return
        pid = f["project_id"]
        if not pid:
            self.problem(lineno, "empty project_id")
            return
        if pid in self.index:
            self.problem(lineno, f"project '{pid}' is listed twice")
            return
        try:
            cost = _number(f["cost"])
        except ValueError as e:
            self.refuse_project(pid, lineno, f"cost '{_show(f['cost'])}' of project '{pid}' is {e}")
            return
        if cost < 0:
            self.refuse_project(pid, lineno, f"cost of project '{pid}' is negative")
            return
        if cost == 0:
            self.problem(
                lineno,
                f"project '{pid}' costs nothing: greedy and Phragmén fund it, MES with approval "
                "ballots gives it no weight (docs/pb.md)",
                "warning",
            )
        self.index[pid] = len(self.projects)
        self.projects.append(Project(pid, cost, f.get("name", ""), f, lineno))

    def vote_row(self, row: list[str], header: list[str], lineno: int) -> None:
        self.vote_rows += 1
        f = self.fields(row, header, lineno, ("vote",))
        if f is None or "vote" not in f or self.vote_type is None:
            return
        voter = f.get("voter_id") or str(self.vote_rows)
        if voter in self.seen:
            self.problem(lineno, f"voter '{voter}' voted twice")
        self.seen.add(voter)
        names = [x.strip() for x in f["vote"].split(",")]
        names = [x for x in names if x]
        idx: list[int] = []
        for name in names:
            j = self.index.get(name)
            if j is None:
                if name in self.refused:  # its row has the error; count the votes it spoils
                    self.refused_votes.setdefault(name, []).append(lineno)
                    return
                if self.strict:
                    self.problem(lineno, f"vote names unknown project '{name}'")
                # one error per unknown name, however many votes name it (final_checks)
                self.unknown.setdefault(name, []).append(lineno)
                return
            idx.append(j)
        if len(set(idx)) != len(idx):
            self.problem(lineno, f"voter '{voter}' names the same project twice")
            return
        points: tuple[Fraction, ...] | None = None
        if self.vote_type in ("cumulative", "scoring"):
            if "points" not in f and "points" in header:
                if idx:
                    self.problem(lineno, f"vote names {len(idx)} projects but has no points")
                    return
                self.assume(lineno, "no points cell: read as a blank ballot (it names no project)")
            raw = [x.strip() for x in f.get("points", "").split(",")]
            raw = [x for x in raw if x]
            if len(raw) != len(idx):
                self.problem(lineno, f"{len(idx)} projects but {len(raw)} points")
                return
            try:
                pts = [_number(x) for x in raw]
            except ValueError as e:
                why = str(e).replace("not a number", "not numbers")
                self.problem(lineno, f"points '{_show(f.get('points', ''))}' are {why}")
                return
            if any(p < 0 for p in pts):
                self.problem(lineno, "negative points")
                return
            order = sorted(range(len(idx)), key=idx.__getitem__)
            idx = [idx[k] for k in order]
            points = tuple(pts[k] for k in order)
        elif self.vote_type == "approval":
            idx.sort()
        if self.limits:
            self.check_limits(idx, points, lineno)
        self.groups.setdefault((tuple(idx), points), []).append(voter)
        self.num_voters += 1
        self.vote_line_at.append(lineno - 1)

    def check_limits(
        self, idx: list[int], points: tuple[Fraction, ...] | None, lineno: int
    ) -> None:
        m = self.meta

        def limit(key: str) -> Fraction | None:
            try:
                return _number(m[key]) if key in m else None
            except ValueError:
                return None

        n = len(idx)
        lo, hi = limit("min_length"), limit("max_length")
        if lo is not None and n == 0 < lo:
            self.problem(  # a blank vote: pabutools counts it as a voter, and so do the rules
                lineno,
                f"a blank ballot (it names no project) although min_length is "
                f"{m['min_length']}: counted as a voter who supports nothing",
                "warning",
            )
        elif lo is not None and n < lo:
            self.problem(
                lineno, f"vote names {n} projects, fewer than min_length {m['min_length']}"
            )
        if hi is not None and n > hi:
            self.problem(lineno, f"vote names {n} projects, more than max_length {m['max_length']}")
        cost = sum((self.projects[j].cost for j in idx), Fraction(0))
        lo, hi = limit("min_sum_cost"), limit("max_sum_cost")
        if lo is not None and cost < lo:
            self.problem(lineno, f"vote costs {cost}, less than min_sum_cost {m['min_sum_cost']}")
        if hi is not None and cost > hi:
            self.problem(lineno, f"vote costs {cost}, more than max_sum_cost {m['max_sum_cost']}")
        if points is None:
            return
        total = sum(points, Fraction(0))
        lo, hi = limit("min_sum_points"), limit("max_sum_points")
        if lo is not None and total < lo:
            self.problem(lineno, f"{total} points in total, fewer than min_sum_points {lo}")
        if hi is not None and total > hi:
            self.problem(lineno, f"{total} points in total, more than max_sum_points {hi}")
        lo, hi = limit("min_points"), limit("max_points")
        if lo is not None and any(p < lo for p in points):
            self.problem(lineno, f"a project gets fewer points than min_points {lo}")
        if hi is not None and any(p > hi for p in points):
            self.problem(lineno, f"a project gets more points than max_points {hi}")

    def final_checks(self, last: int) -> None:
        for pid, lines in self.refused_votes.items():
            i = self.issues[self.refused[pid]]
            more = (
                f"; {_count(len(lines), 'vote')} naming '{pid}' could not be read "
                f"(lines {_lines(lines)})"
            )
            self.issues[self.refused[pid]] = Issue(i.line, i.severity, i.message + more)
        for name, lines in self.unknown.items():
            message = f"vote names unknown project '{name}'"
            if len(lines) > 1:
                message = (
                    f"{_count(len(lines), 'vote')} name unknown project '{name}' "
                    f"(lines {_lines(lines)})"
                )
            close = difflib.get_close_matches(name, list(self.index), n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
            self.issues.append(Issue(lines[0], "error", message))
        if "meta" not in self.sections or "votes" not in self.sections:
            return  # already an error: counting would only add knock-on messages
        for key, actual in (("num_projects", self.project_rows), ("num_votes", self.vote_rows)):
            what = _count(actual, "project" if key == "num_projects" else "vote")
            raw = self.meta.get(key)
            if raw is None:
                self.assume(
                    self.meta_end or None,
                    f"META has no '{key}' key; used the {what} in the file",
                )
            elif not raw.strip().isdigit():
                self.assume(
                    self.meta_lines[key],
                    f"META {key} '{_show(raw)}' is not a whole number; used the {what} in the file",
                )
            elif int(raw) != actual:
                self.assume(
                    self.meta_lines[key],
                    f"META says {key}={raw} but the file has {what}; used the {what} in the "
                    "file (an excerpt, or is it truncated?)",
                )

    def election(self) -> Election:
        assert self.vote_type is not None and self.budget is not None
        groups = tuple(
            BallotGroup(idx, pts, tuple(voters)) for (idx, pts), voters in self.groups.items()
        ) + tuple(self.bulk_groups)
        return Election(
            meta=dict(self.meta),
            projects=tuple(self.projects),
            vote_type=self.vote_type,
            budget=self.budget,
            groups=groups,
            num_voters=self.num_voters,
            project_columns=self.project_columns,
            warnings=tuple(sorted(self.assumed, key=lambda i: i.line or 0)),
            vote_columns=self.vote_columns,
            vote_lines=tuple(map(self.lines.__getitem__, self.vote_line_at)),
        )


def parse_pabulib(text: str, *, progress: ProgressFn | None = None) -> Election:
    """Parse the text of a `.pb` file; raise `PabulibError` on the first fatal problem."""
    with _no_gc():
        reader = _Reader(text, strict=True, limits=False, progress=progress)
        reader.read()
        return reader.election()


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a file is read: reading creates hundreds of
    thousands of small objects and no cycles, and the collections it would trigger cost
    about a sixth of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_pabulib(path: str | Path, *, progress: ProgressFn | None = None) -> Election:
    """Read and parse a `.pb` file (UTF-8, with or without a byte-order mark)."""
    return parse_pabulib(_read_text(path), progress=progress)


def check_pabulib(text: str, *, progress: ProgressFn | None = None) -> list[Issue]:
    """Every problem in the file, errors and warnings, in line order."""
    with _no_gc():
        reader = _Reader(text, strict=False, limits=True, progress=progress)
        reader.read()
    return sorted(reader.issues, key=lambda i: (i.line is None, i.line or 0))


def _read_text(path: str | Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PabulibError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PabulibError("the file is not valid UTF-8", line) from e


def read_text(path: str | Path) -> str:
    """The text of a `.pb` file, with read and decoding problems as `PabulibError`."""
    return _read_text(path)


def _fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    f = float(x)
    if Fraction(repr(f)) == x:
        return repr(f)
    raise ValueError(f"{x} has no exact decimal form")


def _cell(text: str) -> str:
    if any(c in text for c in ';"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_pabulib(election: Election) -> str:
    """The election as `.pb` text, losing nothing of the file it was read from.

    Every META key, every PROJECTS column and every VOTES column (age, district...) is
    written back, values as text, votes in the order they were read. What the data decides
    is written from the data: the projects' ids and costs, every ballot's vote and points,
    and META `num_projects`, `num_votes`, `budget` and `vote_type` (a value in the file is
    kept as written when it says the same, so `parse_pabulib(write_pabulib(e))` gives back
    e's META, project fields and vote cells). Approval votes list their projects in the
    order of PROJECTS. An election built in code (no source columns) gets the minimal
    columns: `project_id;cost[;name]` and `voter_id;vote[;points]`.
    """
    meta = dict(election.meta)

    def keep(key: str, value: str, same: Callable[[str], bool]) -> None:
        try:
            if key in meta and same(meta[key]):
                return
        except ValueError:
            pass
        meta[key] = value

    m, n, vote_type = len(election.projects), election.num_voters, election.vote_type
    keep("num_projects", str(m), lambda v: int(v.strip()) == m)
    keep("num_votes", str(n), lambda v: int(v.strip()) == n)
    keep("budget", _fmt(election.budget), lambda v: _number(v) == election.budget)
    keep("vote_type", vote_type, lambda v: _VOTE_TYPES.get(v.strip().lower()) == vote_type)
    out: list[str] = ["META", "key;value"]
    out += [f"{_cell(k)};{_cell(v)}" for k, v in meta.items()]

    cols = list(election.project_columns)
    for c in ("project_id", "cost"):
        if c not in cols:
            cols.insert(0 if c == "project_id" else 1, c)
    out += ["PROJECTS", ";".join(_cell(c) for c in cols)]
    for p in election.projects:
        values = dict(p.fields)
        values["project_id"] = p.id
        try:
            same_cost = _number(values.get("cost", "")) == p.cost
        except ValueError:
            same_cost = False
        if not same_cost:
            values["cost"] = _fmt(p.cost)
        if "name" in cols:
            values["name"] = p.name
        out.append(";".join(_cell(values.get(c, "")) for c in cols))

    cardinal = election.vote_type in ("cumulative", "scoring")
    vcols = list(election.vote_columns) or ["voter_id", "vote"]
    for c in ("vote", "points") if cardinal else ("vote",):
        if c not in vcols:
            vcols.append(c)
    out += ["VOTES", ";".join(_cell(c) for c in vcols)]
    # the other cells of each vote (age, district...) from the lines it was read from
    source = list(election.vote_columns)
    at_voter = source.index("voter_id") if "voter_id" in source else -1
    others: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for k, line in enumerate(election.vote_lines):
        cells = [c.strip() for c in _split(line)]
        voter = cells[at_voter] if at_voter >= 0 else str(k + 1)
        order.append(voter)
        others[voter] = {
            c: cells[j]
            for j, c in enumerate(source)
            if j < len(cells) and c not in ("voter_id", "vote", "points")
        }
    group_of = {v: g for g in election.groups for v in g.voters}
    known = set(order)
    order += [v for g in election.groups for v in g.voters if v not in known]
    for voter in order:
        g = group_of.get(voter)
        if g is None:  # no longer in the election
            continue
        values = others.get(voter, {})
        values["voter_id"] = voter
        values["vote"] = ",".join(election.projects[j].id for j in g.projects)
        if cardinal:
            assert g.points is not None
            values["points"] = ",".join(_fmt(x) for x in g.points)
        out.append(";".join(_cell(values.get(c, "")) for c in vcols))
    return "\n".join(out) + "\n"
