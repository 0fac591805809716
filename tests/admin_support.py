"""Helpers for the admin web app's tests: accounts made through the same storage code the
CLI uses, and a browser-like client (cookies, CSRF tokens read from the pages' forms)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from admin.accounts import hash_password
from storage import admin as store
from storage.admin import Role
from storage.broadcasts import Broadcast
from storage.models import AuditLog, ChannelIdentity, Contact, OutboundMessage, TelegramGroup
from storage.polls import TelegramPoll

PASSWORD = "correct horse battery staple"
_HASH: dict[str, str] = {}
TOKEN = re.compile(r'name="csrf_token" value="([^"]*)"')
SIMULATOR = "/simulator/api/messages"


async def make_user(
    sessions: async_sessionmaker[AsyncSession],
    email: str,
    role: Role,
    now: Any,
    password: str = PASSWORD,
) -> int:
    if password not in _HASH:  # Argon2 is slow on purpose: hash each test password once
        _HASH[password] = hash_password(password)
    async with sessions() as session, session.begin():
        user = await store.create_user(
            session, email=email, password_hash=_HASH[password], role=role, now=now
        )
        assert user.id is not None
        return user.id


def token_in(page: str) -> str:
    found = TOKEN.search(page)
    assert found, "no CSRF token in the page"
    return html.unescape(found.group(1))


@dataclass
class Admin:
    """A signed-in (or not yet) browser on the admin app."""

    client: httpx.AsyncClient

    async def login(
        self, email: str, password: str = PASSWORD, next_path: str = "/admin/"
    ) -> httpx.Response:
        page = await self.client.get("/admin/login", params={"next": next_path})
        assert page.status_code == 200, page.text
        return await self.client.post(
            "/admin/login",
            data={
                "email": email,
                "password": password,
                "csrf_token": token_in(page.text),
                "next": next_path,
            },
        )

    async def token(self) -> str:
        page = await self.client.get("/admin/")
        assert page.status_code == 200, page.text
        return token_in(page.text)

    async def post(
        self, path: str, data: dict[str, Any] | list[tuple[str, str]] | None = None
    ) -> httpx.Response:
        """A form post with the session's CSRF token, as the page's form sends it."""
        token = await self.token()
        body: dict[str, list[str]] = {}
        pairs = data if isinstance(data, list) else list((data or {}).items())
        for name, value in [*pairs, ("csrf_token", token)]:
            body.setdefault(name, []).append(value)
        return await self.client.post(path, data=body)


async def counts(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """How many rows the tables admin pages can change hold (to show nothing changed)."""
    result = {}
    async with sessions() as session:
        for model in (
            AuditLog,
            Broadcast,
            OutboundMessage,
            TelegramGroup,
            TelegramPoll,
            Contact,
            ChannelIdentity,
            store.AdminUser,
        ):
            n = (await session.execute(select(func.count()).select_from(model))).scalar_one()
            result[model.__name__] = int(n)
        groups = (
            await session.execute(select(TelegramGroup.chat_id, TelegramGroup.ward_code))
        ).all()
        result["group_wards"] = hash(tuple(sorted(map(tuple, groups))))
        users = (
            await session.execute(
                select(store.AdminUser.email, store.AdminUser.role, store.AdminUser.disabled_at)
            )
        ).all()
        result["users"] = hash(tuple(sorted(map(str, users))))
    return result


async def join(
    client: httpx.AsyncClient,
    address: str,
    channel: str = "sms",
    *,
    language: str = "1",
    postcode: str = "CF10 1EP",
) -> None:
    """A simulated resident consents, picks a language and gives a postcode."""
    for text in ("HI", "1", language, postcode):
        response = await client.post(
            SIMULATOR, json={"channel": channel, "address": address, "text": text}
        )
        assert response.status_code == 200, response.text
