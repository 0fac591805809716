"""The web simulator channel: the same engine and storage, rendered exactly as SMS (pages
included, with MORE) or Telegram (inline keyboards, toggles, pages and taps) would render it,
delivered to the browser instead of a phone."""

from __future__ import annotations

import uuid

from channels.base import Content, TapMeaning
from channels.render import SmsPaging, render_sms
from channels.sms_text import DEFAULT_MAX_SEGMENTS
from channels.telegram import keyboard
from flows.catalogue import Catalogue
from flows.events import MessageCreated

STYLES = ("sms", "telegram")


def channel_name(style: str) -> str:
    """Simulator identities are kept apart from real phones: ``sim-sms``, ``sim-telegram``."""
    return f"sim-{style}"


class SimulatorChannel(SmsPaging):
    """``sim-sms`` pages like SMS (:class:`channels.base.Pager`); ``sim-telegram`` has
    Telegram's keyboards (:class:`channels.base.Taps`), so it never asks for MORE."""

    delivery_reports = False

    def __init__(
        self,
        style: str,
        catalogue: Catalogue,
        *,
        rate_per_second: float = 1000.0,
        max_segments: int = DEFAULT_MAX_SEGMENTS,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown simulator style {style!r}")
        self.style = style
        self.name = channel_name(style)
        self.catalogue = catalogue
        self.rate_per_second = rate_per_second
        self.max_segments = max_segments

    def render(self, message: MessageCreated, language: str = "en") -> Content:
        if self.style == "sms":
            return render_sms(message, language, self.max_segments, self.catalogue)
        return keyboard.render(message, language, self.catalogue)

    def wants_next_page(self, text: str) -> bool:
        return self.style == "sms" and super().wants_next_page(text)

    def decode_tap(self, content: Content, data: str) -> TapMeaning | None:
        return keyboard.decode_tap(content, data) if self.style == "telegram" else None

    def redraw(self, content: Content, meaning: TapMeaning) -> Content:
        return keyboard.with_keyboard(content, meaning.selected, meaning.page, self.catalogue)

    async def send(self, address: str, content: Content) -> str | None:
        # Delivery is the browser reading the outbox: the provider id is a marker, and nothing
        # leaves this machine.
        return f"sim-{uuid.uuid4().hex}"
