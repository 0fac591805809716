"""The audit log (``/admin/audit``): every admin action, who did it and when, filterable, and
never editable (no page changes it, and the database refuses updates and deletes)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlmodel import col

from admin.web.i18n import _
from admin.web.shell import Area, Shell, uk_time
from storage.models import AuditLog

PAGE = 50


def _day(text: str) -> datetime | None:
    """The start of a UK day given as YYYY-MM-DD, in UTC (None if it isn't one)."""
    try:
        return uk_time(text, "00:00")
    except ValueError:
        return None


def router(shell: Shell) -> APIRouter:
    api = shell.router(AREA)

    @api.get("", response_class=HTMLResponse)
    async def audit(
        request: Request,
        actor: str = Query(default="", max_length=200),
        action: str = Query(default="", max_length=64),
        subject: str = Query(default="", max_length=200),
        date_from: str = Query(default="", alias="from", max_length=10),
        date_to: str = Query(default="", alias="to", max_length=10),
        before: int | None = Query(default=None, ge=1, le=2**62),
    ) -> HTMLResponse:
        errors: dict[str, str] = {}
        query = select(AuditLog).order_by(col(AuditLog.id).desc()).limit(PAGE)
        actor, action, subject = (v.strip() for v in (actor, action, subject))
        # Exact matches, so each filter reads its index; "who" takes a staff email without
        # its "admin:" (or a login name without "cli:") too.
        if actor:
            query = query.where(
                col(AuditLog.actor).in_([actor, f"admin:{actor.lower()}", f"cli:{actor}"])
            )
        if action:
            query = query.where(col(AuditLog.action) == action)
        if subject:
            query = query.where(col(AuditLog.subject) == subject)
        if date_from:
            start = _day(date_from)
            if start is None:
                errors["from"] = _("Enter the date as YYYY-MM-DD")
            else:
                query = query.where(col(AuditLog.at) >= start)
        if date_to:
            end = _day(date_to)
            if end is None:
                errors["to"] = _("Enter the date as YYYY-MM-DD")
            else:
                query = query.where(col(AuditLog.at) < end + timedelta(days=1))
        if before is not None:
            query = query.where(col(AuditLog.id) < before)
        async with shell.services.sessions() as session:
            rows = [] if errors else list((await session.execute(query)).scalars())
        filters = {
            "actor": actor,
            "action": action,
            "subject": subject,
            "from": date_from,
            "to": date_to,
        }
        return shell.render(
            request,
            "audit/index.html",
            {
                "rows": [
                    (
                        row,
                        ""
                        if row.detail is None
                        else json.dumps(row.detail, ensure_ascii=False, sort_keys=True),
                    )
                    for row in rows
                ],
                "filters": filters,
                "errors": errors,
                "next_before": rows[-1].id if len(rows) == PAGE else None,
            },
            status=400 if errors else 200,
            title=_("Audit log"),
        )

    return api


AREA = Area(
    name="audit",
    label=_("Audit log"),
    build=router,
    templates=Path(__file__).parent / "templates",
)
