"""The census file ``civicbot census load`` reads: ``ward_code,dimension,group,population``
(an optional fifth column ``group_cy`` names the group in Welsh). Lines starting with ``#``
are comments. The file is checked whole before anything is written: an unknown ward, a count
that is negative or not a whole number, a group that one ward lacks, a repeated row... each
problem with its line number."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection

from storage.needs import PREFER_NOT, CensusRow

HEADER = ["ward_code", "dimension", "group", "population"]
OPTIONAL = ["group_cy"]
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_GROUPS = 30
MAX_POPULATION = 100_000_000
DIMENSION = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class CensusFileError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_census(text: str, *, known_wards: Collection[str]) -> list[CensusRow]:
    """The rows of a census file; raises :class:`CensusFileError` with every problem."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise CensusFileError([f"line 1: the file is larger than {MAX_FILE_BYTES} bytes"])
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[CensusRow] = []
    first_line: dict[tuple[str, str, str], int] = {}
    ward_line: dict[tuple[str, str], int] = {}
    unknown_reported: set[str] = set()
    try:
        for cells in reader:
            line = reader.line_num
            if not cells or not "".join(cells).strip() or cells[0].lstrip().startswith("#"):
                continue
            cells = [c.strip() for c in cells]
            if header is None:
                header = [c.lower() for c in cells]
                if header[:4] != HEADER or any(h not in OPTIONAL for h in header[4:]):
                    problems.append(
                        f"line {line}: the header must be {','.join(HEADER)} "
                        f"(optionally ,group_cy), not {','.join(cells)[:80]!r}"
                    )
                    break
                continue
            if len(cells) != len(header):
                problems.append(f"line {line}: expected {len(header)} columns, found {len(cells)}")
                continue
            ward, dimension, group, count = cells[:4]
            group_cy = cells[4] if len(cells) > 4 and cells[4] else None
            bad = False
            if ward not in known_wards:
                if ward not in unknown_reported:
                    problems.append(
                        f"line {line}: unknown ward {_show(ward)} (load wards first: "
                        "`civicbot wards load`)"
                    )
                    unknown_reported.add(ward)
                bad = True
            if not DIMENSION.fullmatch(dimension):
                problems.append(
                    f"line {line}: dimension {_show(dimension)}: use lower-case letters, digits "
                    "and _ (like age_band)"
                )
                bad = True
            for what, value in (("group", group), ("group_cy", group_cy or "")):
                if _CONTROL.search(value) or len(value) > 100:
                    problems.append(f"line {line}: {what} is too long or has control characters")
                    bad = True
            if not group:
                problems.append(f"line {line}: the group is empty")
                bad = True
            elif group == PREFER_NOT:
                problems.append(f"line {line}: {PREFER_NOT} is not a census group")
                bad = True
            if not re.fullmatch(r"[0-9]{1,12}", count):
                kind = "negative" if count.startswith("-") else "not a whole number"
                problems.append(f"line {line}: population {_show(count)} is {kind}")
                bad = True
            elif int(count) > MAX_POPULATION:
                problems.append(f"line {line}: population {count} is implausibly large")
                bad = True
            key = (ward, dimension, group)
            if key in first_line:
                problems.append(
                    f"line {line}: {ward} {dimension} {_show(group)} is already on line "
                    f"{first_line[key]}"
                )
                bad = True
            if bad:
                continue
            first_line[key] = line
            ward_line.setdefault((ward, dimension), line)
            rows.append(CensusRow(ward, dimension, group, int(count), group_cy))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: not valid CSV: {exc}")
    if header is None and not problems:
        problems.append("line 1: the file is empty (expected a header and rows)")
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row.group not in groups.setdefault(row.dimension, []):
            groups[row.dimension].append(row.group)
    for dimension, names in groups.items():
        if len(names) > MAX_GROUPS:
            problems.append(f"line 1: {dimension} has {len(names)} groups; at most {MAX_GROUPS}")
    have = {(r.ward_code, r.dimension, r.group) for r in rows}
    for (ward, dimension), line in sorted(ward_line.items(), key=lambda item: item[1]):
        missing = [g for g in groups[dimension] if (ward, dimension, g) not in have]
        if missing:
            problems.append(
                f"line {line}: ward {ward} has no {dimension} row for "
                f"{', '.join(_show(g) for g in missing)} (every ward needs every group)"
            )
    if problems:
        raise CensusFileError(problems)
    return rows


def _show(value: str) -> str:
    return repr(_CONTROL.sub("?", value[:40]))
