"""Reading Open Contracting Data Standard files, and compiling each contracting process's
releases into its current state with ocdsmerge.

Accepted shapes (as found in ``../shared/data/ocds/``): a release package
(``{"releases": [...]}``, which is also what the Contracts Finder and Find a Tender search
APIs answer, with ``links.next``), a record package (``{"records": [{"releases": [...],
"compiledRelease": {...}}]}``), a JSON array of releases, or one release on its own (the
2014 Contracts Finder format, Public Contracts Scotland, Sell2Wales).

A file is checked whole before anything is written: bad JSON (with its line and column),
bytes that are not UTF-8 (with the line), numbers JSON can't hold exactly (``1e9999``,
``NaN``), a shape that is none of the above, or a release without an ``ocid`` or ``id``
(with its path: ``releases[3]``) is a :class:`OcdsError` naming every problem found.

Compiling uses the OCDS 1.1.5 release schema shipped beside this module
(``data/release-schema-1.1.5.json``): nothing is fetched at run time.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).parent / "data" / "release-schema-1.1.5.json"
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_PROBLEMS = 20  # an error lists at most this many problems


class OcdsError(Exception):
    """A file (or feed page) can't be imported; the message names each problem and where."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems[:MAX_PROBLEMS]
        more = len(problems) - len(self.problems)
        text = "; ".join(self.problems) + (f"; and {more} more" if more > 0 else "")
        super().__init__(f"{source}: {text}")


@dataclass(frozen=True)
class Release:
    """One release as read: its identity, date (as published) and the whole object."""

    ocid: str
    release_id: str
    date: str
    data: dict[str, Any]


@dataclass
class ParsedFile:
    source: str
    releases: list[Release] = field(default_factory=list)
    next_url: str | None = None  # a search page's ``links.next``


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, max(offset, 0)) + 1


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotFinite(text)
    return value


class _NotFinite(ValueError):
    pass


def _constant(text: str) -> Any:
    raise _NotFinite(text)


