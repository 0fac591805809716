"""The one interface every channel adapter implements, and the neutral inbound message.

Inbound: the adapter's web route verifies the provider's signature first, validates the payload
into a typed form, normalises it into an :class:`InboundMessage` and hands it to the pipeline.
Outbound: the pipeline asks the adapter to ``render`` an engine message into JSON content (stored
in the outbox); the dispatcher later hands that content to ``send``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from flows.events import MessageCreated

Content = dict[str, Any]
"""Rendered, JSON-serialisable outbound content: at least ``text``; channels add their own keys
(``choices``, ``buttons``, ``segments``...)."""


@dataclass(frozen=True)
class InboundMessage:
    """A message from a person, as any channel delivers it."""

    channel: str
    address: str
    provider_id: str
    text: str
    payload: str | None = None  # button data, when a button was tapped
    raw: Mapping[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    """A channel adapter. Provider library objects never leave the adapter."""

    name: str
    rate_per_second: float
    # The provider reports delivery later, by webhook, and a report can beat the send's own
    # reply: the dispatcher then applies reports held for the id it records.
    delivery_reports: bool

    def render(self, message: MessageCreated, language: str = "en") -> Content:
        """Turn an engine message into content for this channel."""
        ...

    async def send(self, address: str, content: Content) -> str | None:
        """Send; return the provider's message id. Raise a :mod:`channels.errors` error."""
        ...
