"""``civicbot admin``: staff accounts for the admin web app.

``create-user EMAIL --role admin|facilitator|viewer`` (asks for the password twice, or reads
one line from standard input with ``--password-stdin``), ``reset-password EMAIL``,
``disable EMAIL`` (and ``enable``, ``list-users``). Passwords are hashed with Argon2; a new
password, a disabled account or a new role signs the account out everywhere.
"""

from __future__ import annotations

import sys

import typer

from admin.accounts import email_problem, hash_password, password_problem, role_problem
from admin.cli.runtime import AppServices, Runtime
from storage import admin as store
from storage import repositories as repo
from storage.admin import Role


def build(rt: Runtime) -> typer.Typer:
    app = typer.Typer(help="Staff accounts for the admin web app (/admin).", no_args_is_help=True)

    def read_password(from_stdin: bool) -> str:
        if from_stdin:
            line = sys.stdin.readline()
            password = line[:-1] if line.endswith("\n") else line
            password = password.removesuffix("\r")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        problem = password_problem(password)
        if problem:
            raise rt.fail(problem)
        return password

    def check_email(email: str) -> str:
        problem = email_problem(email)
        if problem:
            raise rt.fail(problem)
        return store.normalise_email(email)

    @app.command("create-user")
    def create_user(
        email: str = typer.Argument(..., help="The person's email address (their sign-in)."),
        role: str = typer.Option(
            ...,
            "--role",
            help="admin (manages accounts), facilitator (broadcasts, polls), or viewer (reads).",
        ),
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="Read the password from standard input (one line)."
        ),
    ) -> None:
        """Create an account that can sign in at /admin."""
        address = check_email(email)
        problem = role_problem(role)
        if problem:
            raise rt.fail(problem)
        password = read_password(password_stdin)
        password_hash = hash_password(password)

        async def work(services: AppServices) -> None:
            now = services.clock.now()
            async with services.sessions() as session, session.begin():
                try:
                    user = await store.create_user(
                        session,
                        email=address,
                        password_hash=password_hash,
                        role=Role(role),
                        now=now,
                    )
                except ValueError as exc:
                    raise rt.fail(str(exc)) from None
                await repo.audit(
                    session,
                    actor=rt.actor(),
                    action="admin_user_created",
                    subject=f"admin_user:{user.id}",
                    detail={"email": address, "role": role},
                    now=now,
                )

        rt.run(work)
        typer.echo(f"created {role} account {address}; sign in at /admin")

    @app.command("reset-password")
    def reset_password(
        email: str = typer.Argument(..., help="The account's email address."),
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="Read the new password from standard input."
        ),
    ) -> None:
        """Set a new password (the account is signed out everywhere)."""
        address = check_email(email)
        password_hash = hash_password(read_password(password_stdin))

        async def work(services: AppServices) -> None:
            now = services.clock.now()
            async with services.sessions() as session, session.begin():
                user = await store.user_by_email(session, email=address)
                if user is None or user.id is None:
                    raise rt.fail(f"there is no account for {address}")
                user.password_hash = password_hash
                user.password_changed_at = now
                user.updated_at = now
                await store.end_sessions(session, user_id=user.id)
                await store.clear_failures(session, key=f"account:{address}")
                await repo.audit(
                    session,
                    actor=rt.actor(),
                    action="admin_user_password_reset",
                    subject=f"admin_user:{user.id}",
                    detail={"email": address},
                    now=now,
                )

        rt.run(work)
        typer.echo(f"new password set for {address}; signed out everywhere")

    def set_disabled(email: str, disabled: bool) -> None:
        address = check_email(email)

        async def work(services: AppServices) -> None:
            now = services.clock.now()
            async with services.sessions() as session, session.begin():
                user = await store.user_by_email(session, email=address)
                if user is None or user.id is None:
                    raise rt.fail(f"there is no account for {address}")
                user.disabled_at = now if disabled else None
                user.updated_at = now
                await store.end_sessions(session, user_id=user.id)
                await repo.audit(
                    session,
                    actor=rt.actor(),
                    action="admin_user_disabled" if disabled else "admin_user_enabled",
                    subject=f"admin_user:{user.id}",
                    detail={"email": address},
                    now=now,
                )

        rt.run(work)

    @app.command("disable")
    def disable(email: str = typer.Argument(..., help="The account's email address.")) -> None:
        """Stop an account signing in (and sign it out everywhere)."""
        set_disabled(email, True)
        typer.echo(f"{store.normalise_email(email)} is disabled")

    @app.command("enable")
    def enable(email: str = typer.Argument(..., help="The account's email address.")) -> None:
        """Let a disabled account sign in again."""
        set_disabled(email, False)
        typer.echo(f"{store.normalise_email(email)} can sign in again")

    @app.command("list-users")
    def list_users() -> None:
        """Every account, its role and whether it can sign in."""

        async def work(services: AppServices) -> list[tuple[str, str, str]]:
            async with services.sessions() as session:
                return [
                    (u.email, u.role, "disabled" if u.disabled_at else "active")
                    for u in await store.list_users(session)
                ]

        rows = rt.run(work)
        if not rows:
            typer.echo("no accounts yet: civicbot admin create-user EMAIL --role admin")
        for email, role, status in rows:
            typer.echo(f"{email:<40} {role:<12} {status}")

    return app
