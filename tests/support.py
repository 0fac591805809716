"""Small helpers shared by tests."""

from __future__ import annotations

from channels.base import Content
from channels.render import render_sms
from channels.sms_text import DEFAULT_MAX_SEGMENTS
from flows.catalogue import load_catalogue
from flows.events import MessageCreated

CATALOGUE = load_catalogue()


def sms(
    message: MessageCreated, language: str = "en", max_segments: int = DEFAULT_MAX_SEGMENTS
) -> Content:
    """SMS content for a message, with the shipped catalogue."""
    return render_sms(message, language, max_segments, CATALOGUE)
