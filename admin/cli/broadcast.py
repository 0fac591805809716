"""``civicbot broadcast send``: a message to a segment of residents, in English and Welsh,
through the broadcast path (rendered per channel and language, bulk priority, never to an
opted-out contact, at most once per contact however often it is run)."""

from __future__ import annotations

import typer

from admin.cli.runtime import AppServices, Runtime
from flows.broadcasts import Audience, BroadcastSpec, Segment, Sent


def build(rt: Runtime) -> typer.Typer:
    app = typer.Typer(help="Messages to many residents at once.", no_args_is_help=True)

    @app.command("send")
    def send(
        text_en: str = typer.Option(..., "--text-en", help="The message in English."),
        text_cy: str = typer.Option(
            None, "--text-cy", help="The message in Welsh (Welsh speakers get it)."
        ),
        ward: list[str] = typer.Option(
            [], "--ward", help="Only residents of this ward (repeat for several)."
        ),
        channel: list[str] = typer.Option(
            [], "--channel", help="sms or telegram (repeat for both; default both)."
        ),
        language: list[str] = typer.Option(
            [], "--language", help="Only residents who chose en or cy (default both)."
        ),
        key: str = typer.Option(
            None,
            "--key",
            help="Name the broadcast; the same text to the same residents is one broadcast "
            "unless you give it a new key.",
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Count recipients, SMS segments and cost; send nothing."
        ),
    ) -> None:
        """Send TEXT to every consented, opted-in resident in the segment.

        Prints the broadcast id (or, with --dry-run, who would get it and what SMS would
        cost). Run twice with the same text, it reaches each resident once."""
        for name in channel:
            if name not in ("sms", "telegram"):
                raise rt.fail(f"--channel {name!r}: use sms or telegram")
        for code in language:
            if code not in ("en", "cy"):
                raise rt.fail(f"--language {code!r}: use en or cy")
        if not text_en.strip():
            raise rt.fail("--text-en is empty")
        text = {"en": text_en} | ({"cy": text_cy} if text_cy else {})
        spec = BroadcastSpec(
            text=text,
            segment=Segment(wards=tuple(ward), channels=tuple(channel), languages=tuple(language)),
            key=key,
            label=text_en[:80],
            actor=rt.actor(),
        )

        if dry_run:

            async def preview(services: AppServices) -> Audience:
                return await services.broadcasts.preview(spec)

            _print_audience(rt.run(preview))
            return

        async def go(services: AppServices) -> Sent:
            return await services.broadcasts.send(spec)

        sent = rt.run(go)
        if not text_cy:
            typer.secho("note: no --text-cy, so Welsh speakers get the English text", err=True)
        typer.secho(
            f"broadcast {sent.broadcast_id}: queued for {sent.queued} resident(s); "
            f"{sent.already} had it already. `civicbot serve` sends queued messages.",
            err=True,
        )
        typer.echo(sent.broadcast_id)

    return app


def _print_audience(audience: Audience) -> None:
    typer.echo(f"{'channel':<14}{'language':<10}{'recipients':>11}{'SMS segments':>14}")
    for line in audience.lines:
        segments = str(line.segments) if line.channel.endswith("sms") else "-"
        typer.echo(f"{line.channel:<14}{line.language:<10}{line.recipients:>11}{segments:>14}")
    typer.echo(f"recipients: {audience.recipients}")
    typer.echo(
        f"SMS segments in all: {audience.sms_segments}; "
        f"estimated cost: {audience.estimated_cost} {audience.currency}"
    )
