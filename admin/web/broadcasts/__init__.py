"""Broadcasts (``/admin/broadcasts``): compose in English and Welsh, choose the segment
(wards, channels, languages), check how it renders (SMS pages, segments, GSM-7 or UCS-2,
estimated cost; Telegram), then send now or schedule, and watch progress.

One thing per page, GOV.UK style: write it → check it (the confirmation step) → sent, with
its progress. Everything goes through the platform's broadcast path
(:class:`flows.broadcasts.Broadcaster`): consent, opt-outs, each resident at most once. The
check page carries the form's values in hidden fields, so nothing is stored until Send; its
key (made when the form is first shown) makes a double click one broadcast.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlmodel import col
from starlette.datastructures import FormData

from admin.web.i18n import _
from admin.web.ports import Rendered
from admin.web.shell import Area, Refused, Shell, actor, uk_time
from flows.broadcasts import CHANNEL_GROUPS, Audience, BroadcastError, BroadcastSpec, Segment
from storage import broadcasts as store
from storage.admin import Role, SignedIn
from storage.broadcasts import Broadcast
from storage.models import Ward

TEXT_MAX = 1600  # ten SMS segments of GSM-7
PAGE = 50
INLINE_MAX = 2000  # larger audiences are handed to the scheduler, so the page answers at once
KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
CHANNELS = (("sms", "SMS"), ("telegram", "Telegram"))
LANGUAGES = (("en", "English"), ("cy", "Cymraeg (Welsh)"))
LATEST_SCHEDULE = timedelta(days=366)


@dataclass
class Draft:
    """The compose form's values, as sent (and checked)."""

    text_en: str = ""
    text_cy: str = ""
    wards: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    when: str = "now"
    send_date: str = ""
    send_time: str = ""
    key: str = ""

    def hidden(self) -> list[tuple[str, str]]:
        """The values as (name, value) pairs for hidden fields."""
        pairs = [
            ("text_en", self.text_en),
            ("text_cy", self.text_cy),
            ("when", self.when),
            ("send_date", self.send_date),
            ("send_time", self.send_time),
            ("key", self.key),
        ]
        pairs += [("ward", w) for w in self.wards]
        pairs += [("channel", c) for c in self.channels]
        pairs += [("language", lang) for lang in self.languages]
        return pairs


def _text(value: Any) -> str:
    """Form text without control characters (newlines and tabs kept), ends trimmed."""
    if not isinstance(value, str):
        return ""
    return (
        "".join(ch for ch in value if ch in "\n\t" or ch.isprintable())
        .replace("\r\n", "\n")
        .strip()
    )


def read_draft(form: FormData) -> Draft:
    def many(name: str) -> list[str]:
        return [v for v in form.getlist(name) if isinstance(v, str)][:200]

    return Draft(
        text_en=_text(form.get("text_en")),
        text_cy=_text(form.get("text_cy")),
        wards=many("ward"),
        channels=many("channel"),
        languages=many("language"),
        when=_text(form.get("when")) or "now",
        send_date=_text(form.get("send_date"))[:20],
        send_time=_text(form.get("send_time"))[:20],
        key=_text(form.get("key"))[:64],
    )


def check_draft(
    draft: Draft, ward_codes: set[str], now: datetime
) -> tuple[dict[str, str], datetime | None]:
    """Problems with the draft, by field (in the order of the form), and when to send it
    (None: now)."""
    errors: dict[str, str] = {}
    if not draft.text_en:
        errors["text_en"] = _("Enter the message in English")
    elif len(draft.text_en) > TEXT_MAX:
        errors["text_en"] = _("The English message must be {n} characters or fewer").format(
            n=TEXT_MAX
        )
    if len(draft.text_cy) > TEXT_MAX:
        errors["text_cy"] = _("The Welsh message must be {n} characters or fewer").format(
            n=TEXT_MAX
        )
    unknown = [w for w in draft.wards if w not in ward_codes]
    if unknown:
        errors["ward"] = _("Choose wards from the list")
    if any(c not in dict(CHANNELS) for c in draft.channels):
        errors["channel"] = _("Choose SMS, Telegram or both")
    if any(lang not in dict(LANGUAGES) for lang in draft.languages):
        errors["language"] = _("Choose English, Welsh or both")
    send_at = None
    if draft.when not in ("now", "later"):
        errors["when"] = _("Choose when to send it")
    elif draft.when == "later":
        try:
            send_at = uk_time(draft.send_date, draft.send_time)
        except ValueError:
            errors["send_date"] = _(
                "Enter the date as YYYY-MM-DD and the time as HH:MM (24-hour), UK time"
            )
        else:
            if send_at <= now:
                errors["send_date"] = _("The time to send it must be in the future")
            elif send_at - now > LATEST_SCHEDULE:
                errors["send_date"] = _("Schedule it within a year")
    if not KEY.match(draft.key):
        draft.key = secrets.token_urlsafe(18)
    return errors, send_at


