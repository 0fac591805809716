"""The admin web app: a FastAPI app mounted at ``/admin`` by the composition root
(``bot/admin_web.py``), built from the running services, a few settings and a renderer.

Its pages are server-rendered and work without JavaScript (``static/admin.js`` only adds
live refreshes); nothing loads from another site (the Content-Security-Policy says so too).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from admin.web import signin
from admin.web.areas import AREAS
from admin.web.i18n import _
from admin.web.ports import AdminConfig, AdminServices, Renderer
from admin.web.shell import LoginRequired, Refused, Shell

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class _SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            if name == "Cache-Control" and request.url.path.startswith(
                request.scope.get("root_path", "") + "/static/"
            ):
                continue
            response.headers.setdefault(name, value)
        return response


def build(services: AdminServices, config: AdminConfig, renderer: Renderer) -> FastAPI:
    shell = Shell(services, config, renderer, AREAS)
    app = FastAPI(title="civicbot admin", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.shell = shell
    app.add_middleware(_SecurityHeaders)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> RedirectResponse:
        base = request.scope.get("root_path", "")
        query = {"next": exc.next_path} | ({"ended": "expired"} if exc.expired else {})
        return RedirectResponse(f"{base}/login?{urlencode(query)}", status_code=303)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> HTMLResponse:
        return shell.render(
            request,
            "error.html",
            {"title": exc.title, "message": exc.message},
            status=exc.status,
            title=exc.title,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        return shell.render(
            request,
            "error.html",
            {
                "title": _("That address is not right"),
                "message": _(
                    "Part of the address or form was not what this page expects. "
                    "Go back and try again."
                ),
            },
            status=422,
            title=_("That address is not right"),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        title = _("Page not found") if exc.status_code == 404 else _("Something is not right")
        return shell.render(
            request,
            "error.html",
            {"title": title, "message": str(exc.detail)},
            status=exc.status_code,
            title=title,
        )

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="admin-static")
    app.include_router(signin.router(shell))
    for area in AREAS:
        app.include_router(area.build(shell))
    return app
