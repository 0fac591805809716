"""The one interface every channel adapter implements, and the neutral inbound message.

Inbound: the adapter's web route verifies the provider's signature first, validates the payload
into a typed form, normalises it into an :class:`InboundMessage` and hands it to the pipeline.
Outbound: the pipeline asks the adapter to ``render`` an engine message into JSON content (stored
in the outbox); the dispatcher later hands that content to ``send``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from flows.events import MessageCreated

Content = dict[str, Any]
"""Rendered, JSON-serialisable outbound content: at least ``text``; channels add their own keys
(``choices``, ``buttons``, ``segments``...)."""


@dataclass(frozen=True)
class TapRef:
    """A tapped button: its ``data`` and the message whose keyboard it was on.

    ``message`` is the provider id the keyboard was sent as (Telegram ``<chat>:<message>``),
    or ``out:<outbox row id>`` for the simulator, or None for "the latest keyboard sent to
    this person". The pipeline reads that message's stored content and asks the channel what
    the tap means (:class:`Taps`)."""

    data: str
    message: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    """A message from a person, as any channel delivers it."""

    channel: str
    address: str
    provider_id: str
    text: str
    payload: str | None = None  # an answer in the engine's own form, ``flow:node:ids``
    raw: Mapping[str, Any] = field(default_factory=dict)
    tap: TapRef | None = None  # a tapped button, decoded by the channel
    name: str | None = None  # the person's name, when the channel gives one (Telegram)


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
        """Send; return the provider's message id. Raise a :mod:`channels.errors` error.
        ``content["attempt"]``, when present, names this attempt (a provider that echoes it
        back, as Twilio's status callback URL does, lets a lost reply be told from a lost
        send)."""
        ...


@dataclass(frozen=True)
class TapMeaning:
    """What a tap on a keyboard means, in the engine's terms.

    ``payload`` is the engine's answer form (``flow:node:id1,id2``); ``check_only`` marks a
    tap that only changes the selection on screen (a toggle, a page turn), after which the
    keyboard is drawn again with ``selected`` ticked (option indexes, in the order tapped)
    at ``page``. ``stale`` marks a tap on an out-of-date copy of the keyboard (a second
    button tapped before the first tap's redraw arrived): it changes nothing, and the
    keyboard is drawn again as it stands, with a notice saying so."""

    payload: str
    check_only: bool
    selected: tuple[int, ...] = ()
    page: int = 0
    stale: bool = False


@runtime_checkable
class Taps(Protocol):
    """A channel with tappable keyboards (Telegram, and the simulator showing Telegram)."""

    def decode_tap(self, content: Content, data: str) -> TapMeaning | None:
        """What ``data`` means on the keyboard ``content`` showed; None if it never carried
        that data (a forged or mangled tap)."""
        ...

    def redraw(self, content: Content, meaning: TapMeaning) -> Content:
        """``content`` with its keyboard showing ``meaning``'s selection and page."""
        ...


@runtime_checkable
class Lookup(Protocol):
    """A channel whose provider can be asked what it has sent (Twilio's message list): used
    before sending again a message whose earlier attempt may have gone out."""

    async def find_sent(self, address: str, content: Content, since: datetime) -> list[str]:
        """Provider ids of messages to ``address`` with this content created since ``since``,
        newest first."""
        ...


@runtime_checkable
class Pager(Protocol):
    """A channel that sends long content in pages (SMS): the person asks for the next page
    with a word (MORE / MWY), and the rest waits in the sent content until then."""

    def wants_next_page(self, text: str) -> bool:
        """Whether an inbound text asks for the next page."""
        ...

    def next_page(self, content: Content) -> tuple[Content, Content] | None:
        """For content with pages still to send: (that content without them, the next page
        to send, carrying any pages after it). None when nothing waits."""
        ...
