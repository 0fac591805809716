"""The ``civicbot`` command line: the root app, the commands of the composition layer
(``serve``, ``db``, ``flows``, Telegram webhook set-up) and the admin sub-apps from
``admin/cli``, each given a :class:`CliRuntime`. Every command reads settings once, and turns
expected failures (bad settings, unreachable database, bad files) into one clear line and exit
status 2."""

from __future__ import annotations

import asyncio
import errno
import getpass
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import typer
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from admin import pb_cli
from admin.cli import accounts as accounts_cli
from admin.cli import broadcast as broadcast_cli
from admin.cli import needs as needs_cli
from admin.cli import rounds as rounds_cli
from admin.cli import telegram as telegram_cli
from admin.cli import tenders as tenders_cli
from admin.cli import wards as wards_cli
from admin.cli.runtime import AppServices
from bot.settings import Settings, SettingsError, load_settings
from channels.errors import ChannelError
from flows.broadcasts import BroadcastError
from flows.needs.service import NeedsError
from flows.polls.service import PollError
from flows.rounds.service import RoundError

T = TypeVar("T")
DOMAIN_ERRORS: tuple[type[Exception], ...] = (
    BroadcastError,
    NeedsError,
    PollError,
    RoundError,
    ChannelError,
    LookupError,
)


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise fail(str(exc)) from None


def run_db(coro: Coroutine[Any, Any, T], settings: Settings) -> T:
    """Run a database coroutine; a connection failure becomes a clear message."""
    try:
        return asyncio.run(coro)
    except (OperationalError, OSError) as exc:
        raise fail(
            f"cannot reach the database at {_safe_url(settings.database_url)} "
            f"({exc.__class__.__name__}); check CIVICBOT_DATABASE_URL and that the server is up"
        ) from None
    except SQLAlchemyError as exc:
        raise fail(f"database error: {exc.__class__.__name__}: {exc}".splitlines()[0]) from None


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class CliRuntime:
    """:class:`admin.cli.runtime.Runtime` for the admin sub-apps."""

    def fail(self, message: str) -> typer.Exit:
        return fail(message)

    def actor(self) -> str:
        try:
            return f"cli:{getpass.getuser()}"
        except (KeyError, OSError):  # no login name (some containers)
            return "cli"

    def run(self, work: Callable[[AppServices], Awaitable[T]]) -> T:
        from bot.services import build_services
        from storage.db import current_revision, head_revision

        settings = settings_or_exit()

        async def go() -> T:
            services = build_services(settings)
            try:
                current = await current_revision(services.db)
                if current != head_revision():
                    raise fail(
                        f"the database is at revision {current or 'none'}, not "
                        f"{head_revision()}: run `civicbot db upgrade` first"
                    )
                return await work(services)
            finally:
                await services.close()

        try:
            return run_db(go(), settings)
        except DOMAIN_ERRORS as exc:
            message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
            raise fail(message) from None


