"""The ``civicbot`` CLI: real commands against a real SQLite file, with clear failures."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from storage.db import head_revision

runner = CliRunner()
DEMO = Path(__file__).resolve().parents[1] / "admin" / "data" / "demo_wards.csv"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    return {"CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}


def test_upgrade_load_and_list_wards(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert f"is at revision {head_revision()}" in result.output
    result = runner.invoke(app, ["wards", "load", str(DEMO)], env=env)
    assert result.exit_code == 0, result.output
    assert "loaded 7 wards and 16 postcodes" in result.output
    again = runner.invoke(app, ["wards", "load", str(DEMO)], env=env)
    assert again.exit_code == 0  # loading twice updates, never duplicates
    skipped = runner.invoke(app, ["wards", "load", "--if-empty", str(DEMO)], env=env)
    assert "wards are already loaded; nothing changed" in skipped.output
    listing = runner.invoke(app, ["wards", "list"], env=env)
    assert "Cathays" in listing.output and "DEMO-SPLOTT" in listing.output
    current = runner.invoke(app, ["db", "current"], env=env)
    assert f"current: {head_revision()}  latest: {head_revision()}" in current.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"postcode,ward\nCF10 1EP,X\n", "line 1: missing column(s) ward_code, ward_name"),
        (
            b"postcode,ward_code,ward_name\nCF10 1EP,W1,One\nnonsense,W1,One\n",
            "line 3: 'nonsense' is not a UK postcode",
        ),
        (b"postcode,ward_code,ward_name\nCF10 1EP,,One\n", "line 2: ward_code must be 1 to 32"),
        (
            b"postcode,ward_code,ward_name\nCF10 1EP,W1,One\nCF10 3AT,W1,Two\n",
            "line 3: ward W1 is called 'One' earlier, not 'Two'",
        ),
        (b"postcode,ward_code,ward_name\nCF10 1EP,W1,One,extra,extra\n", "line 2: more fields"),
        (b"postcode,ward_code,ward_name\nCF10 1EP,W1,\xff\xfe\n", "line 2: not UTF-8"),
        (b"postcode,ward_code,ward_name\n", "no rows"),
        (b"", "line 1: missing column(s)"),
        (b'postcode,ward_code,ward_name\n"CF10 1EP,W1,One\n', "line"),
    ],
)
def test_bad_ward_files_are_refused_whole(
    env: dict[str, str], tmp_path: Path, content: bytes, message: str
) -> None:
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    assert runner.invoke(app, ["wards", "load", str(DEMO)], env=env).exit_code == 0
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    result = runner.invoke(app, ["wards", "load", str(bad)], env=env)
    assert result.exit_code == 2
    assert message in result.output
    assert "nothing was loaded" in result.output
    assert "Traceback" not in result.output
    listing = runner.invoke(app, ["wards", "list"], env=env)
    assert "Cathays" in listing.output and "One" not in listing.output


def test_missing_file(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["wards", "load", "/no/such/file.csv"], env=env)
    assert result.exit_code == 2
    assert "cannot read /no/such/file.csv" in result.output


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CIVICBOT_PORT", "eighty", "invalid setting CIVICBOT_PORT"),
        ("CIVICBOT_DATABASE_URL", "mysql://x", "invalid setting CIVICBOT_DATABASE_URL"),
        ("CIVICBOT_PUBLIC_URL", "bot.example.org", "invalid setting CIVICBOT_PUBLIC_URL"),
        ("CIVICBOT_DEFAULT_LANGUAGE", "fr", "invalid setting CIVICBOT_DEFAULT_LANGUAGE"),
    ],
)
def test_a_bad_setting_is_one_clear_line(
    env: dict[str, str], name: str, value: str, expected: str
) -> None:
    result = runner.invoke(app, ["db", "upgrade"], env={**env, name: value})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0]


def test_an_unreachable_database_says_what_to_do(env: dict[str, str]) -> None:
    url = "postgresql+asyncpg://nobody:secret@127.0.0.1:1/none"
    result = runner.invoke(app, ["db", "upgrade"], env={"CIVICBOT_DATABASE_URL": url})
    assert result.exit_code == 2
    assert "cannot reach the database" in result.output and "secret" not in result.output


def test_flows_check(env: dict[str, str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["flows", "check"], env=env)
    assert result.exit_code == 0 and "onboarding" in result.output
    extra = tmp_path / "flows"
    extra.mkdir()
    (extra / "broken.yaml").write_text("id: broken\ntitle: B\nstart: nope\nnodes: {}\n")
    result = runner.invoke(app, ["flows", "check", str(extra)], env=env)
    assert result.exit_code == 2 and "start node 'nope' is not defined" in result.output


def test_serve_on_a_busy_port_says_what_to_do(env: dict[str, str]) -> None:
    """Issue #11 item 11: it printed the simulator's address, then uvicorn's Errno 98."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port)], env=env)
    assert result.exit_code == 2
    assert f"port {port} is already in use" in result.output
    assert "--port" in result.output and "CIVICBOT_PORT=" in result.output
    assert "simulator" not in result.output  # no address printed for a server that can't start


def test_flows_check_says_when_all_is_well(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["flows", "check"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("all ") and "valid" in result.output


def test_telegram_set_webhook_asks_for_the_token_first(env: dict[str, str]) -> None:
    """Issue #11 item 14: with nothing configured it asked for the webhook secret first."""
    result = runner.invoke(app, ["telegram", "set-webhook"], env=env)
    assert result.exit_code == 2
    assert "CIVICBOT_TELEGRAM_TOKEN" in result.output and "SECRET" not in result.output


def test_readme_examples_run_civicbot_from_the_venv() -> None:
    """Issue #11 item 10: `civicbot` is not on the PATH after `make run`; every example in
    the README uses the same form, `.venv/bin/civicbot`."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    bare = [line for line in lines if re.match(r"(\S+=\S+ )*civicbot\b", line)]
    assert not bare, bare
    assert any(line.startswith(".venv/bin/civicbot ") for line in lines)
