"""The dashboard (``/admin/``): who has joined and from where, what goes out and whether it
arrives. Counts per day are read per UTC hour through the time indexes and folded into UK
days here (so BST days are right on SQLite and PostgreSQL alike); a finished day is counted
once and kept, so a view reads a month of a million messages without recounting it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from admin.web.charts import bar_chart, day_chart
from admin.web.i18n import _
from admin.web.shell import LONDON, Area, Shell
from storage import admin as store
from storage.models import (
    ChannelIdentity,
    Contact,
    InboundMessage,
    OutboundMessage,
    OutboxStatus,
    Ward,
)

DAYS = 30
RATE_DAYS = 7
ERRORS_SHOWN = 10
CHANNEL_LABELS = {
    "sms": "SMS",
    "telegram": "Telegram",
    "sim-sms": "Simulator (SMS)",
    "sim-telegram": "Simulator (Telegram)",
}
LANGUAGE_LABELS = {"en": "English", "cy": "Cymraeg (Welsh)"}


METRICS: dict[str, Any] = {
    "joined": col(Contact.consent_at),
    "opted_out": col(Contact.opted_out_at),
    "received": col(InboundMessage.received_at),
    "sent": col(OutboundMessage.created_at),
}


def _hour(session: AsyncSession, column: Any) -> ColumnElement[Any]:
    """The UTC hour of a timestamp column, as text the same on both databases."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return func.strftime("%Y-%m-%d %H", column)


def day_start(day: date) -> datetime:
    """When a UK day starts, in UTC (midnight GMT or BST)."""
    return datetime(day.year, day.month, day.day, tzinfo=LONDON).astimezone(UTC)


async def count_days(
    session: AsyncSession, column: Any, start: datetime, end: datetime
) -> Counter[date]:
    """Rows with ``column`` in [start, end), per UK day: counted per UTC hour through the
    column's index, then folded into UK days here (right across BST changes, on both
    databases)."""
    hour = _hour(session, column)
    query = select(hour, func.count()).where(column >= start, column < end).group_by(hour)
    counts: Counter[date] = Counter()
    for bucket, n in (await session.execute(query)).all():
        utc = datetime.strptime(str(bucket), "%Y-%m-%d %H").replace(tzinfo=UTC)
        counts[utc.astimezone(LONDON).date()] += int(n)
    return counts


