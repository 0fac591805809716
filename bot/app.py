"""The FastAPI app, built from :class:`bot.services.Services`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from bot import admin_web
from bot.services import Services
from bot.web import simulator, telegram, twilio_sms
from bot.web.errors import QuietErrors
from bot.web.limits import InboundLimiter
from bot.worker import background
from channels.telegram.polling import run_polling
from channels.twilio_sms import TwilioSmsChannel
from storage import coordination
from storage.db import current_revision, head_revision, upgrade

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "web" / "static"


class StartupError(Exception):
    """The app cannot start; the message says what to do."""


async def prepare_database(services: Services) -> None:
    """SQLite (the embedded default) is upgraded automatically; PostgreSQL must already be at
    the latest revision (``civicbot db upgrade``), so deployments migrate deliberately."""
    if services.settings.is_sqlite:
        await upgrade(services.db)
        return
    current = await current_revision(services.db)
    if current != head_revision():
        raise StartupError(
            f"the database is at revision {current or 'none'}, not {head_revision()}: "
            "run `civicbot db upgrade` first"
        )


def build_app(services: Services) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await prepare_database(services)
        stop = asyncio.Event()
        tasks = []
        settings = services.settings
        router = services.telegram
        if router is not None and settings.telegram_mode == "polling":

            async def handle(data: dict[str, Any]) -> None:
                assert router is not None
                handled = await router.handle(data)
                await handled.run_follow_ups()

            tasks.append(asyncio.create_task(run_polling(router.channel, handle, stop)))
        try:
            async with background(services, stop):
                yield
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.close()

    # No slash redirects: Starlette builds them from the Host header, so a request with a
    # stray "/" and a forged Host would be redirected anywhere (an open redirect).
    # The API docs describe the simulator's API, so they are served with it (never on a
    # deployment that has not asked for the simulator).
    docs = services.settings.simulator_enabled
    app = FastAPI(
        title="civicbot",
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.services = services
    app.add_middleware(QuietErrors)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "message": str(err.get("msg", "invalid")),
            }
            for err in exc.errors()
        ]
        summary = "; ".join(
            f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in problems
        )
        return JSONResponse(status_code=422, content={"detail": summary, "errors": problems})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> JSONResponse:
        try:
            await services.check_database()
        except Exception as exc:  # report, don't crash: this is what monitors poll
            log.warning("health check failed: %s", exc.__class__.__name__)
            return JSONResponse(
                status_code=503, content={"status": "error", "detail": "database unreachable"}
            )
        return JSONResponse({"status": "ok"})

    @app.get("/health", tags=["health"])
    async def health() -> JSONResponse:
        """Readiness: the database answers, and some worker (a `civicbot worker`, or this
        single process) recorded a heartbeat within ``worker_stale_seconds``. 503 if not."""
        try:
            await services.check_database()
            since = services.clock.now() - timedelta(
                seconds=services.settings.worker_stale_seconds
            )
            async with services.sessions() as session:
                live = await coordination.live_workers(session, since=since)
        except Exception as exc:  # report, don't crash: this is what monitors poll
            log.warning("health check failed: %s", exc.__class__.__name__)
            return JSONResponse(
                status_code=503, content={"database": "unreachable", "worker": "unknown"}
            )
        body = {
            "database": "ok",
            "worker": "ok" if live else "missing",
            "workers": len(live),
            "leader": any(w.leader for w in live),
        }
        return JSONResponse(status_code=200 if live else 503, content=body)

    settings = services.settings
    if settings.simulator_enabled:

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/simulator")

        app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
        limits = InboundLimiter(settings.simulator_per_minute, services.clock)
        app.include_router(simulator.router(services, limits))
    admin_web.mount(app, services)  # /admin: the admin web app (admin/web)
    sms = services.channels.get("sms")
    if isinstance(sms, TwilioSmsChannel):
        senders = InboundLimiter(settings.inbound_per_minute, services.clock)
        app.include_router(twilio_sms.router(services, sms, senders))
    secret = settings.telegram_webhook_secret
    if services.telegram is not None and secret is not None:
        app.include_router(telegram.router(services.telegram, secret.get_secret_value()))
    return app


def create_app() -> FastAPI:
    """The app built from the environment's settings: what each of ``civicbot serve
    --workers N``'s processes runs (uvicorn imports it by name). Each process that runs the
    background loops dispatches under its own name (``<worker name>-<pid>``)."""
    from bot.services import build_services
    from bot.settings import load_settings

    settings = load_settings()
    if settings.run_dispatcher:
        name = f"{settings.worker_name}-{os.getpid()}"[-100:]
        settings = settings.model_copy(update={"worker_name": name})
    return build_app(build_services(settings))
