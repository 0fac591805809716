"""What admin commands get from the CLI's composition layer (``bot/cli.py``): running work
against the built services, failing with one clear line, and naming who acted.

``AppServices`` lists what admin code may use of the running services; ``bot.services``'s
``Services`` provides it (checked by mypy where ``bot/cli.py`` passes it in).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flows.broadcasts import Broadcaster
from flows.catalogue import Catalogue
from flows.needs.service import NeedsService
from flows.polls.service import PollService
from flows.rounds.service import RoundsService
from flows.tenders.service import TenderService

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> datetime: ...


class AppServices(Protocol):
    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def broadcasts(self) -> Broadcaster: ...

    @property
    def polls(self) -> PollService | None: ...

    @property
    def needs(self) -> NeedsService: ...

    @property
    def catalogue(self) -> Catalogue: ...

    @property
    def tenders(self) -> TenderService: ...

    @property
    def rounds(self) -> RoundsService: ...


class Runtime(Protocol):
    def fail(self, message: str) -> typer.Exit:
        """Print ``error: message`` on stderr; raise what this returns (exit status 2)."""
        ...

    def actor(self) -> str:
        """Who is acting, for the audit log: ``cli:<login name>``."""
        ...

    def run(self, work: Callable[[AppServices], Awaitable[T]]) -> T:
        """Build the services from settings, run ``work``, close them. A database that can't
        be reached or isn't upgraded, and the domains' own errors, become :meth:`fail`."""
        ...