async def day_series(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> dict[str, list[tuple[date, int]]]:
    """The last ``DAYS`` UK days of each figure. Finished days are counted once and kept
    (``admin_daily_counts``); only today is counted on every view."""
    today = now.astimezone(LONDON).date()
    days = [today - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    async with sessions() as session:
        kept = await store.daily_counts(session, first=days[0], last=days[-2])
    missing = sorted({d for d in days[:-1] for m in METRICS if (d, m) not in kept})
    if missing:
        fresh: dict[tuple[date, str], int] = {}
        async with sessions() as session, session.begin():
            for metric, column in METRICS.items():
                counted = await count_days(session, column, day_start(missing[0]), day_start(today))
                for day in missing:
                    fresh[(day, metric)] = counted[day]
            await store.save_daily_counts(session, counts=fresh, now=now)
        kept.update(fresh)
    async with sessions() as session:
        for metric, column in METRICS.items():
            n = (
                await session.execute(select(func.count()).where(column >= day_start(today)))
            ).scalar_one()
            kept[(today, metric)] = int(n)
    return {metric: [(d, kept.get((d, metric), 0)) for d in days] for metric in METRICS}


async def dashboard_data(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> dict[str, Any]:
    series = await day_series(sessions, now)
    async with sessions() as session:
        data = await figures_now(session, now)
    return {
        **data,
        "joins": series["joined"],
        "opt_outs": series["opted_out"],
        "received": series["received"],
        "sent": series["sent"],
    }


async def figures_now(session: AsyncSession, now: datetime) -> dict[str, Any]:
    # Each figure reads one index only (no pass over the table): identities per channel (a
    # contact has one identity a channel), contacts per ward and language, consents, opt-outs.
    by_channel = (
        await session.execute(
            select(col(ChannelIdentity.channel), func.count())
            .group_by(col(ChannelIdentity.channel))
            .order_by(col(ChannelIdentity.channel))
        )
    ).all()
    ward_language = (
        await session.execute(
            select(col(Contact.ward_code), col(Contact.language), func.count())
            .where(col(Contact.erased_at).is_(None))
            .group_by(col(Contact.ward_code), col(Contact.language))
            .order_by(col(Contact.ward_code), col(Contact.language))
        )
    ).all()
    ward_counts: Counter[str | None] = Counter()
    language_counts: Counter[str] = Counter()
    for ward_code, language, n in ward_language:
        ward_counts[ward_code] += n
        language_counts[str(language)] += n
    # FORGET blanks consent and opt-out, so these count only people still here.
    consented = (
        await session.execute(select(func.count()).where(col(Contact.consent_at).is_not(None)))
    ).scalar_one()
    opted_out = (
        await session.execute(select(func.count()).where(col(Contact.opted_out_at).is_not(None)))
    ).scalar_one()
    totals = {
        "contacts": sum(language_counts.values()),
        "consented": int(consented),
        "opted_out": int(opted_out),
    }
    wards = (await session.execute(select(Ward).order_by(col(Ward.name)))).scalars().all()
    by_ward = [(w.name, int(ward_counts.get(w.code, 0))) for w in wards]
    by_ward.append((_("No ward yet"), int(ward_counts.get(None, 0))))

    outbox = (
        await session.execute(
            select(col(OutboundMessage.status), func.count(), func.min(OutboundMessage.created_at))
            .where(col(OutboundMessage.status).in_([OutboxStatus.QUEUED, OutboxStatus.SENDING]))
            .group_by(col(OutboundMessage.status))
        )
    ).all()
    waiting = {str(s): (int(n), oldest) for s, n, oldest in outbox}
    rate_since = now - timedelta(days=RATE_DAYS)
    failed_recent = (
        await session.execute(
            select(func.count()).where(
                col(OutboundMessage.status) == OutboxStatus.FAILED,
                col(OutboundMessage.created_at) >= rate_since,
            )
        )
    ).scalar_one()
    rates_rows = (
        await session.execute(
            select(col(OutboundMessage.channel), col(OutboundMessage.status), func.count())
            .where(col(OutboundMessage.created_at) >= rate_since)
            .group_by(col(OutboundMessage.channel), col(OutboundMessage.status))
        )
    ).all()
    errors = (
        await session.execute(
            select(
                col(OutboundMessage.id),
                col(OutboundMessage.channel),
                col(OutboundMessage.contact_id),
                col(OutboundMessage.status),
                col(OutboundMessage.error),
                col(OutboundMessage.updated_at),
            )
            .where(col(OutboundMessage.error).is_not(None))
            .order_by(col(OutboundMessage.updated_at).desc())
            .limit(ERRORS_SHOWN)
        )
    ).all()
    return {
        "totals": totals,
        "by_channel": [(CHANNEL_LABELS.get(c, c), int(n)) for c, n in by_channel],
        "by_language": [(LANGUAGE_LABELS.get(c, c), n) for c, n in sorted(language_counts.items())],
        "by_ward": by_ward,
        "queued": waiting.get(OutboxStatus.QUEUED, (0, None)),
        "sending": waiting.get(OutboxStatus.SENDING, (0, None)),
        "failed_recent": int(failed_recent),
        "rates": delivery_rates(rates_rows),
        "errors": errors,
    }


FINISHED_OK = (OutboxStatus.SENT, OutboxStatus.DELIVERED)
FINISHED_BAD = (OutboxStatus.UNDELIVERED, OutboxStatus.FAILED)


def delivery_rates(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Per channel: messages by status, and the share of finished ones that went (accepted
    by the provider, or delivered where it reports delivery)."""
    table: dict[str, Counter[str]] = {}
    for channel, status, n in rows:
        table.setdefault(str(channel), Counter())[str(status)] += int(n)
    result = []
    for channel in sorted(table):
        counts = table[channel]
        good = sum(counts[s] for s in FINISHED_OK)
        bad = sum(counts[s] for s in FINISHED_BAD)
        result.append(
            {
                "channel": CHANNEL_LABELS.get(channel, channel),
                "total": sum(counts.values()),
                "waiting": counts[OutboxStatus.QUEUED] + counts[OutboxStatus.SENDING],
                "sent": counts[OutboxStatus.SENT],
                "delivered": counts[OutboxStatus.DELIVERED],
                "failed": bad,
                "cancelled": counts[OutboxStatus.CANCELLED],
                "rate": None if good + bad == 0 else round(100 * good / (good + bad), 1),
            }
        )
    return result


def router(shell: Shell) -> APIRouter:
    api = shell.router(AREA, prefix="")

    @api.get("/", response_class=HTMLResponse)
    async def dashboard(request: Request) -> HTMLResponse:
        now = shell.now()
        data = await dashboard_data(shell.services.sessions, now)
        charts = {
            "channel": bar_chart(
                "by-channel",
                _("Contacts by channel"),
                data["by_channel"],
                label_heading=_("Channel"),
                value_heading=_("Contacts"),
            ),
            "language": bar_chart(
                "by-language",
                _("Contacts by language"),
                data["by_language"],
                label_heading=_("Language"),
                value_heading=_("Contacts"),
            ),
            "ward": bar_chart(
                "by-ward",
                _("Contacts by ward"),
                data["by_ward"],
                label_heading=_("Ward"),
                value_heading=_("Contacts"),
            ),
            "joins": day_chart(
                "joins",
                _("Joined per day (gave consent)"),
                data["joins"],
                value_heading=_("Joined"),
            ),
            "opt_outs": day_chart(
                "opt-outs",
                _("Opted out per day"),
                data["opt_outs"],
                value_heading=_("Opted out"),
            ),
            "received": day_chart(
                "received",
                _("Messages received per day"),
                data["received"],
                value_heading=_("Received"),
            ),
            "sent": day_chart(
                "sent", _("Messages sent per day"), data["sent"], value_heading=_("Sent")
            ),
        }
        queued, oldest_queued = data["queued"]
        sending, oldest_sending = data["sending"]
        oldest = min((t for t in (oldest_queued, oldest_sending) if t is not None), default=None)
        return shell.render(
            request,
            "dashboard/index.html",
            {
                **data,
                "charts": charts,
                "waiting": {
                    "queued": queued,
                    "sending": sending,
                    "oldest_age": None if oldest is None else now - oldest,
                },
                "days": DAYS,
                "rate_days": RATE_DAYS,
                "channel_labels": CHANNEL_LABELS,
            },
            title=_("Dashboard"),
        )

    return api


AREA = Area(
    name="dashboard",
    label=_("Dashboard"),
    build=router,
    templates=Path(__file__).parent / "templates",
)
