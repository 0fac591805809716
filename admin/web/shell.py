"""The admin web app's shell: what every area's pages share.

- **Sign-in**: server-side sessions (``storage.admin``) behind an opaque, HttpOnly,
  SameSite=Lax cookie (Secure when the public URL is https), with an idle timeout.
- **Every route requires a session** (:meth:`Shell.signed_in`, put on each area's router),
  and **every state-changing request a CSRF token** (:meth:`Shell.csrf`): the token is the
  session's, in a hidden field of every form (``csrf_field()`` in templates).
- **Roles** (:meth:`Shell.require`): viewers read; facilitators also broadcast and run polls;
  admins also manage accounts.
- **Pages**: Jinja2 templates (the shell's own and each area's folder, under the area's name),
  times shown in Europe/London, and :meth:`Shell.audit` to record what staff do.

An area is a router and a template folder (see :mod:`admin.web.areas`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from admin.web.i18n import gettext, ngettext
from admin.web.ports import AdminConfig, AdminServices, Renderer
from storage import admin as store
from storage import repositories as repo
from storage.admin import Role, SignedIn

LONDON = ZoneInfo("Europe/London")
COOKIE = "civicbot_admin"
LOGIN_COOKIE = "civicbot_admin_login"  # the sign-in form's CSRF token, before any session
TEMPLATES = Path(__file__).parent / "templates"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginRequired(Exception):
    """No valid session: go to the sign-in page, then back to ``next``."""

    def __init__(self, next_path: str, expired: bool) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.expired = expired


class Refused(Exception):
    """A request the app refuses with a page saying why (403 for a role or a bad CSRF
    token, 404 for something that isn't there)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@dataclass(frozen=True)
class Area:
    """One part of the admin app: its URL prefix and template folder name (``name``), its
    label in the navigation, the role that sees it, and the function that builds its router
    (given the shell)."""

    name: str
    label: str
    build: Callable[[Shell], APIRouter]
    templates: Path
    role: Role = Role.VIEWER
    nav: bool = True


@dataclass
class Shell:
    services: AdminServices
    config: AdminConfig
    renderer: Renderer
    areas: tuple[Area, ...] = ()
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=ChoiceLoader(
                [
                    FileSystemLoader(str(TEMPLATES)),
                    PrefixLoader(
                        {area.name: FileSystemLoader(str(area.templates)) for area in self.areas}
                    ),
                ]
            ),
            autoescape=select_autoescape(default=True, default_for_string=True),
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # English now; a Welsh UI installs gettext translations here (see admin/web/i18n.py).
        self.env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
        self.env.filters["london"] = london
        self.env.filters["london_date"] = london_date
        self.env.filters["number"] = number
        self.env.filters["age"] = age

    # ---- time -----------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.services.clock.now()

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.config.session_minutes)

    # ---- sessions, CSRF and roles (dependencies) -------------------------------------------

    async def signed_in(self, request: Request) -> SignedIn:
        """The signed-in account, or :class:`LoginRequired` (then back to this page)."""
        cached = getattr(request.state, "staff", None)
        if isinstance(cached, SignedIn):
            return cached
        token = request.cookies.get(COOKIE, "")
        staff = None
        if token and len(token) <= 128:
            async with self.services.sessions() as session, session.begin():
                staff = await store.touch_session(
                    session, token=token, now=self.now(), idle=self.idle
                )
        if staff is None:
            raise LoginRequired(self.next_path(request), expired=bool(token))
        request.state.staff = staff
        return staff

    async def csrf(self, request: Request) -> None:
        """A state-changing request must carry the session's token in its form."""
        if request.method in SAFE_METHODS:
            return
        staff = await self.signed_in(request)
        sent = await form_token(request)
        if not sent or not secrets.compare_digest(sent, staff.csrf_token):
            raise Refused(
                403,
                "This form has expired",
                "The page you sent this from was out of date, so nothing was changed. Go "
                "back, reload the page and try again.",
            )

    def require(self, role: Role) -> Callable[[Request], Awaitable[SignedIn]]:
        """A dependency: the signed-in account must have ``role`` (or a higher one)."""

        async def check(request: Request) -> SignedIn:
            staff = await self.signed_in(request)
            if not staff.role.allows(role):
                raise Refused(
                    403,
                    "You can't do this",
                    f"Your account is a {staff.role.value} account; this needs a "
                    f"{role.value} account. Ask an admin if you need it.",
                )
            return staff

        return check

    def router(self, area: Area, prefix: str | None = None) -> APIRouter:
        """The router an area adds its pages to: every route needs a session and, unless it
        only reads, the CSRF token; the area's role, if it has one above viewer."""
        dependencies = [Depends(self.signed_in), Depends(self.csrf)]
        if area.role is not Role.VIEWER:
            dependencies.append(Depends(self.require(area.role)))
        return APIRouter(
            prefix=f"/{area.name}" if prefix is None else prefix, dependencies=dependencies
        )

    @staticmethod
    def next_path(request: Request) -> str:
        root = str(request.scope.get("root_path", ""))
        path = root + request.url.path.removeprefix(root)
        if request.method in SAFE_METHODS and request.url.query:
            path += "?" + request.url.query
        return path

    # ---- pages ------------------------------------------------------------------------------

    def url(self, request: Request, path: str = "/", **query: Any) -> str:
        """An admin URL (the app is mounted under ``/admin``)."""
        base = str(request.scope.get("root_path", ""))
        params = {k: v for k, v in query.items() if v not in (None, "", [], ())}
        return base + path + (("?" + urlencode(params, doseq=True)) if params else "")

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        title: str = "",
    ) -> HTMLResponse:
        staff = getattr(request.state, "staff", None)
        base = request.scope.get("root_path", "")
        csrf_token = staff.csrf_token if isinstance(staff, SignedIn) else ""

        def csrf_field() -> Markup:
            return Markup('<input type="hidden" name="csrf_token" value="{}">').format(csrf_token)

        def url(path: str = "/", **query: Any) -> str:
            return str(self.url(request, path, **query))

        values = {
            "request": request,
            "staff": staff,
            "base": base,
            "url": url,
            "csrf_field": csrf_field,
            "csrf_token": csrf_token,
            "nav": self.nav(staff, request),
            "page_title": title,
            "Role": Role,
            "ui_language": "en",
            **(context or {}),
        }
        html = self.env.get_template(template).render(values)
        return HTMLResponse(html, status_code=status)

    def nav(self, staff: SignedIn | None, request: Request) -> list[dict[str, Any]]:
        if staff is None:
            return []
        here = request.url.path.removeprefix(request.scope.get("root_path", ""))
        items = []
        for area in self.areas:
            if not area.nav or not staff.role.allows(area.role):
                continue
            href = "/" if area.name == "dashboard" else f"/{area.name}"
            current = here in ("", "/") if href == "/" else here.startswith(href)
            items.append({"label": area.label, "href": self.url(request, href), "current": current})
        return items

    async def audit(
        self,
        session: AsyncSession,
        staff: SignedIn,
        action: str,
        subject: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record what a member of staff did, in the caller's transaction."""
        await repo.audit(
            session,
            actor=actor(staff),
            action=action,
            subject=subject,
            detail=detail,
            now=self.now(),
        )


def actor(staff: SignedIn) -> str:
    """How the audit log (and broadcasts, polls) name a member of staff."""
    return f"admin:{staff.email}"


async def form_token(request: Request) -> str:
    """The CSRF token a form sent (a bad body is no token)."""
    try:
        form = await request.form()
    except Exception:  # not a form at all, or a broken one: no token
        return ""
    value = form.get("csrf_token")
    return value if isinstance(value, str) and len(value) <= 128 else ""


# ---- template filters -------------------------------------------------------------------------


def london(value: datetime | None, fmt: str = "%d %b %Y %H:%M") -> str:
    """A time as people in Wales and England read it (GMT or BST)."""
    if value is None:
        return ""
    return value.astimezone(LONDON).strftime(fmt)


def uk_time(day_text: str, time_text: str) -> datetime:
    """A UK date (YYYY-MM-DD) and time (HH:MM, 24-hour) as UTC; ValueError if either is not
    one (GMT or BST as the date falls)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day_text) or not re.fullmatch(
        r"\d{1,2}:\d{2}", time_text
    ):
        raise ValueError("not a date and time")
    day = date.fromisoformat(day_text)
    hour, minute = (int(p) for p in time_text.split(":"))
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=LONDON)
    return local.astimezone(UTC)


def london_date(value: datetime | date | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(LONDON).date()
    return value.strftime("%d %b %Y")


def number(value: int | float | None) -> str:
    return "" if value is None else f"{value:,}"


def age(delta: timedelta | None) -> str:
    """A duration for people: 45 seconds, 12 minutes, 3 hours, 2 days."""
    if delta is None:
        return ""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
