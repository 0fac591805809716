"""``civicbot admin``: create-user, reset-password, disable, against a real SQLite file; the
accounts it makes sign in to the web app, and bad input changes nothing (exit status 2)."""

from __future__ import annotations

from asyncio import run
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bot.app import build_app
from bot.cli import app
from bot.services import build_services
from bot.settings import Settings
from storage import admin as store
from storage.models import AuditLog
from tests.admin_support import Admin

runner = CliRunner()
PASSWORD = "a long enough passphrase"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    env = {"CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    return env


def admin_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["admin", *args], env=env, input=stdin)
    return result.exit_code, result.output


def settings(env: dict[str, str]) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=env["CIVICBOT_DATABASE_URL"], run_dispatcher=False
    )


async def sign_in(env: dict[str, str], email: str, password: str) -> int:
    services = build_services(settings(env))
    try:
        transport = httpx.ASGITransport(app=build_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            return (await Admin(client).login(email, password)).status_code
    finally:
        await services.close()


def test_create_sign_in_reset_and_disable(env: dict[str, str]) -> None:
    code, out = admin_cli(
        env,
        "create-user",
        "Clerk@Council.example",
        "--role",
        "facilitator",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert code == 0 and "created facilitator account clerk@council.example" in out
    assert PASSWORD not in out
    assert run(sign_in(env, "clerk@council.example", PASSWORD)) == 303
    # Prompted twice when not from stdin; a mismatch asks again.
    code, out = admin_cli(
        env,
        "create-user",
        "boss@council.example",
        "--role",
        "admin",
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert code == 0, out
    code, out = admin_cli(env, "list-users")
    assert "boss@council.example" in out and "facilitator" in out and "active" in out

    code, out = admin_cli(
        env,
        "reset-password",
        "clerk@council.example",
        "--password-stdin",
        stdin="another long passphrase\n",
    )
    assert code == 0 and "signed out everywhere" in out
    assert run(sign_in(env, "clerk@council.example", PASSWORD)) == 400
    assert run(sign_in(env, "clerk@council.example", "another long passphrase")) == 303

    code, out = admin_cli(env, "disable", "clerk@council.example")
    assert code == 0 and "disabled" in out
    assert run(sign_in(env, "clerk@council.example", "another long passphrase")) == 400
    code, out = admin_cli(env, "enable", "clerk@council.example")
    assert run(sign_in(env, "clerk@council.example", "another long passphrase")) == 303

    async def stored() -> tuple[store.AdminUser | None, list[str]]:
        services = build_services(settings(env))
        try:
            async with services.sessions() as session:
                user = await store.user_by_email(session, email="clerk@council.example")
                actions = (await session.execute(select(AuditLog.action))).scalars().all()
                return user, list(actions)
        finally:
            await services.close()

    user, actions = run(stored())
    assert user is not None and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    for action in (
        "admin_user_created",
        "admin_user_password_reset",
        "admin_user_disabled",
        "admin_user_enabled",
    ):
        assert action in actions


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["create-user", "not-an-email", "--role", "admin", "--password-stdin"],
            PASSWORD,
            "is not an email address",
        ),
        (
            ["create-user", "a@b.example", "--role", "king", "--password-stdin"],
            PASSWORD,
            "the role must be one of viewer, facilitator, admin",
        ),
        (
            ["create-user", "a@b.example", "--role", "admin", "--password-stdin"],
            "short",
            "at least 12 characters",
        ),
        (
            ["create-user", "a@b.example", "--role", "admin", "--password-stdin"],
            "x" * 300,
            "256 characters or fewer",
        ),
        (
            ["create-user", "a@b.example", "--role", "admin", "--password-stdin"],
            "tab\tin the password",
            "control characters",
        ),
        (
            ["create-user", "a" * 200 + "@b.example", "--role", "admin", "--password-stdin"],
            PASSWORD,
            "190 characters or fewer",
        ),
        (
            ["create-user", "taken@b.example", "--role", "viewer", "--password-stdin"],
            PASSWORD,
            "there is already an account for taken@b.example",
        ),
        (
            ["reset-password", "nobody@b.example", "--password-stdin"],
            PASSWORD,
            "there is no account for nobody@b.example",
        ),
        (["disable", "nobody@b.example"], None, "there is no account for nobody@b.example"),
    ],
)
def test_bad_input_changes_nothing(
    env: dict[str, str], args: list[str], stdin: str | None, message: str
) -> None:
    assert (
        admin_cli(
            env,
            "create-user",
            "taken@b.example",
            "--role",
            "admin",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )[0]
        == 0
    )
    before = admin_cli(env, "list-users")[1]
    code, out = admin_cli(env, *args, stdin=None if stdin is None else stdin + "\n")
    assert code == 2 and message in out and "Traceback" not in out
    assert admin_cli(env, "list-users")[1] == before


def test_serve_says_how_to_make_the_first_account() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "civicbot admin create-user" in makefile