def loads(raw: bytes, source: str) -> Any:
    """Strict JSON from bytes: UTF-8 only, finite numbers only, errors with line numbers."""
    if len(raw) > MAX_FILE_BYTES:
        raise OcdsError(source, [f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB"])
    if not raw.strip():
        raise OcdsError(source, ["the file is empty"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start : exc.start + 1].hex()
        raise OcdsError(
            source,
            [
                f"line {_line_of(raw, exc.start)}: not UTF-8 (byte 0x{byte}; perhaps ISO-8859-1); "
                "OCDS files are UTF-8: save it as UTF-8 and import it again"
            ],
        ) from None
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_constant)
    except _NotFinite as exc:
        at = raw.find(str(exc.args[0]).encode())
        line = _line_of(raw, at) if at >= 0 else 0
        where = f"line {line}: " if line else ""
        raise OcdsError(
            source,
            [f"{where}the number {exc.args[0]} is too large to hold (not a finite number)"],
        ) from None
    except json.JSONDecodeError as exc:
        raise OcdsError(
            source, [f"line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})"]
        ) from None
    except RecursionError:
        raise OcdsError(source, ["the JSON is nested too deeply"]) from None


def _identity(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= 200:
        return value.strip()
    return None


def _release(obj: Any, path: str, problems: list[str]) -> Release | None:
    if not isinstance(obj, dict):
        problems.append(f"{path}: a release must be a JSON object")
        return None
    ocid = _identity(obj.get("ocid"))
    release_id = _identity(obj.get("id"))
    missing = [name for name, v in (("ocid", ocid), ("id", release_id)) if v is None]
    if missing:
        # (a string or integer of at most 200 characters: anything else is as good as missing)
        problems.append(f"{path}: missing {' and '.join(missing)}")
        return None
    assert ocid is not None and release_id is not None
    date = obj.get("date")
    return Release(ocid, release_id, date if isinstance(date, str) else "", obj)


def releases_in(document: Any, source: str) -> ParsedFile:
    """Every release in a parsed document, checked; raises :class:`OcdsError`."""
    parsed = ParsedFile(source)
    problems: list[str] = []
    if isinstance(document, list):
        items: Iterable[tuple[str, Any]] = ((f"[{i}]", r) for i, r in enumerate(document))
    elif isinstance(document, dict) and isinstance(document.get("releases"), list):
        items = ((f"releases[{i}]", r) for i, r in enumerate(document["releases"]))
        links = document.get("links")
        if isinstance(links, dict) and isinstance(links.get("next"), str):
            parsed.next_url = links["next"]
    elif isinstance(document, dict) and isinstance(document.get("records"), list):
        items = _record_releases(document["records"], problems)
    elif isinstance(document, dict) and ("ocid" in document or "tag" in document):
        items = [("release", document)]
    elif isinstance(document, dict) and "releases" in document:
        raise OcdsError(source, ["releases: must be a list"])
    else:
        raise OcdsError(
            source,
            [
                "not an OCDS release package, record package, list of releases or release "
                "(expected a 'releases' or 'records' list, or an 'ocid')"
            ],
        )
    for path, obj in items:
        release = _release(obj, path, problems)
        if release is not None:
            parsed.releases.append(release)
    if problems:
        raise OcdsError(source, problems)
    return parsed


def _record_releases(records: list[Any], problems: list[str]) -> list[tuple[str, Any]]:
    """A record package's embedded releases; a record with only linked releases gives its
    compiled release (the publisher's own compilation) instead."""
    items: list[tuple[str, Any]] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(f"records[{i}]: a record must be a JSON object")
            continue
        embedded = [
            (f"records[{i}].releases[{j}]", r)
            for j, r in enumerate(record.get("releases") or [])
            if not (isinstance(r, dict) and "url" in r and "tender" not in r and "id" not in r)
        ]
        if embedded:
            items.extend(embedded)
        elif isinstance(record.get("compiledRelease"), dict):
            items.append((f"records[{i}].compiledRelease", record["compiledRelease"]))
        else:
            problems.append(f"records[{i}]: no embedded releases and no compiledRelease")
    return items


def read_file(path: Path) -> ParsedFile:
    """Read and check one file; raises :class:`OcdsError`."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise OcdsError(str(path), [f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB"])
        raw = path.read_bytes()
    except OSError as exc:
        raise OcdsError(str(path), [f"cannot read it ({exc.strerror or exc})"]) from None
    return releases_in(loads(raw, str(path)), str(path))


class Compiler:
    """Compiles a process's releases with ocdsmerge and the shipped 1.1.5 schema. Built once
    (reading the schema's merge rules), then reused."""

    def __init__(self, schema: Path = SCHEMA_PATH) -> None:
        from ocdsmerge.rules import get_merge_rules

        self._rules = get_merge_rules(str(schema))

    def compile(self, releases: list[Release]) -> dict[str, Any]:
        """The compiled release. Releases are merged oldest first (by date, then in the
        order given); raises :class:`OcdsError` when they can't be merged."""
        from ocdsmerge.exceptions import OCDSMergeError
        from ocdsmerge.merge import CompiledRelease

        ordered = sorted(enumerate(releases), key=lambda ir: (ir[1].date, ir[0]))
        merged = CompiledRelease(merge_rules=self._rules)
        with warnings.catch_warnings():
            # A publisher's duplicate ids in one list (ocdsmerge warns, then keeps the last)
            # are the publisher's business; the compiled release is still usable.
            warnings.simplefilter("ignore")
            try:
                for _, release in ordered:
                    merged.append(release.data)
            except (OCDSMergeError, TypeError, ValueError, AttributeError) as exc:
                ocid = releases[0].ocid if releases else "?"
                raise OcdsError(ocid, [f"its releases can't be merged ({exc})"]) from None
        compiled: dict[str, Any] = merged.asdict()
        return compiled
