"""The web simulator channel: the same engine and storage, rendered as SMS or Telegram would
render it, delivered to the browser instead of a phone."""

from __future__ import annotations

import uuid

from channels.base import Content
from channels.render import render_sms, render_telegram
from flows.events import MessageCreated

STYLES = ("sms", "telegram")


def channel_name(style: str) -> str:
    """Simulator identities are kept apart from real phones: ``sim-sms``, ``sim-telegram``."""
    return f"sim-{style}"


class SimulatorChannel:
    def __init__(self, style: str, rate_per_second: float = 1000.0) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown simulator style {style!r}")
        self.style = style
        self.name = channel_name(style)
        self.rate_per_second = rate_per_second
        self.delivery_reports = False

    def render(self, message: MessageCreated, language: str = "en") -> Content:
        if self.style == "sms":
            return render_sms(message, language)
        return render_telegram(message, language)

    async def send(self, address: str, content: Content) -> str | None:
        # Delivery is the browser reading the outbox; nothing leaves this machine.
        return f"sim-{uuid.uuid4().hex}"
