"""Signing in and out. The one part of ``/admin`` reachable without a session: the sign-in
form (with its own CSRF token in a short-lived cookie, as there is no session yet).

- the same message for an unknown account, a disabled one and a wrong password;
- throttled per account and per address: after 5 failures in a row each try waits longer
  (30 seconds, doubling, at most an hour); a waiting try is refused without checking the
  password, so guessing gains nothing;
- a new session (and cookie) at every sign-in; the old one, if any, is ended.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from admin.accounts import verify_in_thread
from admin.web.i18n import _
from admin.web.shell import COOKIE, LOGIN_COOKIE, Refused, Shell, actor, form_token
from storage import admin as store
from storage import repositories as repo
from storage.admin import SignedIn

FIELD_MAX = 512  # longer input is not an email or password we'd accept


def safe_next(base: str, value: str | None) -> str:
    """Where to go after signing in: an admin page on this site, never elsewhere."""
    if (
        value
        and value.startswith(base + "/")
        and not value.startswith("//")
        and "\\" not in value
        and all(32 < ord(ch) < 127 for ch in value)
        and not value.startswith(base + "/login")
    ):
        return value
    return base + "/"


def router(shell: Shell) -> APIRouter:
    api = APIRouter()

    def page(
        request: Request,
        *,
        next_path: str,
        email: str = "",
        errors: dict[str, str] | None = None,
        notice: str = "",
        status: int = 200,
        token: str | None = None,
        first_account: bool = False,
    ) -> HTMLResponse:
        token = token or secrets.token_urlsafe(32)
        response = shell.render(
            request,
            "login.html",
            {
                "next_path": next_path,
                "email": email,
                "errors": errors or {},
                "notice": notice,
                "login_token": token,
                "first_account": first_account,
            },
            status=status,
            title=_("Sign in"),
        )
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=3600,
            httponly=True,
            samesite="lax",
            secure=shell.config.secure_cookies,
            path=request.scope.get("root_path", "") + "/login",
        )
        return response

    @api.get("/login", response_class=HTMLResponse)
    async def login_form(
        request: Request, next: str | None = None, ended: str | None = None
    ) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        notice = {
            "expired": _(
                "Your session ended because it was not used for a while. Sign in again to carry on."
            ),
            "out": _("You have signed out."),
        }.get(ended or "", "")
        async with shell.services.sessions() as session:
            first = await store.count_users(session) == 0
        return page(request, next_path=safe_next(base, next), notice=notice, first_account=first)

    @api.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        base = request.scope.get("root_path", "")
        form = await request.form()
        values: dict[str, str] = {}
        for name in ("email", "password", "next", "csrf_token"):
            value = form.get(name)
            values[name] = value if isinstance(value, str) and len(value) <= FIELD_MAX else ""
        next_path = safe_next(base, values["next"])
        sent = await form_token(request)
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not sent or not expected or not secrets.compare_digest(sent, expected):
            raise Refused(
                403,
                _("This form has expired"),
                _(
                    "The sign-in page was out of date, so nothing was done. Go back, reload "
                    "the page and sign in again."
                ),
            )
        email = store.normalise_email(values["email"])
        password = values["password"]
        errors: dict[str, str] = {}
        if not email:
            errors["email"] = _("Enter your email address")
        if not password:
            errors["password"] = _("Enter your password")
        if errors:
            return page(request, next_path=next_path, email=email, errors=errors, status=400)

        address = request.client.host if request.client else "unknown"
        keys = [f"account:{email}"[:255], f"address:{address}"[:255]]
        now = shell.now()
        async with shell.services.sessions() as session, session.begin():
            waiting = await store.locked_until(session, keys=keys, now=now)
            user = None if waiting else await store.user_by_email(session, email=email)
        if waiting is not None:
            minutes = max(1, -(-int((waiting - now).total_seconds()) // 60))
            message = _(
                "Too many failed sign-ins. Wait {minutes} minute(s), then try again."
            ).format(minutes=minutes)
            return page(
                request,
                next_path=next_path,
                email=email,
                errors={"password": message},
                status=429,
            )
        usable = user is not None and user.disabled_at is None
        ok = await verify_in_thread(password, user.password_hash if usable and user else None)
        if not ok or user is None or user.id is None:
            async with shell.services.sessions() as session, session.begin():
                await store.record_failure(session, keys=keys, now=now)
                if user is not None:
                    await repo.audit(
                        session,
                        actor=f"admin:{user.email}",
                        action="admin_sign_in_failed",
                        subject=f"admin_user:{user.id}",
                        detail={"address": address},
                        now=now,
                    )
            return page(
                request,
                next_path=next_path,
                email=email,
                errors={"password": _("The email address or password is not right")},
                status=400,
            )
        token = secrets.token_urlsafe(32)
        old = request.cookies.get(COOKIE, "")
        async with shell.services.sessions() as session, session.begin():
            if old and len(old) <= 128:
                await store.end_session(session, token=old)
            await store.clear_failures(session, key=keys[0])
            # Housekeeping while here: sessions that ended and throttle keys long quiet.
            await store.purge_sessions(session, now=now)
            await store.purge_failures(session, now=now)
            await store.start_session(
                session,
                token=token,
                csrf_token=secrets.token_urlsafe(32),
                user_id=user.id,
                now=now,
                idle=shell.idle,
            )
            await repo.audit(
                session,
                actor=f"admin:{user.email}",
                action="admin_signed_in",
                subject=f"admin_user:{user.id}",
                detail={"address": address},
                now=now,
            )
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="lax",
            secure=shell.config.secure_cookies,
            path=base + "/" if base else "/",
        )
        response.delete_cookie(LOGIN_COOKIE, path=base + "/login")
        return response

    @api.post("/logout")
    async def logout(
        request: Request,
        staff: SignedIn = Depends(shell.signed_in),
        _csrf: Any = Depends(shell.csrf),
    ) -> RedirectResponse:
        base = request.scope.get("root_path", "")
        async with shell.services.sessions() as session, session.begin():
            await store.end_session(session, token=request.cookies.get(COOKIE, ""))
            await shell.audit(session, staff, "admin_signed_out", f"admin_user:{staff.user_id}")
        response = RedirectResponse(f"{base}/login?ended=out", status_code=303)
        response.delete_cookie(COOKIE, path=base + "/" if base else "/")
        return response

    return api


__all__ = ["actor", "router", "safe_next"]
