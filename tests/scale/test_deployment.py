"""The deployment files: compose.yaml runs commands that exist, with settings civicbot knows,
and settings that compose passes on empty mean "not set". (The file was also checked with
`docker-compose config`; see docs/scale.md.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.settings import Settings, load_settings
from tests.conftest import REPO


def compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_runs_postgresql_two_web_processes_and_two_workers() -> None:
    services = compose()["services"]
    assert services["db"]["image"] == "postgres:15"
    assert services["web"]["command"] == ["civicbot", "serve", "--no-worker"]
    assert services["worker"]["command"] == ["civicbot", "worker"]
    assert services["migrate"]["command"] == ["civicbot", "db", "upgrade"]
    for name in ("web", "worker"):
        deploy = services[name]["deploy"]
        assert isinstance(deploy, dict) and deploy["replicas"] == 2


def test_compose_passes_only_settings_civicbot_has() -> None:
    known = {f"CIVICBOT_{name.upper()}" for name in Settings.model_fields}
    environment = compose()["services"]["web"]["environment"]
    assert isinstance(environment, dict)
    assert set(environment) <= known
    # the database password comes from the environment, never from the file
    assert "civicbot:${CIVICBOT_DB_PASSWORD:?" in str(environment["CIVICBOT_DATABASE_URL"])


def test_the_dockerfile_installs_every_package() -> None:
    text = (REPO / "Dockerfile").read_text()
    for package in ("bot", "channels", "flows", "storage", "admin"):
        assert f"COPY {package} ./{package}" in text
    assert 'CMD ["civicbot", "serve"]' in text


def test_settings_passed_on_empty_are_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TELEGRAM_TOKEN",
                 "TELEGRAM_WEBHOOK_SECRET", "TWILIO_FROM_NUMBER"):
        monkeypatch.setenv(f"CIVICBOT_{name}", "")
    settings = load_settings()
    assert not settings.sms_enabled and not settings.telegram_enabled
    assert settings.telegram_webhook_secret is None