app = typer.Typer(
    help="civicbot: SMS and Telegram engagement for local participatory democracy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
flows_app = typer.Typer(help="Conversation flows.", no_args_is_help=True)
telegram_app = typer.Typer(help="Telegram: webhook, groups and polls.", no_args_is_help=True)
_runtime = CliRuntime()
app.add_typer(db_app, name="db")
app.add_typer(flows_app, name="flows")
app.add_typer(wards_cli.build(_runtime), name="wards")
app.add_typer(broadcast_cli.build(_runtime), name="broadcast")
app.add_typer(needs_cli.build(_runtime), name="needs")
app.add_typer(needs_cli.build_census(_runtime), name="census")
rounds_cli.register(pb_cli.app, _runtime)
app.add_typer(pb_cli.app, name="pb")
app.add_typer(tenders_cli.build(_runtime), name="tenders")
app.add_typer(telegram_app, name="telegram")
app.add_typer(accounts_cli.build(_runtime), name="admin")
telegram_cli.add_commands(telegram_app, _runtime)


SQLITE_ONE_PROCESS = (
    "SQLite is single-process: `civicbot serve` runs the web app, the dispatcher and the "
    "scheduler in one process. To run {what}, use PostgreSQL (CIVICBOT_DATABASE_URL="
    "postgresql+asyncpg://...; see docs/scale.md)"
)
POLLING_ONE_PROCESS = (
    "Telegram polling mode runs in the one `civicbot serve` process; to {what}, use webhook "
    "mode (CIVICBOT_TELEGRAM_MODE=webhook)"
)


def _scale_problem(settings: Settings, *, workers: int, no_worker: bool) -> str | None:
    """Why this ``serve`` layout cannot run on these settings, if it cannot."""
    if settings.is_sqlite and workers > 1:
        return SQLITE_ONE_PROCESS.format(what="several web processes (--workers)")
    if settings.is_sqlite and no_worker:
        return SQLITE_ONE_PROCESS.format(what="the web app without its worker (--no-worker)")
    if settings.telegram_enabled and settings.telegram_mode == "polling":
        if workers > 1:
            return POLLING_ONE_PROCESS.format(what="run several web processes")
        if no_worker:
            return POLLING_ONE_PROCESS.format(what="run the web app without its worker")
    return None


def _quiet_logs() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every request URL at INFO, and the Telegram Bot API puts the token in the URL.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _check_database(settings: Settings) -> None:
    from bot.app import StartupError, prepare_database
    from bot.services import build_services

    async def check() -> None:
        services = build_services(settings)
        try:
            await prepare_database(services)
        finally:
            await services.close()

    try:
        run_db(check(), settings)
    except StartupError as exc:
        raise fail(str(exc)) from None


@app.command()
def serve(
    host: str = typer.Option(None, help="Interface to listen on (CIVICBOT_HOST)."),
    port: int = typer.Option(None, help="Port to listen on (CIVICBOT_PORT)."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Web processes (PostgreSQL only when more than 1)."
    ),
    no_worker: bool = typer.Option(
        False,
        "--no-worker",
        help="Serve the web app and webhooks only: no dispatcher or scheduler in this "
        "process (run `civicbot worker` beside it; PostgreSQL only).",
    ),
) -> None:
    """Run the web app, webhooks, the outbox dispatcher and the scheduler."""
    import uvicorn

    from bot.app import build_app
    from bot.services import build_services

    settings = settings_or_exit(host=host, port=port)
    problem = _scale_problem(settings, workers=workers, no_worker=no_worker)
    if problem is not None:
        raise fail(problem)
    if no_worker:
        settings = settings.model_copy(update={"run_dispatcher": False, "run_scheduler": False})
    problem = _port_problem(settings.host, settings.port)
    if problem is not None:
        raise fail(problem)
    _quiet_logs()
    _check_database(settings)
    base = f"http://{settings.host}:{settings.port}"
    typer.secho(f"civicbot is starting on {base}", fg=typer.colors.GREEN)
    if settings.simulator_enabled:
        typer.secho(
            f"  simulator: {base}/simulator   health: {base}/healthz", fg=typer.colors.GREEN
        )
    else:
        typer.secho(
            f"  health: {base}/healthz   (simulator off; CIVICBOT_SIMULATOR=on serves it)",
            fg=typer.colors.GREEN,
        )
    typer.secho(
        f"  admin: {base}/admin (no account yet? .venv/bin/civicbot admin create-user EMAIL "
        "--role admin)",
        fg=typer.colors.GREEN,
    )
    if workers == 1:
        uvicorn.run(build_app(build_services(settings)), host=settings.host, port=settings.port)
        return
    # Each of uvicorn's processes builds the app from the environment (bot.app.create_app).
    os.environ["CIVICBOT_RUN_DISPATCHER"] = str(settings.run_dispatcher).lower()
    os.environ["CIVICBOT_RUN_SCHEDULER"] = str(settings.run_scheduler).lower()
    os.environ["CIVICBOT_HOST"] = settings.host
    os.environ["CIVICBOT_PORT"] = str(settings.port)
    uvicorn.run(
        "bot.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
    )


@app.command()
def worker(
    name: str = typer.Option(
        None,
        "--name",
        help="This worker's name (CIVICBOT_WORKER_NAME; default the host name). Give each "
        "copy on one machine its own.",
    ),
) -> None:
    """Run the outbox dispatcher, the scheduler (its jobs run in one worker at a time) and the
    periodic fetches, without the web app. Start as many as wanted against one PostgreSQL."""
    import signal

    from bot.services import build_services
    from bot.worker import run_worker

    settings = settings_or_exit(worker_name=name)
    if settings.is_sqlite:
        raise fail(SQLITE_ONE_PROCESS.format(what="separate workers (`civicbot worker`)"))
    if settings.telegram_enabled and settings.telegram_mode == "polling":
        raise fail(POLLING_ONE_PROCESS.format(what="run separate workers"))
    settings = settings.model_copy(update={"run_dispatcher": True, "run_scheduler": True})
    _quiet_logs()
    _check_database(settings)

    async def go() -> None:
        from storage import coordination

        services = build_services(settings)
        try:
            since = services.clock.now() - timedelta(seconds=settings.worker_stale_seconds)
            async with services.sessions() as session:
                live = await coordination.live_workers(session, since=since)
            if any(w.name == settings.worker_name for w in live):
                raise fail(
                    f"a worker named {settings.worker_name} is already running (its heartbeat "
                    f"is under {settings.worker_stale_seconds:g}s old); give this one another "
                    "name with --name or CIVICBOT_WORKER_NAME"
                )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            typer.secho(f"civicbot worker {settings.worker_name} is running", fg="green")
            await run_worker(services, stop)
        finally:
            await services.close()

    run_db(go(), settings)


def _port_problem(host: str, port: int) -> str | None:
    """Why ``serve`` could not listen on host:port, said before anything else is printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = f"port {port} is already in use (is civicbot already running?)"
            elif exc.errno == errno.EACCES:
                reason = f"port {port} needs more privileges than this user has"
            else:
                reason = f"{host}:{port} can't be used ({exc.strerror or exc})"
            other = 8001 if port != 8001 else 8002
            return (
                f"{reason}; choose another port with `civicbot serve --port {other}` or "
                f"CIVICBOT_PORT={other}"
            )
    return None


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from storage.db import create_engine, current_revision, upgrade

    settings = settings_or_exit()

    async def go() -> str | None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade(engine, revision)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    current = run_db(go(), settings)
    typer.echo(f"database {_safe_url(settings.database_url)} is at revision {current}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's migration revision and the latest one."""
    from storage.db import create_engine, current_revision, head_revision

    settings = settings_or_exit()

    async def go() -> str | None:
        engine = create_engine(settings.database_url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    current = run_db(go(), settings)
    typer.echo(f"current: {current or 'none'}  latest: {head_revision()}")


@flows_app.command("check")
def flows_check(
    directory: Path = typer.Argument(None, help="An extra folder of flow YAML files to check."),
) -> None:
    """Validate the shipped flows (and DIRECTORY's) without starting anything."""
    from bot.services import flow_folders, registered_actions
    from flows.library import FlowError, load_library

    if directory is not None and not directory.is_dir():
        raise fail(f"{directory} is not a folder")
    folders = flow_folders(settings_or_exit()) + ([directory] if directory else [])
    try:
        library = load_library(folders, known_actions=registered_actions())
    except FlowError as exc:
        raise fail(str(exc)) from None
    for flow in library.flows.values():
        typer.echo(
            f"{flow.id:<16} {len(flow.nodes):>3} nodes  triggers: {', '.join(flow.triggers)}"
        )
    typer.secho(f"all {len(library.flows)} flows are valid", fg=typer.colors.GREEN)


# ---- Telegram webhook set-up: the channel's own business ------------------------------------


def _telegram(settings: Settings, work: Callable[[Any], Awaitable[None]]) -> None:
    from bot.services import flow_folders, telegram_channel
    from flows.catalogue import load_catalogue

    if not settings.telegram_enabled:
        raise fail("Telegram is not configured: set CIVICBOT_TELEGRAM_TOKEN")
    channel = telegram_channel(settings, load_catalogue(flow_folders(settings)[1:]))

    async def go() -> None:
        try:
            await work(channel)
        finally:
            await channel.aclose()

    try:
        asyncio.run(go())
    except ChannelError as exc:
        raise fail(str(exc)) from None


@telegram_app.command("set-webhook")
def set_webhook() -> None:
    """Register {CIVICBOT_PUBLIC_URL}/webhooks/telegram with the secret, and the bot's commands."""
    settings = settings_or_exit()
    if not settings.telegram_enabled:
        raise fail("Telegram is not configured: set CIVICBOT_TELEGRAM_TOKEN")
    if settings.telegram_webhook_secret is None:
        raise fail("set CIVICBOT_TELEGRAM_WEBHOOK_SECRET first")
    secret = settings.telegram_webhook_secret.get_secret_value()
    url = f"{settings.public_url}/webhooks/telegram"
    if not url.startswith("https://"):
        typer.secho("warning: Telegram only delivers to https:// URLs", err=True)

    async def work(channel: Any) -> None:
        await channel.set_webhook(url, secret)
        await channel.set_commands()

    _telegram(settings, work)
    typer.echo(f"webhook set to {url}; bot commands registered")


@telegram_app.command("delete-webhook")
def delete_webhook() -> None:
    """Stop webhook deliveries (polling mode needs this; `serve` in polling mode does it too)."""

    async def work(channel: Any) -> None:
        await channel.delete_webhook()

    _telegram(settings_or_exit(), work)
    typer.echo("webhook deleted")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
