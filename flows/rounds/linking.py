"""Who counts as verified by phone for a ``verification: phone`` round.

SMS voters are verified by their number (the network delivered their message from it).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Contact

SMS_CHANNELS = frozenset({"sms", "sim-sms"})


async def phone_verified(session: AsyncSession, *, contact: Contact, channel: str | None) -> bool:
    """Whether ``contact``, writing on ``channel``, is verified by phone."""
    return channel in SMS_CHANNELS
