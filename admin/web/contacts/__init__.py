"""Contacts and conversations (``/admin/contacts``): find a resident by phone number (any
way it is written: read with phonenumbers) or Telegram name, and read their thread both ways
with delivery status. A contact erased by FORGET shows nothing but that it was erased."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import phonenumbers
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from admin.web.i18n import _
from admin.web.shell import Area, Refused, Shell
from flows.broadcasts import CHANNEL_GROUPS
from storage.models import ChannelIdentity, Contact, InboundMessage, OutboundMessage, Ward

PAGE = 50
THREAD = 100
QUERY_MAX = 100
SMS_CHANNELS = CHANNEL_GROUPS["sms"]
TELEGRAM_CHANNELS = CHANNEL_GROUPS["telegram"]
ALL_CHANNELS = tuple(name for names in CHANNEL_GROUPS.values() for name in names)


@dataclass(frozen=True)
class Line:
    """One message in a thread."""

    direction: str  # in | out
    at: datetime
    text: str
    status: str = ""
    error: str = ""
    channel: str = ""


def contact_status(contact: Contact) -> str:
    if contact.erased_at is not None:
        return "erased"
    if contact.opted_out_at is not None:
        return "opted out"
    return "consented" if contact.consent_at is not None else "not consented"


def clean_query(raw: str) -> str:
    return "".join(ch for ch in raw if ch.isprintable()).strip()


def phone_forms(text: str, region: str) -> list[str]:
    """The E.164 number ``text`` is, if it reads as a phone number (07700 900123,
    +44 7700 900123, 0044-7700-900123 all give +447700900123)."""
    if sum(ch.isdigit() for ch in text) < 5:
        return []
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return []
    if not phonenumbers.is_possible_number(number):
        return []
    return [phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)]


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search(session: AsyncSession, text: str, region: str) -> list[int]:
    """Contact ids (newest first) whose identity is this phone number or this address
    exactly (through the address index), or, for text that is not a phone number, whose
    Telegram name contains it."""
    phones = phone_forms(text, region)
    exact = (
        select(col(ChannelIdentity.contact_id))
        .where(
            col(ChannelIdentity.address).in_([text, *phones]),
            col(ChannelIdentity.channel).in_(ALL_CHANNELS),
        )
        .limit(PAGE)
    )
    found = {int(i) for i in (await session.execute(exact)).scalars()}
    if len(text) >= 2 and not phones:
        named = (
            select(col(ChannelIdentity.contact_id))
            .where(
                col(ChannelIdentity.channel).in_(TELEGRAM_CHANNELS),
                func.lower(col(ChannelIdentity.display_name)).like(_like(text), escape="\\"),
            )
            .order_by(col(ChannelIdentity.contact_id).desc())
            .limit(PAGE)
        )
        found.update(int(i) for i in (await session.execute(named)).scalars())
    return sorted(found, reverse=True)[:PAGE]


async def rows_for(session: AsyncSession, ids: list[int]) -> list[dict[str, Any]]:
    """What the list shows of each contact: channels, ward, language, status."""
    if not ids:
        return []
    found = await session.execute(select(Contact).where(col(Contact.id).in_(ids)))
    contacts = {c.id: c for c in found.scalars()}
    identities: dict[int, list[ChannelIdentity]] = {}
    query = select(ChannelIdentity).where(col(ChannelIdentity.contact_id).in_(ids))
    for identity in (await session.execute(query)).scalars():
        identities.setdefault(identity.contact_id, []).append(identity)
    ward_names = await _ward_names(session)
    rows = []
    for contact_id in ids:
        contact = contacts.get(contact_id)
        if contact is None:
            continue
        rows.append(
            {
                "id": contact_id,
                "identities": identities.get(contact_id, []),
                "ward": ward_names.get(contact.ward_code or "", ""),
                "language": contact.language,
                "status": contact_status(contact),
                "created_at": contact.created_at,
            }
        )
    return rows


async def _ward_names(session: AsyncSession) -> dict[str, str]:
    return {w.code: w.name for w in (await session.execute(select(Ward))).scalars()}


async def thread(
    session: AsyncSession, contact_id: int, before_in: int | None, before_out: int | None
) -> tuple[list[Line], dict[str, int | None] | None]:
    """The newest messages both ways (before the cursors), oldest first, and the cursors for
    older ones (None when there are none)."""
    inbound = select(InboundMessage).where(col(InboundMessage.contact_id) == contact_id)
    if before_in is not None:
        inbound = inbound.where(col(InboundMessage.id) < before_in)
    outbound = select(OutboundMessage).where(col(OutboundMessage.contact_id) == contact_id)
    if before_out is not None:
        outbound = outbound.where(col(OutboundMessage.id) < before_out)
    ins = (
        (await session.execute(inbound.order_by(col(InboundMessage.id).desc()).limit(THREAD + 1)))
        .scalars()
        .all()
    )
    outs = (
        (await session.execute(outbound.order_by(col(OutboundMessage.id).desc()).limit(THREAD + 1)))
        .scalars()
        .all()
    )
    # Newest first; at the same moment a reply comes after the message it answers
    # (outbound rows name it), and other messages after both.
    never = 2**63
    merged: list[tuple[tuple[datetime, int, int, int], str, Any]] = [
        ((m.received_at, m.id or 0, 0, m.id or 0), "in", m) for m in ins
    ] + [((m.created_at, m.inbound_id or never, 1, m.id or 0), "out", m) for m in outs]
    merged.sort(key=lambda item: item[0], reverse=True)
    shown = merged[:THREAD]
    lines = []
    for (at, *_order), direction, m in reversed(shown):
        if direction == "in":
            text = m.text or ""
            if not text and isinstance(m.raw, dict) and m.raw.get("kind") == "callback_query":
                text = _("(tapped a button)")
            lines.append(Line("in", at, text, channel=m.channel))
        else:
            content = m.content or {}
            lines.append(
                Line(
                    "out",
                    at,
                    str(content.get("text", "")),
                    status=m.status,
                    error=m.error or "",
                    channel=m.channel,
                )
            )
    if len(merged) <= THREAD:
        return lines, None
    # Older messages: each table continues from the oldest of its messages shown here.
    older_in = min((m.id for _, d, m in shown if d == "in"), default=before_in)
    older_out = min((m.id for _, d, m in shown if d == "out"), default=before_out)
    return lines, {"before_in": older_in, "before_out": older_out}


def router(shell: Shell) -> APIRouter:
    api = shell.router(AREA)

    @api.get("", response_class=HTMLResponse)
    async def contacts(
        request: Request,
        q: str = Query(default="", max_length=1000),
        before: int | None = Query(default=None, ge=1, le=2**62),
    ) -> HTMLResponse:
        text = clean_query(q)
        errors: dict[str, str] = {}
        rows: list[dict[str, Any]] = []
        next_before = None
        async with shell.services.sessions() as session:
            if len(text) > QUERY_MAX:
                errors["q"] = _("Search for {n} characters or fewer").format(n=QUERY_MAX)
            elif text:
                rows = await rows_for(
                    session, await search(session, text, shell.config.default_region)
                )
            else:
                query = select(col(Contact.id)).order_by(col(Contact.id).desc()).limit(PAGE)
                if before is not None:
                    query = query.where(col(Contact.id) < before)
                ids = [int(i or 0) for i in (await session.execute(query)).scalars()]
                rows = await rows_for(session, ids)
                if len(ids) == PAGE:
                    next_before = ids[-1]
        return shell.render(
            request,
            "contacts/list.html",
            {
                "q": text[:QUERY_MAX] if not errors else q[:QUERY_MAX],
                "searched": bool(text) and not errors,
                "rows": rows,
                "errors": errors,
                "next_before": next_before,
            },
            status=400 if errors else 200,
            title=_("Contacts"),
        )

    @api.get("/{contact_id}", response_class=HTMLResponse)
    async def contact(
        request: Request,
        contact_id: int,
        before_in: int | None = Query(default=None, ge=1, le=2**62),
        before_out: int | None = Query(default=None, ge=1, le=2**62),
    ) -> HTMLResponse:
        if not 0 < contact_id < 2**62:
            raise Refused(404, _("Page not found"), _("There is no such contact."))
        async with shell.services.sessions() as session:
            found = await session.get(Contact, contact_id)
            if found is None:
                raise Refused(404, _("Page not found"), _("There is no such contact."))
            if found.erased_at is not None:
                return shell.render(
                    request,
                    "contacts/erased.html",
                    {"contact_id": contact_id, "erased_at": found.erased_at},
                    title=_("Contact {id}").format(id=contact_id),
                )
            identities = (
                (
                    await session.execute(
                        select(ChannelIdentity)
                        .where(col(ChannelIdentity.contact_id) == contact_id)
                        .order_by(col(ChannelIdentity.id))
                    )
                )
                .scalars()
                .all()
            )
            ward = await session.get(Ward, found.ward_code) if found.ward_code else None
            lines, older = await thread(session, contact_id, before_in, before_out)
        return shell.render(
            request,
            "contacts/contact.html",
            {
                "contact": found,
                "status": contact_status(found),
                "identities": identities,
                "ward": ward,
                "lines": lines,
                "older": older,
            },
            title=_("Contact {id}").format(id=contact_id),
        )

    return api


AREA = Area(
    name="contacts",
    label=_("Contacts"),
    build=router,
    templates=Path(__file__).parent / "templates",
)
