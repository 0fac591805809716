"""Parsing a wards CSV: ``postcode,ward_code,ward_name[,ward_name_cy]``, one row per postcode.

Every problem is reported with its line number, and nothing is loaded unless the whole file is
good, so a bad file never leaves half a lookup table behind.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from flows.engine import normalise_postcode
from storage.models import PostcodeWard, Ward
from storage.repositories import compact_postcode

REQUIRED = ("postcode", "ward_code", "ward_name")
MAX_BYTES = 200 * 1024 * 1024
MAX_PROBLEMS = 20


class WardFileError(Exception):
    """The file cannot be loaded; ``problems`` are ``line N: ...`` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class WardFile:
    wards: list[Ward]
    postcodes: list[PostcodeWard]


def read_wards_csv(path: Path) -> WardFile:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise WardFileError([f"{path.name} is {size:,} bytes; the limit is {MAX_BYTES:,}"])
        data = path.read_bytes()
    except OSError as exc:
        raise WardFileError([f"cannot read {path}: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise WardFileError([f"line {line}: not UTF-8 text (save the file as CSV UTF-8)"]) from None
    return parse_wards_csv(text)


def parse_wards_csv(text: str) -> WardFile:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise WardFileError(
            [f"line 1: missing column(s) {', '.join(missing)}; expected {','.join(REQUIRED)}"]
        )
    reader.fieldnames = header
    wards: dict[str, Ward] = {}
    postcodes: dict[str, PostcodeWard] = {}
    problems: list[str] = []
    try:
        for row in reader:
            line = reader.line_num
            if None in row:
                problems.append(f"line {line}: more fields than the header has")
                continue
            postcode_raw = (row.get("postcode") or "").strip()
            code = (row.get("ward_code") or "").strip()
            name = (row.get("ward_name") or "").strip()
            name_cy = (row.get("ward_name_cy") or "").strip() or None
            postcode = normalise_postcode(postcode_raw)
            if postcode is None:
                problems.append(f"line {line}: {postcode_raw[:20]!r} is not a UK postcode")
            elif not code or len(code) > 32:
                problems.append(f"line {line}: ward_code must be 1 to 32 characters")
            elif not name or len(name) > 200:
                problems.append(f"line {line}: ward_name must be 1 to 200 characters")
            else:
                known = wards.get(code)
                if known is not None and known.name != name:
                    problems.append(
                        f"line {line}: ward {code} is called {known.name!r} earlier, not {name!r}"
                    )
                    continue
                wards[code] = Ward(code=code, name=name, name_cy=name_cy)
                key = compact_postcode(postcode)
                previous = postcodes.get(key)
                if previous is not None and previous.ward_code != code:
                    problems.append(
                        f"line {line}: {postcode} is already in ward {previous.ward_code}"
                    )
                    continue
                postcodes[key] = PostcodeWard(postcode=key, ward_code=code)
            if len(problems) >= MAX_PROBLEMS:
                problems.append("(stopped after 20 problems)")
                break
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: broken CSV: {exc}")
    if problems:
        raise WardFileError(problems)
    if not postcodes:
        raise WardFileError(["the file has a header but no rows"])
    return WardFile(wards=list(wards.values()), postcodes=list(postcodes.values()))
