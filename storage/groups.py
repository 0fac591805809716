"""Telegram groups the bot has been added to, and the wards they are in. Like every repository,
these functions take a session and never commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage.models import TelegramGroup, Ward


async def record_group(
    session: AsyncSession, *, chat_id: str, title: str, kind: str, active: bool, now: datetime
) -> TelegramGroup:
    group = await session.get(TelegramGroup, chat_id)
    if group is None:
        group = TelegramGroup(chat_id=chat_id, added_at=now, updated_at=now)
        session.add(group)
    if title:
        group.title = title[:255]
    group.kind = kind[:16]
    group.active = active
    group.updated_at = now
    await session.flush()
    return group


async def list_groups(session: AsyncSession) -> list[TelegramGroup]:
    query = select(TelegramGroup).order_by(col(TelegramGroup.title), col(TelegramGroup.chat_id))
    return list((await session.execute(query)).scalars())


async def assign_group(
    session: AsyncSession, *, chat_id: str, ward_code: str | None, now: datetime
) -> TelegramGroup:
    """Put a group in a ward. Raises LookupError naming whatever is unknown."""
    group = await session.get(TelegramGroup, chat_id)
    if group is None:
        raise LookupError(
            f"no Telegram group with chat id {chat_id}; see `civicbot telegram groups`"
        )
    if ward_code is not None and await session.get(Ward, ward_code) is None:
        raise LookupError(f"no ward with code {ward_code}; see `civicbot wards list`")
    group.ward_code = ward_code
    group.updated_at = now
    return group


async def groups_in_wards(
    session: AsyncSession, *, wards: list[str] | None
) -> list[TelegramGroup]:
    """Active groups assigned to one of ``wards`` (every active group with a ward when None)."""
    query = select(TelegramGroup).where(
        col(TelegramGroup.active).is_(True), col(TelegramGroup.ward_code).is_not(None)
    )
    if wards is not None:
        query = query.where(col(TelegramGroup.ward_code).in_(wards))
    return list((await session.execute(query.order_by(col(TelegramGroup.chat_id)))).scalars())
