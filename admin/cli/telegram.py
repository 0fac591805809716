"""``civicbot telegram``: groups and their wards, native group polls. (Webhook set-up is the
channel's own business and lives beside the channel, in ``bot/cli.py``.)"""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from admin.cli.runtime import AppServices, Runtime
from flows.polls.service import PollService
from storage import groups as group_store
from storage import repositories as repo


def add_commands(app: typer.Typer, rt: Runtime) -> None:
    """Add the group and poll commands to the ``telegram`` sub-app."""

    def polls(services: AppServices) -> PollService:
        if services.polls is None:
            raise rt.fail("Telegram is not configured: set CIVICBOT_TELEGRAM_TOKEN")
        return services.polls

    @app.command("groups")
    def groups() -> None:
        """List the groups the bot has been added to, with their wards (no token needed)."""

        async def work(services: AppServices) -> list[tuple[str, ...]]:
            async with services.sessions() as session:
                rows = await group_store.list_groups(session)
            return [
                (g.chat_id, g.title, g.ward_code or "-", "active" if g.active else "left")
                for g in rows
            ]

        rows = rt.run(work)
        if not rows:
            typer.echo("no groups yet: add the bot to a Telegram group")
        for chat_id, title, ward, status in rows:
            typer.echo(f"{chat_id:>16}  {ward:<12} {status:<7} {title}")

    @app.command("assign", context_settings={"ignore_unknown_options": True})
    def assign(
        chat_id: str = typer.Argument(
            ..., help="The group's chat id (`civicbot telegram groups`)."
        ),
        ward: str = typer.Argument(..., help="A ward code (see `civicbot wards list`)."),
    ) -> None:
        """Put a group in a ward."""

        async def work(services: AppServices) -> str:
            now = services.clock.now()
            async with services.sessions() as session, session.begin():
                group = await group_store.assign_group(
                    session, chat_id=chat_id, ward_code=ward, now=now
                )
                await repo.audit(
                    session,
                    actor=rt.actor(),
                    action="telegram_group_assigned",
                    subject=f"telegram_group:{chat_id}",
                    detail={"ward_code": ward},
                    now=now,
                )
                return group.title

        title = rt.run(work)
        typer.echo(f"group {title or chat_id} is now in ward {ward}")

    @app.command("poll")
    def poll(
        chat: str = typer.Option(..., "--chat", help="The group's chat id."),
        question: str = typer.Option(..., "--question", help="Up to 300 characters."),
        option: list[str] = typer.Option(
            ..., "--option", help="2 to 12 options, 100 characters each."
        ),
        multiple: bool = typer.Option(False, "--multiple", help="Allow several answers."),
        close_at: str = typer.Option(None, "--close-at", help="ISO time with zone; closed then."),
        needs: str = typer.Option(
            None, "--needs", help="Link it to this needs assessment (reported as a source)."
        ),
    ) -> None:
        """Send a non-anonymous native poll to a group; closed at --close-at or by close-poll."""
        closes_at = _close_time(rt, close_at)

        async def work(services: AppServices) -> int:
            sent = await polls(services).send(
                chat_id=chat,
                question=question,
                options=option,
                multiple=multiple,
                closes_at=closes_at,
                actor=rt.actor(),
                needs_assessment_id=needs,
            )
            assert sent.id is not None
            return sent.id

        poll_id = rt.run(work)
        when = f"; closes {closes_at:%Y-%m-%d %H:%M} UTC" if closes_at else ""
        typer.echo(f"poll {poll_id} sent to {chat}{when}")

    @app.command("close-poll")
    def close_poll(poll_id: int = typer.Argument(..., help="The poll id `poll` printed.")) -> None:
        """Close a poll now and post the result to its group (sent by `civicbot serve`)."""

        async def work(services: AppServices) -> str:
            closed = await polls(services).close(poll_id, actor=rt.actor())
            result = closed.result or {}
            voters, counts = result.get("voters", 0), result.get("counts")
            return f"poll {poll_id} closed: {voters} voted, counts {counts}"

        typer.echo(rt.run(work))


def _close_time(rt: Runtime, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise rt.fail(
            f"--close-at {value!r} is not an ISO time like 2026-03-01T18:00+00:00"
        ) from None
    if when.tzinfo is None:
        raise rt.fail("--close-at needs a time zone, e.g. 2026-03-01T18:00+00:00 or ...Z")
    return when.astimezone(UTC)
