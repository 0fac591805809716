"""Rendering an engine message the way each channel shows it. Shared by the real adapters and
the web simulator, so the simulator shows exactly what a phone would."""

from __future__ import annotations

from channels.base import Content
from channels.sms_text import DEFAULT_MAX_SEGMENTS, paginate, render_sms_text, segment_count
from flows.events import MessageCreated


def render_sms(
    message: MessageCreated, language: str = "en", max_segments: int = DEFAULT_MAX_SEGMENTS
) -> Content:
    """SMS content. Text longer than ``max_segments`` is paged: the first page is sent and the
    rest wait in ``more`` (each ``{"text", "segments"}``) until the person replies MORE."""
    first, *rest = paginate(render_sms_text(message, language), max_segments, language)
    content: Content = {"text": first, "choices": [], "segments": segment_count(first)}
    if rest:
        content["more"] = [{"text": page, "segments": segment_count(page)} for page in rest]
    return content


def render_telegram(message: MessageCreated, language: str = "en") -> Content:
    """Text plus one inline button per choice; the button data names the question so a tap on
    an old keyboard can be told apart from an answer to the current one."""
    buttons = [
        {
            "label": c.label if c.cost is None else f"{c.label} ({c.cost:,})",
            "data": f"{message.question}:{c.id}",
        }
        for c in message.choices
    ]
    text = message.text
    if message.multi and message.choices:
        numbered = "\n".join(f"{n} {b['label']}" for n, b in enumerate(buttons, start=1))
        text = f"{text}\n\n{numbered}\n\nReply with the numbers of your choices, e.g. 1 3"
        buttons = []
    return {"text": text, "choices": [b["label"] for b in buttons], "buttons": buttons}
