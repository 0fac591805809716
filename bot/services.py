"""The composition root: everything civicbot runs on, built from one Settings object.

Features are listed here by hand. Nothing is constructed at import time; tests call
:func:`build_services` with their own ``Settings`` (and clock, and extra channels or actions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.actions import builtin_actions
from bot.broadcast import BroadcastService
from bot.clock import Clock, SystemClock
from bot.coordination import SharedChatLimiter, SharedRateLimiter
from bot.dispatcher import Dispatcher, SendLimiter
from bot.pipeline import Action, Pipeline
from bot.settings import Settings
from bot.telegram import TelegramPollTransport, TelegramUpdates
from channels.base import Channel
from channels.simulator import STYLES, SimulatorChannel
from channels.telegram.client import CHANNEL as TELEGRAM
from channels.telegram.client import ChatLimiter, ChatLimits, TelegramChannel
from channels.telegram.router import UpdateRouter
from channels.twilio_sms import TwilioSmsChannel
from flows.catalogue import Catalogue, load_catalogue
from flows.engine import Engine
from flows.library import BUILTIN_DIR, FlowLibrary, load_library
from flows.needs.actions import needs_actions
from flows.needs.service import NeedsService
from flows.polls.service import PollService
from flows.rounds import actions as round_actions
from flows.rounds.service import RoundsService
from flows.tenders import actions as tender_actions
from flows.tenders.service import TenderService
from storage.db import create_engine, session_factory


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    library: FlowLibrary
    engine: Engine
    channels: dict[str, Channel]
    actions: dict[str, Action]
    pipeline: Pipeline
    dispatcher: Dispatcher
    broadcasts: BroadcastService
    needs: NeedsService
    tenders: TenderService
    rounds: RoundsService
    polls: PollService | None = None  # with Telegram
    telegram: UpdateRouter | None = None  # with Telegram
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def catalogue(self) -> Catalogue:
        return self.library.catalogue

    async def check_database(self) -> None:
        async with self.db.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        for channel in self.channels.values():
            aclose = getattr(channel, "aclose", None)  # adapters holding HTTP clients
            if aclose is not None:
                await aclose()
        await self.db.dispose()


def twilio_sms_channel(settings: Settings, catalogue: Catalogue) -> TwilioSmsChannel:
    assert settings.twilio_account_sid and settings.twilio_auth_token
    return TwilioSmsChannel(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        public_url=settings.public_url,
        catalogue=catalogue,
        from_number=settings.twilio_from_number,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        api_base=settings.twilio_api_base,
        rate_per_second=settings.twilio_mps,
        max_segments=settings.sms_max_segments,
        default_region=settings.default_region,
        timeout=settings.twilio_timeout_seconds,
    )


def telegram_channel(
    settings: Settings,
    catalogue: Catalogue,
    sessions: async_sessionmaker[AsyncSession] | None = None,
) -> TelegramChannel:
    """With ``sessions`` on PostgreSQL, the per-chat limits are shared by every process."""
    assert settings.telegram_token is not None
    limiter: ChatLimits
    if sessions is not None and not settings.is_sqlite:
        limiter = SharedChatLimiter(
            sessions,
            interval=settings.telegram_chat_interval_seconds,
            group_per_minute=settings.telegram_group_per_minute,
            margin=settings.rate_margin_seconds,
        )
    else:
        limiter = ChatLimiter(
            interval=settings.telegram_chat_interval_seconds,
            group_per_minute=settings.telegram_group_per_minute,
            margin=settings.rate_margin_seconds,
        )
    return TelegramChannel(
        token=settings.telegram_token.get_secret_value(),
        catalogue=catalogue,
        api_base=settings.telegram_api_base,
        rate_per_second=settings.telegram_rate_per_second,
        limiter=limiter,
    )


def send_limiters(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    channels: Mapping[str, Channel],
) -> dict[str, SendLimiter]:
    """On PostgreSQL each channel's send rate is one bucket in the database, shared by every
    worker; on SQLite (one process) the dispatcher keeps its own."""
    if settings.is_sqlite:
        return {}
    return {
        name: SharedRateLimiter(
            sessions, f"channel:{name}", channel.rate_per_second,
            margin=settings.rate_margin_seconds,
        )
        for name, channel in channels.items()
    }


NEEDS_FLOWS = Path(__file__).resolve().parents[1] / "flows" / "needs"
TENDER_FLOWS = Path(tender_actions.__file__).parent
ROUND_FLOWS = Path(round_actions.__file__).parent
DOMAIN_FLOWS: tuple[Path, ...] = (NEEDS_FLOWS, TENDER_FLOWS, ROUND_FLOWS)
"""Each domain's flow folder (``flows/<domain>/``), listed by hand; loaded after the core
flows and before a council's own (``CIVICBOT_FLOWS_DIR``)."""


