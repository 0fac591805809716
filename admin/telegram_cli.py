"""``civicbot telegram``: webhook set-up, groups and their wards, native group polls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import typer

if TYPE_CHECKING:
    from bot.services import Services
    from bot.telegram_updates import TelegramUpdates

T = TypeVar("T")
app = typer.Typer(help="Telegram: webhook, groups and polls.", no_args_is_help=True)


def _run(work: Callable[[Services, TelegramUpdates], Awaitable[T]]) -> T:
    """Build services from settings, check Telegram is configured, run ``work``, tidy up."""
    from bot.cli import fail, run_db, settings_or_exit
    from bot.services import build_services
    from bot.telegram_updates import PollError, TelegramUpdates
    from channels.errors import ChannelError

    settings = settings_or_exit()
    if not settings.telegram_enabled:
        raise fail("Telegram is not configured: set CIVICBOT_TELEGRAM_TOKEN")

    async def go() -> T:
        services = build_services(settings)
        try:
            return await work(services, TelegramUpdates(services))
        finally:
            await services.close()

    try:
        return run_db(go(), settings)
    except (ChannelError, PollError, LookupError) as exc:
        message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        raise fail(message) from None


@app.command("set-webhook")
def set_webhook() -> None:
    """Register {CIVICBOT_PUBLIC_URL}/webhooks/telegram with the secret, and the bot's commands."""
    from bot.cli import fail, settings_or_exit

    settings = settings_or_exit()
    if settings.telegram_webhook_secret is None:
        raise fail("set CIVICBOT_TELEGRAM_WEBHOOK_SECRET first")
    secret = settings.telegram_webhook_secret.get_secret_value()
    url = f"{settings.public_url}/webhooks/telegram"
    if not url.startswith("https://"):
        typer.secho("warning: Telegram only delivers to https:// URLs", err=True)

    async def work(_services: Services, updates: TelegramUpdates) -> None:
        await updates.channel.set_webhook(url, secret)
        await updates.channel.set_commands()

    _run(work)
    typer.echo(f"webhook set to {url}; bot commands registered")


@app.command("delete-webhook")
def delete_webhook() -> None:
    """Stop webhook deliveries (polling mode needs this; `serve` in polling mode does it too)."""

    async def work(_services: Services, updates: TelegramUpdates) -> None:
        await updates.channel.delete_webhook()

    _run(work)
    typer.echo("webhook deleted")


@app.command("groups")
def groups() -> None:
    """List the groups the bot has been added to, with their wards."""
    from storage import telegram_repo

    async def work(services: Services, _updates: TelegramUpdates) -> list[tuple[str, ...]]:
        async with services.sessions() as session:
            rows = await telegram_repo.list_groups(session)
        return [
            (g.chat_id, g.title, g.ward_code or "-", "active" if g.active else "left")
            for g in rows
        ]

    rows = _run(work)
    if not rows:
        typer.echo("no groups yet: add the bot to a Telegram group")
    for chat_id, title, ward, status in rows:
        typer.echo(f"{chat_id:>16}  {ward:<12} {status:<7} {title}")


@app.command("assign", context_settings={"ignore_unknown_options": True})
def assign(
    chat_id: str = typer.Argument(..., help="The group's chat id (`civicbot telegram groups`)."),
    ward: str = typer.Argument(..., help="A ward code (see `civicbot wards list`)."),
) -> None:
    """Put a group in a ward."""
    from storage import repositories as repo
    from storage import telegram_repo

    async def work(services: Services, _updates: TelegramUpdates) -> str:
        now = services.clock.now()
        async with services.sessions() as session, session.begin():
            group = await telegram_repo.assign_group(
                session, chat_id=chat_id, ward_code=ward, now=now
            )
            await repo.audit(
                session,
                actor="cli",
                action="telegram_group_assigned",
                subject=f"telegram_group:{chat_id}",
                detail={"ward_code": ward},
                now=now,
            )
            return group.title

    title = _run(work)
    typer.echo(f"group {title or chat_id} is now in ward {ward}")


def _close_time(value: str | None) -> datetime | None:
    from bot.cli import fail

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"--close-at {value!r} is not an ISO time like 2026-03-01T18:00+00:00") from None
    if when.tzinfo is None:
        raise fail("--close-at needs a time zone, e.g. 2026-03-01T18:00+00:00 or ...Z")
    return when.astimezone(UTC)


@app.command("poll")
def poll(
    chat: str = typer.Option(..., "--chat", help="The group's chat id."),
    question: str = typer.Option(..., "--question", help="Up to 300 characters."),
    option: list[str] = typer.Option(..., "--option", help="2 to 12 options, 100 characters each."),
    multiple: bool = typer.Option(False, "--multiple", help="Allow several answers."),
    close_at: str = typer.Option(None, "--close-at", help="ISO time with zone; closed then."),
) -> None:
    """Send a non-anonymous native poll to a group; closed at --close-at or by close-poll."""
    from bot.cli import fail
    from channels.telegram import poll_problem

    problem = poll_problem(question, option)
    if problem:
        raise fail(problem)
    closes_at = _close_time(close_at)

    async def work(_services: Services, updates: TelegramUpdates) -> int:
        sent = await updates.send_poll(
            chat_id=chat, question=question, options=option, multiple=multiple, closes_at=closes_at
        )
        assert sent.id is not None
        return sent.id

    poll_id = _run(work)
    when = f"; closes {closes_at:%Y-%m-%d %H:%M} UTC" if closes_at else ""
    typer.echo(f"poll {poll_id} sent to {chat}{when}")


@app.command("close-poll")
def close_poll(poll_id: int = typer.Argument(..., help="The poll id `poll` printed.")) -> None:
    """Close a poll now and post the result to its group."""

    async def work(_services: Services, updates: TelegramUpdates) -> str:
        closed = await updates.close_poll(poll_id)
        await updates.send_queued()
        result = closed.result or {}
        voters, counts = result.get("voters", 0), result.get("counts")
        return f"poll {poll_id} closed: {voters} voted, counts {counts}"

    typer.echo(_run(work))
