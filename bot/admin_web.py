"""Wiring the admin web app (``admin/web``) into the FastAPI app: the admin side gets the
running services, a few settings values and a renderer for broadcast previews, and never
imports ``bot`` or a channel library itself."""

from __future__ import annotations

from fastapi import FastAPI

from admin.web.app import build
from admin.web.ports import AdminConfig, Rendered
from bot.services import Services
from channels.render import render_sms
from channels.sms_text import is_gsm7
from channels.telegram import keyboard
from flows.catalogue import Catalogue
from flows.events import MessageCreated


class ChannelRenderer:
    """:class:`admin.web.ports.Renderer`: a text as SMS and Telegram would send it, with the
    same renderers the channels use (SMS pages, segments and encoding)."""

    def __init__(self, catalogue: Catalogue, max_segments: int) -> None:
        self.catalogue = catalogue
        self.max_segments = max_segments

    def render(self, channel: str, text: str, language: str) -> Rendered:
        message = MessageCreated(text)
        if channel == "sms":
            content = render_sms(message, language, self.max_segments, self.catalogue)
            pages = [content] + [p for p in content.get("more", []) if isinstance(p, dict)]
            texts = tuple(str(p.get("text", "")) for p in pages)
            return Rendered(
                channel="sms",
                language=language,
                pages=texts,
                segments=tuple(int(p.get("segments") or 1) for p in pages),
                encoding="GSM-7" if all(is_gsm7(t) for t in texts) else "UCS-2",
            )
        content = keyboard.render(message, language, self.catalogue)
        return Rendered("telegram", language, (str(content.get("text", "")),), (1,), "")


def mount(app: FastAPI, services: Services) -> None:
    """Serve the admin web app under ``/admin``."""
    settings = services.settings
    config = AdminConfig(
        session_minutes=settings.admin_session_minutes,
        secure_cookies=settings.public_url.startswith("https://"),
        default_region=settings.default_region,
        default_language=settings.default_language,
        sms_segment_price=settings.sms_segment_price,
        channels=tuple(services.channels),
        telegram_enabled=services.polls is not None,
    )
    renderer = ChannelRenderer(services.catalogue, settings.sms_max_segments)
    app.mount("/admin", build(services, config, renderer), name="admin")