def spec_of(draft: Draft, staff: SignedIn, send_at: datetime | None) -> BroadcastSpec:
    text = {"en": draft.text_en} | ({"cy": draft.text_cy} if draft.text_cy else {})
    return BroadcastSpec(
        text=text,
        segment=Segment(
            wards=tuple(sorted(set(draft.wards))),
            channels=tuple(sorted(set(draft.channels))),
            languages=tuple(sorted(set(draft.languages))),
        ),
        key=f"admin:{draft.key}",
        label=draft.text_en[:80],
        actor=actor(staff),
        send_at=send_at,
    )


def progress_summary(counts: dict[str, int], recipients: int) -> dict[str, int]:
    queued = counts.get("queued", 0) + counts.get("sending", 0)
    return {
        "queued": queued,
        "sent": counts.get("sent", 0),
        "delivered": counts.get("delivered", 0),
        "failed": counts.get("failed", 0) + counts.get("undelivered", 0),
        "cancelled": counts.get("cancelled", 0),
        "recipients": max(recipients, sum(counts.values())),
    }


def router(shell: Shell) -> APIRouter:
    api = shell.router(AREA)
    facilitator = shell.require(Role.FACILITATOR)

    async def wards() -> list[Ward]:
        async with shell.services.sessions() as session:
            return list((await session.execute(select(Ward).order_by(col(Ward.name)))).scalars())

    def compose_page(
        request: Request, draft: Draft, ward_rows: list[Ward], errors: dict[str, str]
    ) -> HTMLResponse:
        return shell.render(
            request,
            "broadcasts/compose.html",
            {
                "draft": draft,
                "errors": errors,
                "ward_options": [(w.code, w.name) for w in ward_rows],
                "channel_options": CHANNELS,
                "language_options": LANGUAGES,
                "text_max": TEXT_MAX,
            },
            status=400 if errors else 200,
            title=_("New broadcast"),
        )

    @api.get("", response_class=HTMLResponse)
    async def broadcasts(
        request: Request, before: int | None = Query(default=None, ge=1, le=2**62)
    ) -> HTMLResponse:
        query = select(Broadcast).order_by(col(Broadcast.id).desc()).limit(PAGE)
        if before is not None:
            query = query.where(col(Broadcast.id) < before)
        async with shell.services.sessions() as session:
            rows = list((await session.execute(query)).scalars())
        return shell.render(
            request,
            "broadcasts/list.html",
            {
                "rows": rows,
                "next_before": rows[-1].id if len(rows) == PAGE else None,
            },
            title=_("Broadcasts"),
        )

    @api.get("/new", response_class=HTMLResponse)
    async def new(request: Request, _staff: SignedIn = Depends(facilitator)) -> HTMLResponse:
        draft = Draft(key=secrets.token_urlsafe(18))
        return compose_page(request, draft, await wards(), {})

    @api.post("/new", response_class=HTMLResponse)
    async def check(request: Request, staff: SignedIn = Depends(facilitator)) -> HTMLResponse:
        """The confirmation step: how it renders, who gets it, what it costs."""
        form = await request.form()
        draft = read_draft(form)
        ward_rows = await wards()
        errors, send_at = check_draft(draft, {w.code for w in ward_rows}, shell.now())
        if form.get("change") or errors:
            return compose_page(request, draft, ward_rows, errors)
        spec = spec_of(draft, staff, send_at)
        try:
            audience = await shell.services.broadcasts.preview(spec)
        except BroadcastError as exc:
            return compose_page(request, draft, ward_rows, {"text_en": str(exc)})
        if audience.recipients == 0:
            return compose_page(
                request, draft, ward_rows, {"ward": empty_segment_message(draft, ward_rows)}
            )
        return shell.render(
            request,
            "broadcasts/check.html",
            {
                "draft": draft,
                "send_at": send_at,
                "audience": audience,
                "renderings": renderings(shell, draft, audience),
                "ward_names": [w.name for w in ward_rows if w.code in draft.wards],
                "channel_names": [n for c, n in CHANNELS if c in draft.channels],
                "language_names": [n for c, n in LANGUAGES if c in draft.languages],
                "inline_max": INLINE_MAX,
            },
            title=_("Check your broadcast"),
        )

    @api.post("/send")
    async def send(request: Request, staff: SignedIn = Depends(facilitator)) -> Response:
        form = await request.form()
        draft = read_draft(form)
        ward_rows = await wards()
        now = shell.now()
        errors, send_at = check_draft(draft, {w.code for w in ward_rows}, now)
        if errors:
            return compose_page(request, draft, ward_rows, errors)
        spec = spec_of(draft, staff, send_at)
        # The check page's count of recipients decides only how a send now is done: a big
        # audience is queued by the scheduler (within its interval; a restart mid-way loses
        # nothing and this page answers at once), a small one here. The broadcast path itself
        # refuses a segment nobody is in.
        counted = form.get("recipients")
        big = isinstance(counted, str) and counted.isdigit() and int(counted) > INLINE_MAX
        if send_at is None and big:
            spec = spec_of(draft, staff, now + timedelta(seconds=1))
        try:
            sent = await shell.services.broadcasts.send(spec)
        except BroadcastError as exc:
            if str(exc).startswith("nobody would get it"):
                error = {"ward": empty_segment_message(draft, ward_rows)}
            else:
                error = {"text_en": str(exc)}
            return compose_page(request, draft, ward_rows, error)
        return RedirectResponse(
            shell.url(request, f"/broadcasts/{sent.broadcast_id}", sent="1"), status_code=303
        )

    @api.get("/{broadcast_id}", response_class=HTMLResponse)
    async def broadcast(
        request: Request, broadcast_id: int, sent: str | None = None
    ) -> HTMLResponse:
        if not 0 < broadcast_id < 2**62:
            raise Refused(404, _("Page not found"), _("There is no such broadcast."))
        async with shell.services.sessions() as session:
            row = await session.get(Broadcast, broadcast_id)
            if row is None:
                raise Refused(404, _("Page not found"), _("There is no such broadcast."))
            ward_names = {
                w.code: w.name for w in (await session.execute(select(Ward))).scalars()
            }
            counts = await store.progress(session, broadcast_id=broadcast_id)
            groups = (
                await session.execute(
                    select(func.count())
                    .select_from(store.BroadcastRecipient)
                    .where(
                        col(store.BroadcastRecipient.broadcast_id) == broadcast_id,
                        col(store.BroadcastRecipient.group_chat_id).is_not(None),
                    )
                )
            ).scalar_one()
        return shell.render(
            request,
            "broadcasts/broadcast.html",
            {
                "row": row,
                "progress": progress_summary(counts, row.recipients),
                "groups": int(groups),
                "just_sent": sent == "1",
                "segment": (row.audience or {}).get("segment") or {},
                "ward_names": ward_names,
            },
            title=_("Broadcast {id}").format(id=broadcast_id),
        )

    return api


def empty_segment_message(draft: Draft, ward_rows: list[Ward]) -> str:
    return _(
        "No resident would get this: nobody who has consented and not opted out matches "
        "these wards, channels and languages. Choose a wider segment."
    )


def renderings(shell: Shell, draft: Draft, audience: Audience) -> list[Rendered]:
    """How the message looks on each channel the audience is on, in each language."""
    groups = {
        group
        for line in audience.lines
        for group, names in CHANNEL_GROUPS.items()
        if line.channel in names
    }
    wanted = draft.languages or [lang for lang, _name in LANGUAGES]
    languages = [lang for lang, _name in LANGUAGES if lang in wanted]
    result = []
    for group, _label in CHANNELS:
        if group not in groups:
            continue
        for language in languages:
            text = draft.text_cy if language == "cy" and draft.text_cy else draft.text_en
            result.append(shell.renderer.render(group, text, language))
    return result


AREA = Area(
    name="broadcasts",
    label=_("Broadcasts"),
    build=router,
    templates=Path(__file__).parent / "templates",
)
