"""Wards and Telegram groups (``/admin/groups``): the wards loaded (with their postcodes and
residents), the groups the bot is in, and which ward each group is in (facilitators assign
them)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlmodel import col

from admin.web.i18n import _
from admin.web.shell import Area, Refused, Shell
from storage import groups as group_store
from storage import repositories as repo
from storage.admin import Role, SignedIn
from storage.models import Contact, TelegramGroup

CHAT_ID_MAX = 32


def router(shell: Shell) -> APIRouter:
    api = shell.router(AREA)
    facilitator = shell.require(Role.FACILITATOR)

    async def page(
        request: Request, errors: dict[str, str] | None = None, notice: str = ""
    ) -> HTMLResponse:
        async with shell.services.sessions() as session:
            wards = await repo.list_wards(session)
            residents = dict(
                (
                    await session.execute(
                        select(col(Contact.ward_code), func.count())
                        .where(col(Contact.erased_at).is_(None))
                        .group_by(col(Contact.ward_code))
                    )
                ).all()
            )
            groups = await group_store.list_groups(session)
        return shell.render(
            request,
            "groups/index.html",
            {
                "wards": [(w, n, int(residents.get(w.code, 0))) for w, n in wards],
                "ward_names": {w.code: w.name for w, _n in wards},
                "ward_options": [("", _("No ward"))] + [(w.code, w.name) for w, _n in wards],
                "groups": groups,
                "errors": errors or {},
                "notice": notice,
            },
            status=400 if errors else 200,
            title=_("Wards and groups"),
        )

    @api.get("", response_class=HTMLResponse)
    async def index(request: Request, saved: str | None = None) -> HTMLResponse:
        notice = _("The group's ward was saved.") if saved == "1" else ""
        return await page(request, notice=notice)

    @api.post("/{chat_id}/ward")
    async def assign(
        request: Request, chat_id: str, staff: SignedIn = Depends(facilitator)
    ) -> Response:
        if len(chat_id) > CHAT_ID_MAX:
            raise Refused(404, _("Page not found"), _("There is no such group."))
        form = await request.form()
        value = form.get("ward_code")
        ward_code = value.strip() if isinstance(value, str) and value.strip() else None
        async with shell.services.sessions() as session, session.begin():
            if await session.get(TelegramGroup, chat_id) is None:
                raise Refused(404, _("Page not found"), _("There is no such group."))
            try:
                await group_store.assign_group(
                    session, chat_id=chat_id, ward_code=ward_code, now=shell.now()
                )
            except LookupError:
                await session.rollback()
                return await page(
                    request, errors={f"ward-{chat_id}": _("Choose a ward from the list")}
                )
            await shell.audit(
                session,
                staff,
                "telegram_group_assigned",
                f"telegram_group:{chat_id}",
                {"ward_code": ward_code},
            )
        return RedirectResponse(shell.url(request, "/groups", saved="1"), status_code=303)

    return api


AREA = Area(
    name="groups",
    label=_("Wards and groups"),
    build=router,
    templates=Path(__file__).parent / "templates",
)
