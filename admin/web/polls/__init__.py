"""Telegram group polls (``/admin/polls``): create a native poll in a group, watch the live
counts, close it (the result is posted to the group through the broadcast path). Uses
:class:`flows.polls.service.PollService`; without Telegram configured the pages say so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlmodel import col

from admin.web.i18n import _
from admin.web.shell import Area, Refused, Shell, actor, uk_time
from flows.polls.service import PollError, PollService
from storage import groups as group_store
from storage import polls as poll_store
from storage.admin import Role, SignedIn
from storage.polls import TelegramPoll

PAGE = 50
OPTIONS_MAX = 12


def _clean(value: Any, limit: int = 2000) -> str:
    if not isinstance(value, str):
        return ""
    return "".join(ch for ch in value if ch == "\n" or ch.isprintable()).strip()[:limit]


def router(shell: Shell) -> APIRouter:
    api = shell.router(AREA)
    facilitator = shell.require(Role.FACILITATOR)

    def service() -> PollService | None:
        return shell.services.polls

    async def group_options() -> list[tuple[str, str]]:
        async with shell.services.sessions() as session:
            groups = await group_store.list_groups(session)
        return [(g.chat_id, f"{g.title or g.chat_id} ({g.chat_id})") for g in groups if g.active]

    async def form_page(
        request: Request, values: dict[str, Any], errors: dict[str, str]
    ) -> HTMLResponse:
        return shell.render(
            request,
            "polls/new.html",
            {
                "values": values,
                "errors": errors,
                "group_options": await group_options(),
                "telegram": service() is not None,
            },
            status=400 if errors else 200,
            title=_("New poll"),
        )

    @api.get("", response_class=HTMLResponse)
    async def polls(
        request: Request, before: int | None = Query(default=None, ge=1, le=2**62)
    ) -> HTMLResponse:
        query = select(TelegramPoll).order_by(col(TelegramPoll.id).desc()).limit(PAGE)
        if before is not None:
            query = query.where(col(TelegramPoll.id) < before)
        async with shell.services.sessions() as session:
            rows = list((await session.execute(query)).scalars())
            titles = {g.chat_id: g.title for g in await group_store.list_groups(session)}
        return shell.render(
            request,
            "polls/list.html",
            {
                "rows": rows,
                "titles": titles,
                "telegram": service() is not None,
                "next_before": rows[-1].id if len(rows) == PAGE else None,
            },
            title=_("Polls"),
        )

    @api.get("/new", response_class=HTMLResponse)
    async def new(request: Request, _staff: SignedIn = Depends(facilitator)) -> HTMLResponse:
        return await form_page(request, {}, {})

    @api.post("/new")
    async def create(request: Request, staff: SignedIn = Depends(facilitator)) -> Response:
        polls = service()
        form = await request.form()
        chat_id = _clean(form.get("chat_id"), 32)
        question = _clean(form.get("question"), 1000)
        close_date = _clean(form.get("close_date"), 20)
        close_time = _clean(form.get("close_time"), 20)
        values: dict[str, Any] = {
            "chat_id": chat_id,
            "question": question,
            "options": _clean(form.get("options"), 5000),
            "multiple": form.get("multiple") == "yes",
            "close_date": close_date,
            "close_time": close_time,
        }
        errors: dict[str, str] = {}
        if polls is None:
            errors["chat_id"] = _("Telegram is not configured: set CIVICBOT_TELEGRAM_TOKEN")
        if not chat_id:
            errors["chat_id"] = _("Choose a group")
        if not question:
            errors["question"] = _("Enter the question")
        options = [o.strip() for o in str(values["options"]).splitlines() if o.strip()]
        if len(options) < 2 or len(options) > OPTIONS_MAX:
            errors["options"] = _("Enter 2 to 12 options, one on each line")
        closes_at = None
        if close_date or close_time:
            try:
                closes_at = uk_time(close_date, close_time or "00:00")
            except ValueError:
                errors["close_date"] = _(
                    "Enter the date as YYYY-MM-DD and the time as HH:MM (24-hour), UK time"
                )
        if errors or polls is None:
            return await form_page(request, values, errors)
        try:
            poll = await polls.send(
                chat_id=chat_id,
                question=question,
                options=options,
                multiple=bool(values["multiple"]),
                closes_at=closes_at,
                actor=actor(staff),
            )
        except PollError as exc:
            return await form_page(request, values, {"question": str(exc)})
        return RedirectResponse(shell.url(request, f"/polls/{poll.id}", sent="1"), status_code=303)

    @api.get("/{poll_id}", response_class=HTMLResponse)
    async def poll(request: Request, poll_id: int, sent: str | None = None) -> HTMLResponse:
        if not 0 < poll_id < 2**62:
            raise Refused(404, _("Page not found"), _("There is no such poll."))
        async with shell.services.sessions() as session:
            row = await session.get(TelegramPoll, poll_id)
            if row is None:
                raise Refused(404, _("Page not found"), _("There is no such poll."))
            if row.closed_at is not None and row.result:
                counts = list(row.result.get("counts", []))
                voters = int(row.result.get("voters", 0))
            else:
                counts, voters = await poll_store.tally(session, poll=row)
        total = sum(counts)
        return shell.render(
            request,
            "polls/poll.html",
            {
                "row": row,
                "lines": [
                    (option, count, round(100 * count / total) if total else 0)
                    for option, count in zip(row.options, counts, strict=False)
                ],
                "voters": voters,
                "just_sent": sent == "1",
                "telegram": service() is not None,
            },
            title=_("Poll {id}").format(id=poll_id),
        )

    @api.post("/{poll_id}/close")
    async def close(
        request: Request, poll_id: int, staff: SignedIn = Depends(facilitator)
    ) -> Response:
        polls = service()
        if polls is None:
            raise Refused(
                409, _("Telegram is not configured"), _("Set CIVICBOT_TELEGRAM_TOKEN first.")
            )
        try:
            await polls.close(poll_id, actor=actor(staff))
        except PollError as exc:
            raise Refused(409, _("The poll was not closed"), str(exc)) from exc
        return RedirectResponse(shell.url(request, f"/polls/{poll_id}"), status_code=303)

    return api


AREA = Area(
    name="polls",
    label=_("Polls"),
    build=router,
    templates=Path(__file__).parent / "templates",
)
