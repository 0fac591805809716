"""What a broadcast is, as the domains and the admin side ask for one. The one implementation
(``bot.broadcast.BroadcastService``) is built in the composition root; domains and admin code
take a :class:`Broadcaster` and never build one themselves.

A broadcast sends a message, or starts a flow, for a segment of contacts and/or Telegram
groups: rendered per channel and language, at bulk priority (replies go first), never to an
opted-out contact, and at most once per (broadcast, contact) however often it is sent: two
sends of the same thing to the same segment are the same broadcast, unless given different
keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import ColumnElement

CHANNEL_GROUPS = {"sms": ("sms", "sim-sms"), "telegram": ("telegram", "sim-telegram")}
"""The channels a segment's ``channels`` names stand for: simulated residents go with their
channel (when the simulator is on)."""


class BroadcastError(Exception):
    """A broadcast can't be sent as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Segment:
    """Which contacts: every condition given must hold. ``wards``, ``channels`` (``sms``,
    ``telegram``) and ``languages`` are lists of what is allowed (empty: any). ``where`` is a
    domain's own condition on the ``contacts`` table (a SQLAlchemy expression, for example
    ``Contact.id.in_(select(...))``); a broadcast with one needs an explicit key."""

    wards: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    consented_only: bool = True
    where: ColumnElement[bool] | None = None
    where_label: str = ""  # says what ``where`` selects, for the audit log and previews

    def describe(self) -> dict[str, Any]:
        return {
            "wards": list(self.wards),
            "channels": list(self.channels),
            "languages": list(self.languages),
            "consented_only": self.consented_only,
            "where": self.where_label or (None if self.where is None else "a domain's condition"),
        }


@dataclass(frozen=True)
class Groups:
    """Which Telegram groups: those assigned to ``wards`` (every assigned group when None),
    plus ``chat_ids``."""

    wards: tuple[str, ...] | None = None
    chat_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class BroadcastSpec:
    """A message (``text``, per language; English is the fallback) or a flow to start
    (``flow_id`` with ``variables``) for ``segment`` and/or ``groups``. ``send_at`` schedules
    it (the scheduler sends it then; a scheduled broadcast can't have a ``where``)."""

    text: dict[str, str] = field(default_factory=dict)
    flow_id: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    segment: Segment | None = None
    groups: Groups | None = None
    key: str | None = None
    label: str = ""
    actor: str = "system"
    send_at: datetime | None = None

    def resolved_key(self) -> str:
        """The idempotency key: the one given, or a digest of what is sent to whom."""
        if self.key is not None:
            return self.key[:64]
        if self.segment is not None and self.segment.where is not None:
            raise BroadcastError("a broadcast with a domain condition needs an explicit key")
        what = {
            "text": self.text,
            "flow": self.flow_id,
            "variables": self.variables,
            "segment": None if self.segment is None else self.segment.describe(),
            "groups": None
            if self.groups is None
            else {"wards": self.groups.wards, "chat_ids": self.groups.chat_ids},
        }
        digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode())
        return "auto:" + digest.hexdigest()[:59]


@dataclass(frozen=True)
class AudienceLine:
    channel: str
    language: str
    recipients: int
    segments: int  # SMS segments per message (1 for other channels)


@dataclass(frozen=True)
class Audience:
    """Who a broadcast would reach, before it is sent."""

    lines: tuple[AudienceLine, ...]
    groups: tuple[str, ...]
    sms_segments: int  # in all, over real SMS
    estimated_cost: Decimal  # sms_segments x the price per segment
    currency: str = "GBP"

    @property
    def recipients(self) -> int:
        return sum(line.recipients for line in self.lines) + len(self.groups)


@dataclass(frozen=True)
class Sent:
    """What a send did: the broadcast's id, how many recipients were newly queued now, and
    how many had it already (a repeated send)."""

    broadcast_id: int
    queued: int
    already: int
    scheduled: bool = False


class Broadcaster(Protocol):
    async def preview(self, broadcast: BroadcastSpec) -> Audience:
        """Who would get it, per channel and language, and what SMS would cost."""
        ...

    async def send(self, broadcast: BroadcastSpec) -> Sent:
        """Queue it for everyone in the audience who has not had it (or schedule it)."""
        ...
