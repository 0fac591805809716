"""Linking a Telegram user to their phone number, and who counts as verified by phone for a
``verification: phone`` round.

SMS voters are verified by their number (the network delivered their message from it). A
Telegram user gives a number (typed, or shared with Telegram's contact button, which must be
their own contact); a 6-digit code is sent to it by SMS; when they send the code back within
:data:`CODE_MINUTES` and :data:`MAX_TRIES` tries, the number is linked to them:

- if a contact already writes from that number by SMS, the two contacts are merged into
  that one (the SMS contact): the Telegram identity moves to it, and so do their ballots
  (one per round: the latest cast wins), ideas, answers and other rows;
- otherwise the number becomes an SMS identity of the Telegram user's contact.

Either way the person then has an SMS identity, which is what "verified by phone" means.
Only a salted SHA-256 of a code is stored; codes are deleted by FORGET.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta

import phonenumbers
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from storage.models import ChannelIdentity, Contact, OutboundMessage, Priority
from storage.pb_rounds import PbBallot
from storage.phone_links import PhoneCode
from storage.repositories import erase_contact

log = logging.getLogger(__name__)

SMS_OF = {"telegram": "sms", "sim-telegram": "sim-sms"}
SMS_CHANNELS = frozenset(SMS_OF.values())
CODE_MINUTES = 10
MAX_TRIES = 5
MAX_CODES_PER_HOUR = 3  # each one is an SMS we pay for


async def phone_verified(session: AsyncSession, *, contact: Contact, channel: str | None) -> bool:
    """Whether ``contact``, writing on ``channel``, is verified by phone: by SMS, or with
    an SMS identity (their own number, written from or confirmed by code)."""
    if channel in SMS_CHANNELS:
        return True
    found = await session.scalar(
        select(func.count())
        .select_from(ChannelIdentity)
        .where(
            col(ChannelIdentity.contact_id) == contact.id,
            col(ChannelIdentity.channel).in_(SMS_CHANNELS),
        )
    )
    return bool(found)


def normalise_phone(text: str, region: str = "GB") -> str | None:
    """A phone number as E.164 (``+447700900123``), or None if it is not one."""
    try:
        number = phonenumbers.parse(text.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _hash(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


class TooManyCodes(Exception):
    """Codes were sent to this person too often in the last hour."""


async def send_code(
    session: AsyncSession,
    *,
    contact: Contact,
    channel: str | None,
    phone: str,
    text: str,
    now: datetime,
) -> None:
    """Make a code for ``phone`` and queue ``text`` (with ``{code}`` in it) to it by SMS, on
    the SMS channel that goes with ``channel``. Earlier unconfirmed codes stop working."""
    assert contact.id is not None
    recent = await session.scalar(
        select(func.count())
        .select_from(PhoneCode)
        .where(
            col(PhoneCode.contact_id) == contact.id,
            col(PhoneCode.created_at) > now - timedelta(hours=1),
        )
    )
    if (recent or 0) >= MAX_CODES_PER_HOUR:
        raise TooManyCodes
    await session.execute(
        update(PhoneCode)
        .where(col(PhoneCode.contact_id) == contact.id, col(PhoneCode.confirmed_at).is_(None))
        .values(tries=MAX_TRIES)
    )
    code = f"{secrets.randbelow(1_000_000):06d}"
    salt = secrets.token_hex(8)
    session.add(
        PhoneCode(
            contact_id=contact.id,
            phone=phone,
            salt=salt,
            code_hash=_hash(salt, code),
            expires_at=now + timedelta(minutes=CODE_MINUTES),
            created_at=now,
        )
    )
    session.add(
        OutboundMessage(
            channel=SMS_OF.get(channel or "", "sms"),
            address=phone,
            contact_id=contact.id,
            content={"text": text.replace("{code}", code), "choices": []},
            priority=Priority.REPLY,
            ignore_opt_out=True,  # asked for by the person, to a number they gave
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )
    await session.flush()


async def confirm_code(
    session: AsyncSession, *, contact: Contact, code: str, now: datetime
) -> tuple[str, str | None]:
    """Check a code: ``("ok", phone)``, ``("wrong", None)`` (tries left), ``("expired",
    None)`` (no live code: expired, used up, or none sent)."""
    assert contact.id is not None
    found = (
        await session.execute(
            select(PhoneCode)
            .where(col(PhoneCode.contact_id) == contact.id, col(PhoneCode.confirmed_at).is_(None))
            .order_by(col(PhoneCode.id).desc())
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if found is None or found.expires_at <= now or found.tries >= MAX_TRIES:
        return "expired", None
    found.tries += 1
    given = "".join(ch for ch in code if ch.isdigit() and ch.isascii())
    if not hmac.compare_digest(_hash(found.salt, given), found.code_hash):
        await session.flush()
        return ("wrong" if found.tries < MAX_TRIES else "expired"), None
    found.confirmed_at = now
    await session.flush()
    return "ok", found.phone


async def link_phone(
    session: AsyncSession, *, contact: Contact, channel: str | None, phone: str, now: datetime
) -> Contact:
    """Link a confirmed ``phone`` to ``contact``: merged into the SMS contact for that number
    if there is one (returned), else the number added as an SMS identity of ``contact``."""
    assert contact.id is not None
    sms = SMS_OF.get(channel or "", "sms")
    owner = (
        await session.execute(
            select(ChannelIdentity)
            .where(col(ChannelIdentity.channel) == sms, col(ChannelIdentity.address) == phone)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if owner is None:
        session.add(
            ChannelIdentity(channel=sms, address=phone, contact_id=contact.id, created_at=now)
        )
        await session.flush()
        return contact
    if owner.contact_id == contact.id:
        return contact
    into = await session.get(Contact, owner.contact_id, with_for_update=True)
    assert into is not None
    await merge_contacts(session, source=contact, into=into, now=now)
    return into


async def merge_contacts(
    session: AsyncSession, *, source: Contact, into: Contact, now: datetime
) -> None:
    """Move everything of ``source`` to ``into``. Ballots: one per round, the latest cast
    kept. Other rows follow their contact id, table by table; rows of a table that can't
    move (``into`` has its own, under a unique rule: a needs profile, say) are then
    erased with ``source`` as FORGET erases a person (deleted, or kept counted with no link
    to anyone), so nothing of theirs is left where a later FORGET would not reach it."""
    assert source.id is not None and into.id is not None
    for name in ("language", "postcode", "ward_code", "consent_at"):
        if getattr(into, name) is None and getattr(source, name) is not None:
            setattr(into, name, getattr(source, name))
    theirs = {
        b.round_id: b
        for b in (
            await session.execute(select(PbBallot).where(col(PbBallot.contact_id) == into.id))
        ).scalars()
    }
    mine = (
        await session.execute(select(PbBallot).where(col(PbBallot.contact_id) == source.id))
    ).scalars()
    for ballot in list(mine):
        other = theirs.get(ballot.round_id)
        if other is None:
            continue
        older = ballot if ballot.updated_at < other.updated_at else other
        await session.execute(delete(PbBallot).where(col(PbBallot.id) == older.id))
    await session.flush()
    for table in SQLModel.metadata.sorted_tables:
        column = table.c.get("contact_id")
        if column is None or table.name == "contacts":
            continue
        try:
            async with session.begin_nested():
                await session.execute(
                    update(table).where(column == source.id).values(contact_id=into.id)
                )
        except IntegrityError:
            log.info("merge of contacts: rows of %s erased with the old contact", table.name)
    await erase_contact(session, contact_id=source.id, now=now)
    # The reply to this message is queued for ``source`` (the pipeline's contact): as for
    # the reply to FORGET, it is then linked to nobody and blanked once sent.
    source.erased_at = now
