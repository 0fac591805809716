"""Typed settings, read from the environment (prefix ``CIVICBOT_``) and an optional ``.env`` file.

Nothing here is built at import time: the composition root calls :func:`load_settings` once and
passes the object down. Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from decimal import Decimal
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # The web simulator and the API docs. Unset: on only when ``public_url`` is a loopback
    # address (a laptop), so a deployment serves neither unless asked.
    simulator: Literal["on", "off"] | None = None
    # Inbound floods: messages one phone number may send a minute (past it, SMS are dropped
    # unanswered, except STOP), and messages to the simulator a minute from one client address.
    inbound_per_minute: int = Field(default=20, ge=1)
    simulator_per_minute: int = Field(default=60, ge=1)

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
    # This process's name as a dispatcher (rows it claims carry it; a restart under the same
    # name takes its rows left mid-send back at once). One dispatcher per name.
    worker_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=100)
    run_dispatcher: bool = True
    run_scheduler: bool = True
    # One batch claims at most about this many seconds of sends at a channel's rate, so a reply
    # waits behind at most that much bulk another worker already holds.
    dispatcher_claim_seconds: float = Field(default=1.0, gt=0)
    # Recipients one dispatcher sends to at once (each send still waits for the rate limit):
    # more keeps a slow provider answer from holding the rate down. A crash can leave up to
    # this many sends in flight (see docs/scale.md).
    dispatcher_concurrency: int = Field(default=4, ge=1, le=64)
    # Send slots are spaced so that sends reaching a provider up to this much after their slot
    # still never put more than its limit into any of its counting windows (channels/pacing.py);
    # it costs margin / (1 + margin) of a per-second rate. A sender waking more than half of
    # it late gives its slot up and takes another.
    rate_margin_seconds: float = Field(default=0.04, gt=0, le=1)

    # Scale-out on PostgreSQL (several `civicbot worker` processes; see docs/scale.md). The
    # scheduler's leader lease lasts this long and is renewed every third of it; a dead
    # holder's lease is taken over within 4/3 of it. Workers record a heartbeat this often,
    # and the health endpoint reports the worker missing when none is newer than the last.
    leader_lease_seconds: float = Field(default=15.0, ge=1)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    worker_stale_seconds: float = Field(default=30.0, gt=0)

    # Twilio SMS: enabled when the account SID and auth token are set; sends go from
    # ``twilio_from_number`` or through ``twilio_messaging_service_sid``.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_base: str = "https://api.twilio.com"  # a local fake server in tests
    twilio_mps: float = Field(default=10.0, gt=0)  # sends per second
    twilio_timeout_seconds: float = Field(default=15.0, gt=0)
    sms_max_segments: int = Field(default=3, ge=1, le=10)  # longer content is paged: "Reply MORE"
    # What one SMS segment costs, for broadcast estimates (GBP).
    sms_segment_price: Decimal = Field(default=Decimal("0.04"), ge=0, max_digits=8)

    # Telegram: enabled when the bot token is set. ``webhook`` mode (the default) needs the
    # webhook secret and a public URL; ``polling`` suits a laptop with no public URL.
    telegram_token: SecretStr | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org"  # a local Bot API server in tests
    telegram_mode: Literal["webhook", "polling"] = "webhook"
    telegram_rate_per_second: float = Field(default=30.0, gt=0)  # all chats together
    telegram_chat_interval_seconds: float = Field(default=1.0, ge=0)  # between sends to one chat
    telegram_group_per_minute: int = Field(default=20, ge=1)  # sends to one group
    scheduler_interval_seconds: float = Field(default=30.0, gt=0)  # how often due jobs run

    # Needs assessments: a group whose share of respondents, divided by its share of the
    # census, is below this is reported under-represented (and ``needs remind`` targets it).
    under_represented_ratio: float = Field(default=0.8, gt=0, le=1)

    # ---- tender alerts (flows/tenders) ----------------------------------------------------
    # The live OCDS APIs `civicbot tenders fetch` pages through (a local fake server in
    # tests), and how often `serve` fetches from both (minutes; 0 turns it off).
    contracts_finder_api_base: str = "https://www.contractsfinder.service.gov.uk"
    find_a_tender_api_base: str = "https://www.find-tender.service.gov.uk"
    tender_fetch_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60)

    # Admin web app (/admin): a signed-in session ends after this long without a request.
    admin_session_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)

    @field_validator(
        "twilio_account_sid",
        "twilio_auth_token",
        "twilio_from_number",
        "twilio_messaging_service_sid",
        "telegram_token",
        "telegram_webhook_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # CIVICBOT_X= (as a compose file passes an unset variable on) means "not set".
        return None if value == "" else value

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

    @field_validator(
        "twilio_api_base",
        "telegram_api_base",
        "contracts_finder_api_base",
        "find_a_tender_api_base",
    )
    @classmethod
    def _api_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _sms_sender(self) -> Settings:
        if self.sms_enabled and not (self.twilio_from_number or self.twilio_messaging_service_sid):
            raise ValueError(
                "SMS needs CIVICBOT_TWILIO_FROM_NUMBER or CIVICBOT_TWILIO_MESSAGING_SERVICE_SID"
            )
        return self

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _telegram_secret_chars(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram's own rule for secret_token: 1-256 of A-Z, a-z, 0-9, _ and -.
        secret = None if value is None else value.get_secret_value()
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @model_validator(mode="after")
    def _telegram_webhook_secret(self) -> Settings:
        if (
            self.telegram_enabled
            and self.telegram_mode == "webhook"
            and self.telegram_webhook_secret is None
        ):
            raise ValueError(
                "Telegram webhook mode needs CIVICBOT_TELEGRAM_WEBHOOK_SECRET "
                "(or set CIVICBOT_TELEGRAM_MODE=polling)"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def simulator_enabled(self) -> bool:
        """Whether the web simulator (its page, API, channels) and the API docs are served."""
        if self.simulator is not None:
            return self.simulator == "on"
        return is_loopback_url(self.public_url)

    @property
    def sms_enabled(self) -> bool:
        """The Twilio SMS channel runs when the account SID and auth token are both set."""
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def telegram_enabled(self) -> bool:
        """The Telegram channel runs when the bot token is set."""
        return self.telegram_token is not None and bool(self.telegram_token.get_secret_value())


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is this machine: ``localhost``, 127.0.0.0/8 or ::1."""
    host = urlsplit(url).hostname
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost
        return False


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation error into one line that names the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a rule across settings; its message names them
            raise SettingsError(f"invalid settings: {first['msg']}") from None
        name = "CIVICBOT_" + "_".join(str(p) for p in first["loc"]).upper()
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from None
