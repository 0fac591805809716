"""Importing OCDS: the shared Contracts Finder page compiles to one process per ocid (94),
with normalised fields checked against their source; importing twice adds nothing; other
portals' shapes normalise too; broken files are refused whole, with where the problem is."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from bot.cli import app
from bot.services import Services
from flows.tenders.normalise import normalise
from flows.tenders.ocds import Compiler, OcdsError, read_file
from storage.tenders import TenderProcess, TenderRelease
from tests.tenders.support import CF_PAGE, cf_releases, shared

runner = CliRunner()


async def counts(services: Services) -> tuple[int, int]:
    async with services.sessions() as s:
        releases = (await s.execute(select(func.count()).select_from(TenderRelease))).scalar_one()
        processes = (await s.execute(select(func.count()).select_from(TenderProcess))).scalar_one()
    return int(releases), int(processes)


async def process(services: Services, ocid: str) -> TenderProcess:
    query = select(TenderProcess).where(TenderProcess.ocid == ocid)  # type: ignore[arg-type]
    async with services.sessions() as s:
        row: TenderProcess = (await s.execute(query)).scalar_one()
    return row


async def test_contracts_finder_page_compiles_one_process_per_ocid(
    any_services: Services,
) -> None:
    page = shared(CF_PAGE.name)
    first = await any_services.tenders.import_files([page])
    assert (first.releases, first.new_releases, first.new_processes) == (100, 100, 94)
    assert await counts(any_services) == (100, 94)
    again = await any_services.tenders.import_files([page])
    assert (again.new_releases, again.processes, again.amended) == (0, 0, [])
    assert await counts(any_services) == (100, 94)

    source = {(r["ocid"], r["id"]): r for r in cf_releases()}
    # Window replacement: a tender in Yorkshire, a value range (minValue .. value), open.
    row = await process(any_services, "ocds-b5fd17-75afe551-b5e4-4538-a546-0547477d0f9f")
    raw = source[(row.ocid, "e22ded3b-515b-4309-8ab1-ce3c76e44ebe-819920")]["tender"]
    assert row.title == raw["title"] == "Sumner House - Window Replacement"
    assert row.status == "active" and row.release_count == 2
    assert row.deadline == datetime(2025, 2, 6, 12, 0, tzinfo=UTC)
    assert row.cpv[0] == raw["classification"]["id"]
    assert row.sme is raw["suitability"]["sme"] and row.vcse is raw["suitability"]["vcse"]

    # A tender then its amendment: the compiled state is the amendment's.
    row = await process(any_services, "ocds-b5fd17-4c20859e-a305-4461-84c9-31ee8b43f2d0")
    assert row.release_count == 2
    assert (row.value_min, row.value_max, row.currency) == (80000.0, 95000.0, "GBP")
    assert row.deadline == datetime(2025, 3, 31, 9, 0, tzinfo=UTC)  # 10:00+01:00
    assert row.url.startswith("https://www.contractsfinder.service.gov.uk/Notice/")

    # An award for a tender published an hour earlier: complete, not open.
    row = await process(any_services, "ocds-b5fd17-0cb08240-82a6-4be3-b63a-1ba819a00d18")
    assert row.status == "complete" and row.release_count == 2

    # "England": England's nine ITL1 regions; a named region: that one.
    for ocid, release in source:
        tender = source[(ocid, release)]["tender"]
        places = {
            a.get("region")
            for item in tender.get("items", [])
            for a in item.get("deliveryAddresses", [])
        }
        row = await process(any_services, ocid)
        if places == {"England"}:
            assert row.regions == ["TLC", "TLD", "TLE", "TLF", "TLG", "TLH", "TLI", "TLJ", "TLK"]
        elif places == {"London"}:
            assert row.regions == ["TLI"]
        elif places == {"Yorkshire and the Humber"}:
            assert row.regions == ["TLE"]


def test_other_portals_normalise() -> None:
    compiler = Compiler()
    wales = normalise(compiler.compile(read_file(shared(
        "sell2wales_release_2025_carmarthenshire_verge_cutting_20lots.json")).releases))
    assert wales.regions == ("TLL",) and len(wales.lots) == 20 and wales.framework
    assert "environment" in wales.categories
    legacy = normalise(compiler.compile(read_file(shared(
        "cf_legacy_release_2014_metoffice_xClassifications.json")).releases))
    assert (legacy.sme, legacy.vcse) == (False, False)  # isSuitableForSme / isSuitableForVco
    assert legacy.title.startswith("Climate Science for Service Partnership (CSSP): Calls")
    fts = normalise(compiler.compile(read_file(shared(
        "fts_api_docs_sample_release_package_SYNTHETIC.json")).releases))
    assert fts.reserved and fts.vcse_suitable and fts.framework and len(fts.lots) == 1
    # Public Contracts Scotland publishes releases without an id: import refuses them (see
    # below), but the release itself normalises: NUTS UKM71 is Scotland, 83 lots.
    data = json.loads(shared("pcs_release_2019_angus_school_transport_83lots.json").read_text())
    scotland = normalise(data)
    assert scotland.regions == ("TLM",) and len(scotland.lots) == 83
    assert scotland.categories == ("transport",)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    env = {"CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    return env


GOOD = {"ocid": "ocds-x-1", "id": "r1", "date": "2025-01-01T00:00:00Z", "tag": ["tender"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"releases": [{"ocid": "a", "id": "1",\n "tender": {"value": {"amount": 1e9999}}}]}',
         "line 2: the number 1e9999 is too large"),
        ('{"releases": [\n{"ocid": "a", "id": "1", "tender": {"title": "Caf\u00e9"}}]}'
         .encode("iso-8859-1"), "line 2: not UTF-8 (byte 0xe9"),
        (b'{"releases": [\n{"ocid": "a",, "id": "1"}]}', "line 2, column 14: not valid JSON"),
        (b'{"hello": "world"}', "not an OCDS release package"),
        (b'[{"ocid": "a", "id": "1"}, {"id": "2"}, {"ocid": "b"}]',
         "bad.json: [1]: missing ocid; "),
        (b'{"releases": [{"ocid": "a", "id": "1", "value": NaN}]}', "NaN is too large"),
        (b"", "the file is empty"),
    ],
)
def test_broken_files_are_refused_whole(
    env: dict[str, str], tmp_path: Path, content: bytes, message: str
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"releases": [GOOD]}))
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    result = runner.invoke(app, ["tenders", "import", str(good), str(bad)], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Nothing was imported" in result.output
    assert "Traceback" not in result.output
    listing = runner.invoke(app, ["tenders", "list", "--json"], env=env)
    assert json.loads(listing.stdout) == []  # not even the good file's release


def test_a_real_release_without_an_id_is_refused(env: dict[str, str]) -> None:
    pcs = shared("pcs_release_2019_angus_school_transport_83lots.json")
    result = runner.invoke(app, ["tenders", "import", str(pcs)], env=env)
    assert result.exit_code == 2 and "release: missing id" in result.output
    with pytest.raises(OcdsError, match="missing id"):
        read_file(pcs)


def test_cli_import_list_and_show(env: dict[str, str]) -> None:
    page = shared(CF_PAGE.name)
    result = runner.invoke(app, ["tenders", "import", str(page)], env=env)
    assert result.exit_code == 0, result.output
    assert "100 release(s): 100 new; 94 process(es) compiled (94 new" in result.stdout
    again = runner.invoke(app, ["tenders", "import", str(page)], env=env)
    assert "100 release(s): 0 new; 0 process(es) compiled" in again.stdout
    listed = json.loads(runner.invoke(app, ["tenders", "list", "--json"], env=env).stdout)
    assert len(listed) == 94
    for key in ("ocid", "title", "buyer", "status", "deadline", "value", "regions",
                "categories", "cpv", "sme", "vcse"):
        assert all(key in item for item in listed), key
    ocid = "ocds-b5fd17-4c20859e-a305-4461-84c9-31ee8b43f2d0"
    shown = json.loads(runner.invoke(app, ["tenders", "show", ocid, "--json"], env=env).stdout)
    assert shown["ocid"] == ocid and len(shown["releases"]) == 2 and shown["lots"] == []
    assert shown["value"] == {"amount": None, "min": 80000.0, "max": 95000.0, "currency": "GBP"}
    missing = runner.invoke(app, ["tenders", "show", "nope"], env=env)
    assert missing.exit_code == 2 and "no process 'nope'" in missing.output
    orgs = runner.invoke(app, ["tenders", "orgs", "--json"], env=env)
    assert json.loads(orgs.stdout) == []


def test_odd_and_hostile_values_never_break_normalisation() -> None:
    compiled = {
        "ocid": "ocds-x",
        "buyer": {"name": "Council\x00\x07 of\u200b  Things"},
        "tender": {
            "title": "Caf\u00c3\u00a9 services\u00e2\u20ac\u00af" + "x" * 2000,
            "status": "active",
            "value": {"amount": 1e300, "currency": "GBP"},
            "minValue": {"amount": -5},
            "tenderPeriod": {"endDate": "next Tuesday"},
            "classification": {"scheme": "CPV", "id": "not a code"},
            "items": [{"deliveryAddresses": [{"region": ["UKM"]}, {"region": "Atlantis"}]}],
            "suitability": {"sme": "yes", "vcse": 1},
            "lots": "none",
            "awardCriteria": {"criteria": [{"name": "Social value", "description": "900"}]},
        },
    }
    notice = normalise(compiled)
    assert notice.buyer == "Council of Things"
    assert notice.title.startswith("Café services x") and len(notice.title) == 500
    assert (notice.amount, notice.min_value, notice.deadline) == (None, None, None)
    assert notice.cpv == () and notice.categories == () and notice.regions == ()
    assert (notice.sme, notice.vcse, notice.lots, notice.social_value) == (None, None, (), None)
    assert not notice.is_open(datetime(2025, 1, 1, tzinfo=UTC))  # no deadline: not open
    weighted = {"tender": {"lots": [{"id": "1", "awardCriteria": {"criteria": [
        {"type": "quality", "name": "Social value and community benefits",
         "numbers": [{"number": 15}]},
        {"type": "price", "description": "60"}]}}]}}
    assert normalise(weighted).social_value == 15.0
