"""Rendering an engine message the way SMS shows it, shared by the Twilio adapter and the
simulator's SMS style, so the simulator shows exactly what a phone would. (Telegram's
rendering, keyboards included, is in :mod:`channels.telegram.keyboard`.)"""

from __future__ import annotations

from channels.base import Content
from channels.sms_text import is_more_request, render_sms_pages, segment_count
from flows.catalogue import Catalogue
from flows.events import MessageCreated


def render_sms(
    message: MessageCreated, language: str, max_segments: int, catalogue: Catalogue
) -> Content:
    """SMS content. Text longer than ``max_segments`` is paged: the first page is sent and the
    rest wait in ``more`` (each ``{"text", "segments"}``) until the person replies MORE."""
    first, *rest = render_sms_pages(message, language, max_segments, catalogue)
    content: Content = {"text": first, "choices": [], "segments": segment_count(first)}
    if rest:
        content["more"] = [{"text": page, "segments": segment_count(page)} for page in rest]
    return content


class SmsPaging:
    """The :class:`channels.base.Pager` behaviour of SMS: MORE / MWY sends the next page."""

    def wants_next_page(self, text: str) -> bool:
        return is_more_request(text)

    def next_page(self, content: Content) -> tuple[Content, Content] | None:
        pages = content.get("more")
        if not isinstance(pages, list) or not pages or not isinstance(pages[0], dict):
            return None
        page, rest = pages[0], pages[1:]
        sent = {k: v for k, v in content.items() if k != "more"}
        following: Content = {
            "text": str(page.get("text", "")),
            "choices": [],
            "segments": page.get("segments"),
        }
        if rest:
            following["more"] = rest
        return sent, following