def registered_actions(catalogue: Catalogue | None = None) -> dict[str, Action]:
    """Every action flows may call: the core ones and each domain's, listed by hand. Some
    show labels from the catalogue (the shipped one unless given)."""
    catalogue = catalogue or load_catalogue()
    return {
        **builtin_actions(),
        **needs_actions(),
        **tender_actions.build_actions(catalogue),
        **round_actions.build_actions(catalogue),
    }


def flow_folders(settings: Settings) -> list[Path]:
    return [BUILTIN_DIR, *DOMAIN_FLOWS, *([settings.flows_dir] if settings.flows_dir else [])]


def build_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    channels: Mapping[str, Channel] | None = None,
    actions: Mapping[str, Action] | None = None,
) -> Services:
    clock = clock or SystemClock()
    db = create_engine(settings.database_url)
    sessions = session_factory(db)

    folders = flow_folders(settings)
    catalogue = load_catalogue(f for f in folders if f != BUILTIN_DIR)
    actions = {**registered_actions(catalogue), **(actions or {})}
    library = load_library(folders, known_actions=actions)
    catalogue = library.catalogue

    all_channels: dict[str, Channel] = {}
    # Without the simulator its channels are not built either: its residents get nothing
    # (broadcasts skip them) and their queued messages wait until it is on again.
    for style in STYLES if settings.simulator_enabled else ():
        simulator = SimulatorChannel(
            style,
            catalogue,
            rate_per_second=settings.simulator_rate_per_second,
            max_segments=settings.sms_max_segments,
        )
        all_channels[simulator.name] = simulator
    if settings.sms_enabled:
        sms = twilio_sms_channel(settings, catalogue)
        all_channels[sms.name] = sms
    telegram: TelegramChannel | None = None
    if settings.telegram_enabled:
        telegram = telegram_channel(settings, catalogue, sessions)
        all_channels[telegram.name] = telegram
    all_channels.update(channels or {})

    engine = Engine(library, timeout=timedelta(minutes=settings.conversation_timeout_minutes))
    dispatcher = Dispatcher(
        sessions=sessions,
        channels=all_channels,
        clock=clock,
        settings=settings,
        limiters=send_limiters(settings, sessions, all_channels),
    )
    pipeline = Pipeline(
        sessions=sessions,
        engine=engine,
        channels=all_channels,
        actions=actions,
        clock=clock,
        default_language=settings.default_language,
        max_text_chars=settings.max_inbound_chars,
        on_outbox=dispatcher.wake,
        one_writer=settings.is_sqlite,
    )
    broadcasts = BroadcastService(
        sessions=sessions,
        pipeline=pipeline,
        engine=engine,
        channels=all_channels,
        clock=clock,
        default_language=settings.default_language,
        sms_segment_price=settings.sms_segment_price,
        on_outbox=dispatcher.wake,
    )
    needs = NeedsService(
        sessions=sessions,
        broadcaster=broadcasts,
        clock=clock,
        under_represented_ratio=settings.under_represented_ratio,
    )
    rounds = RoundsService(
        sessions=sessions, broadcaster=broadcasts, catalogue=catalogue, clock=clock
    )
    tenders = TenderService(
        sessions=sessions,
        broadcaster=broadcasts,
        catalogue=catalogue,
        clock=clock,
        feed_bases={
            "contracts-finder": settings.contracts_finder_api_base,
            "find-a-tender": settings.find_a_tender_api_base,
        },
    )
    polls: PollService | None = None
    router: UpdateRouter | None = None
    telegram = telegram if isinstance(all_channels.get(TELEGRAM), TelegramChannel) else None
    if telegram is not None:
        assert settings.telegram_token is not None
        polls = PollService(
            sessions=sessions,
            transport=TelegramPollTransport(telegram),
            broadcaster=broadcasts,
            catalogue=catalogue,
            clock=clock,
            voter_secret=settings.telegram_token.get_secret_value().encode(),
            default_language=settings.default_language,
        )
        router = UpdateRouter(
            telegram,
            TelegramUpdates(
                telegram=telegram,
                pipeline=pipeline,
                sessions=sessions,
                polls=polls,
                broadcaster=broadcasts,
                catalogue=catalogue,
                clock=clock,
            ),
        )
    return Services(
        settings=settings,
        clock=clock,
        db=db,
        sessions=sessions,
        library=library,
        engine=engine,
        channels=all_channels,
        actions=actions,
        pipeline=pipeline,
        dispatcher=dispatcher,
        broadcasts=broadcasts,
        needs=needs,
        tenders=tenders,
        rounds=rounds,
        polls=polls,
        telegram=router,
    )
