"""What the admin web app is given by the composition root (``bot/admin_web.py``): the
running services it may use, a few settings values, and a renderer for previews. The admin
side never imports ``bot`` or a channel library; everything arrives through these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flows.broadcasts import Broadcaster
from flows.catalogue import Catalogue
from flows.polls.service import PollService


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class Rendered:
    """A message as one channel would send it: its pages (SMS longer than the page limit is
    sent a page at a time, "Reply MORE"), each with its SMS segments, and the encoding."""

    channel: str  # sms | telegram
    language: str
    pages: tuple[str, ...]
    segments: tuple[int, ...]  # per page (1 a page on Telegram)
    encoding: str  # GSM-7 | UCS-2 (SMS); "" for Telegram

    @property
    def total_segments(self) -> int:
        return sum(self.segments)


class Renderer(Protocol):
    def render(self, channel: str, text: str, language: str) -> Rendered:
        """``text`` as ``channel`` (sms or telegram) would send it to someone in ``language``."""
        ...


class AdminServices(Protocol):
    """The running services the admin pages use (``bot.services.Services`` provides them)."""

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def broadcasts(self) -> Broadcaster: ...

    @property
    def polls(self) -> PollService | None: ...

    @property
    def catalogue(self) -> Catalogue: ...


@dataclass(frozen=True)
class AdminConfig:
    """Settings values the admin pages need (from ``bot.settings.Settings``)."""

    session_minutes: int = 60
    secure_cookies: bool = False  # when CIVICBOT_PUBLIC_URL is https
    default_region: str = "GB"
    default_language: str = "en"
    sms_segment_price: Decimal = Decimal("0.04")
    channels: tuple[str, ...] = ()  # the channels that run (sms, sim-sms, telegram, ...)
    telegram_enabled: bool = False
