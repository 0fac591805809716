"""Typed settings, read from the environment (prefix ``CIVICBOT_``) and an optional ``.env`` file.

Nothing here is built at import time: the composition root calls :func:`load_settings` once and
passes the object down. Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SUPPORTED_LANGUAGES = ("en", "cy")


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line naming it."""


class Settings(BaseSettings):
    """Everything civicbot can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="CIVICBOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = "sqlite+aiosqlite:///./civicbot.db"
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    default_language: Literal["en", "cy"] = "en"
    default_region: str = Field(default="GB", min_length=2, max_length=2)
    timezone: str = "Europe/London"

    # A folder of extra flow YAML files; a flow here replaces a shipped flow with the same id.
    flows_dir: Path | None = None
    # Conversations waiting for an answer longer than this are closed.
    conversation_timeout_minutes: int = Field(default=24 * 60, ge=1)
    # Inbound text longer than this is cut before it reaches the engine (it is stored whole).
    max_inbound_chars: int = Field(default=2000, ge=160)

    # Outbox dispatcher.
    dispatcher_poll_seconds: float = Field(default=1.0, gt=0)
    dispatcher_batch_size: int = Field(default=50, ge=1)
    outbox_max_attempts: int = Field(default=6, ge=1)
    outbox_backoff_seconds: float = Field(default=5.0, gt=0)
    outbox_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    outbox_lease_seconds: float = Field(default=120.0, gt=0)
    simulator_rate_per_second: float = Field(default=1000.0, gt=0)
    run_dispatcher: bool = True

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("default_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.upper()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation error into one line that names the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "CIVICBOT_" + "_".join(str(p) for p in first["loc"]).upper()
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from None
