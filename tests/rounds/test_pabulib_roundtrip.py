"""Pabulib out and in, losslessly: each of the 12 shared files, imported as a closed round and
exported again, keeps every META key, every PROJECTS column and every VOTES column, with
their values (votes compared as ballots: the same projects, in the same order where order
counts, with the same points)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.clock import FixedClock
from bot.services import Services
from flows.pb.model import Election
from flows.pb.pabulib import _split, parse_pabulib
from flows.rounds.service import RoundError
from storage.pb_rounds import RoundStatus
from tests.conftest import SHARED_DATA, make_settings, start_services

PABULIB = SHARED_DATA / "pabulib"
FILES = sorted(PABULIB.glob("*.pb"))
SMALL = [f for f in FILES if f.stat().st_size < 100_000]


def ballots(election: Election) -> dict[str, tuple[Any, ...]]:
    """Each voter's ballot and other VOTES cells."""
    columns = list(election.vote_columns)
    at = columns.index("voter_id") if "voter_id" in columns else -1
    cells: dict[str, dict[str, str]] = {}
    for k, line in enumerate(election.vote_lines):
        row = [c.strip() for c in _split(line)]
        voter = row[at] if at >= 0 else str(k + 1)
        cells[voter] = {
            c: row[j] if j < len(row) else ""
            for j, c in enumerate(columns)
            if c not in ("voter_id", "vote", "points")
        }
    out = {}
    for g in election.groups:
        ids = tuple(election.projects[j].id for j in g.projects)
        for voter in g.voters:
            out[voter] = (ids, g.points, tuple(sorted(cells.get(voter, {}).items())))
    return out


@pytest.fixture
async def services(tmp_path: Path, clock: FixedClock) -> AsyncIterator[Services]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'civicbot.db'}"
    services = await start_services(make_settings(url), clock)
    yield services
    await services.close()


async def roundtrip(services: Services, path: Path) -> None:
    text = path.read_text(encoding="utf-8-sig")
    imported = await services.rounds.import_file(text, source=path.name, actor="test")
    row = imported.round
    assert row.status == RoundStatus.CLOSED and row.imported and row.results is not None
    again = parse_pabulib(await services.rounds.export(row.id))
    original = parse_pabulib(text)
    assert again.meta == original.meta
    assert again.project_columns == original.project_columns
    assert [dict(p.fields) for p in again.projects] == [dict(p.fields) for p in original.projects]
    assert again.vote_columns == original.vote_columns
    assert again.num_voters == original.num_voters
    assert ballots(again) == ballots(original)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_export_after_import_keeps_every_field(services: Services, path: Path) -> None:
    assert len(FILES) == 12
    await roundtrip(services, path)


@pytest.mark.parametrize("path", SMALL[:3], ids=[f.stem for f in SMALL[:3]])
async def test_export_after_import_on_both_databases(any_services: Services, path: Path) -> None:
    await roundtrip(any_services, path)


async def test_a_bad_or_second_import_changes_nothing(services: Services, tmp_path: Path) -> None:
    path = PABULIB / "Netherlands_Assen_2024.pb"
    text = path.read_text()
    first = await services.rounds.import_file(text, source=path.name, actor="test")
    assert first.round.id == "netherlands_assen_2024" and first.round.rule == "mes-add1"
    with pytest.raises(RoundError, match="exists already: give another --id"):
        await services.rounds.import_file(text, source=path.name, actor="test")
    with pytest.raises(RoundError, match=r"line \d+: "):
        await services.rounds.import_file(
            text.replace("VOTES", "VOTES\nvoter_id;vote\nx;999999"),
            source="bad.pb",
            actor="test",
        )
    with pytest.raises(RoundError, match="needs approval ballots"):
        await services.rounds.import_file(
            (PABULIB / "Switzerland_Zurich_D10.pb").read_text(),
            source="z.pb",
            actor="t",
            rule="phragmen",
        )
    with pytest.raises(RoundError, match="--rule: unknown rule 'borda'"):
        await services.rounds.import_file(
            text, source="a.pb", actor="t", rule="borda", round_id="other"
        )
    assert [r.id for r in await services.rounds.all()] == ["netherlands_assen_2024"]
    unknown = await services.rounds.import_file(
        (PABULIB / "Switzerland_Zurich_D10.pb").read_text(), source="z.pb", actor="t"
    )
    assert unknown.round.rule == "greedy" and "not one civicbot runs" in unknown.notes[0]
