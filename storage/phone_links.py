"""Phone codes: a Telegram user confirming a phone number with a 6-digit code sent to it by
SMS, before it is linked to them (``flows/rounds/linking.py``). Only a salted hash of the
code is kept; a code expires, and allows a few tries.

What FORGET does here (registered below): the person's codes are deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from storage.erasure import Rule, register, table_of
from storage.types import UTCDateTime


class PhoneCode(SQLModel, table=True):
    """A code sent to ``phone`` for ``contact_id`` (the Telegram user's contact)."""

    __tablename__ = "phone_codes"

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    phone: str = Field(max_length=32)
    salt: str = Field(max_length=32)
    code_hash: str = Field(max_length=64)
    tries: int = Field(default=0)
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    confirmed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


register(Rule(table_of(PhoneCode), delete=True))
