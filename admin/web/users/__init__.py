"""Staff accounts (``/admin/users``, admins only): who can sign in, with which role; an admin
changes a role or disables an account here (new accounts and passwords: ``civicbot admin``
on the server, so nobody sends a password through the web form of another)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from admin.web.i18n import _
from admin.web.shell import Area, Refused, Shell
from storage import admin as store
from storage.admin import AdminUser, Role, SignedIn

NOTICES = {
    "role": _("The role was changed; the account was signed out everywhere."),
    "disabled": _("The account was disabled and signed out everywhere."),
    "enabled": _("The account can sign in again."),
}


def router(shell: Shell) -> APIRouter:
    api = shell.router(AREA)

    @api.get("", response_class=HTMLResponse)
    async def users(request: Request, done: str | None = None) -> HTMLResponse:
        async with shell.services.sessions() as session:
            rows = await store.list_users(session)
        return shell.render(
            request,
            "users/index.html",
            {
                "rows": rows,
                "role_options": [(r.value, r.value) for r in Role],
                "notice": NOTICES.get(done or "", ""),
            },
            title=_("Accounts"),
        )

    async def change(request: Request, user_id: int, what: str) -> Response:
        staff: SignedIn = request.state.staff
        if not 0 < user_id < 2**62:
            raise Refused(404, _("Page not found"), _("There is no such account."))
        form = await request.form()
        async with shell.services.sessions() as session, session.begin():
            user = await session.get(AdminUser, user_id, with_for_update=True)
            if user is None:
                raise Refused(404, _("Page not found"), _("There is no such account."))
            if user.id == staff.user_id:
                raise Refused(
                    409,
                    _("You can't change your own account here"),
                    _("Ask another admin, so that nobody locks the last admin out."),
                )
            now = shell.now()
            detail: dict[str, str] = {}
            if what == "role":
                role = form.get("role")
                if not isinstance(role, str) or role not in {r.value for r in Role}:
                    raise Refused(400, _("Choose a role"), _("Go back and choose a role."))
                detail = {"from": user.role, "to": role}
                user.role = role
            elif what == "disabled":
                user.disabled_at = now
            else:
                user.disabled_at = None
            user.updated_at = now
            await store.end_sessions(session, user_id=user_id)
            await shell.audit(
                session,
                staff,
                f"admin_user_{what}",
                f"admin_user:{user_id}",
                {"email": user.email, **detail},
            )
        return RedirectResponse(shell.url(request, "/users", done=what), status_code=303)

    @api.post("/{user_id}/role")
    async def set_role(request: Request, user_id: int) -> Response:
        return await change(request, user_id, "role")

    @api.post("/{user_id}/disable")
    async def disable(request: Request, user_id: int) -> Response:
        return await change(request, user_id, "disabled")

    @api.post("/{user_id}/enable")
    async def enable(request: Request, user_id: int) -> Response:
        return await change(request, user_id, "enabled")

    return api


AREA = Area(
    name="users",
    label=_("Accounts"),
    build=router,
    templates=Path(__file__).parent / "templates",
    role=Role.ADMIN,
)
