"""Charts drawn on the server as SVG: no script, nothing from a CDN. Each chart is an image
with a title and a short description for assistive technology, and comes with its figures
(``rows``) so the page shows the same numbers as a table beside it.

Colours are dark on white (over 4.5:1 contrast); the bars are labelled with their values, so
no reading depends on colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

from markupsafe import Markup

BAR = "#1d70b8"
AXIS = "#505a5f"
TEXT = "#0b0c0c"
FONT = 'font-family="Arial, Helvetica, sans-serif"'


@dataclass(frozen=True)
class Figure:
    id: str
    title: str
    svg: Markup
    rows: tuple[tuple[str, int], ...]
    label_heading: str
    value_heading: str


def bar_chart(
    id: str,
    title: str,
    rows: Sequence[tuple[str, int]],
    *,
    label_heading: str,
    value_heading: str,
) -> Figure:
    """Horizontal bars, one per row (a label and a count)."""
    width, label_w, row_h, pad = 640, 200, 30, 8
    height = max(1, len(rows)) * row_h + 2 * pad
    top = max((v for _, v in rows), default=0) or 1
    bar_space = width - label_w - 90
    parts = []
    for i, (label, value) in enumerate(rows):
        y = pad + i * row_h
        w = round(bar_space * value / top)
        short = label if len(label) <= 26 else label[:25] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 19}" text-anchor="end" fill="{TEXT}" '
            f'font-size="17" {FONT}>{escape(short)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{max(w, 1)}" height="{row_h - 10}" '
            f'fill="{BAR}"/>'
            f'<text x="{label_w + w + 6}" y="{y + 19}" fill="{TEXT}" font-size="17" '
            f"{FONT}>{value:,}</text>"
        )
    if not rows:
        parts.append(
            f'<text x="{pad}" y="{pad + 19}" fill="{TEXT}" font-size="17" {FONT}>No data yet</text>'
        )
    description = "; ".join(f"{label}: {value:,}" for label, value in rows) or "no data"
    return Figure(
        id,
        title,
        _svg(id, title, description, width, height, "".join(parts)),
        tuple(rows),
        label_heading,
        value_heading,
    )


def day_chart(
    id: str,
    title: str,
    days: Sequence[tuple[date, int]],
    *,
    value_heading: str,
) -> Figure:
    """Columns, one per day, oldest on the left; the axis names the first, middle and last
    day and the highest count."""
    width, height, left, bottom, top_pad = 640, 230, 56, 32, 14
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    top = max((v for _, v in days), default=0) or 1
    n = max(1, len(days))
    step = plot_w / n
    parts = [
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - 8}" y2="{top_pad + plot_h}" '
        f'stroke="{AXIS}" stroke-width="1"/>',
        f'<text x="{left - 6}" y="{top_pad + 10}" text-anchor="end" fill="{TEXT}" '
        f'font-size="16" {FONT}>{top:,}</text>',
        f'<text x="{left - 6}" y="{top_pad + plot_h}" text-anchor="end" fill="{TEXT}" '
        f'font-size="16" {FONT}>0</text>',
    ]
    for i, (_day, value) in enumerate(days):
        h = round(plot_h * value / top)
        x = left + i * step + step * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{top_pad + plot_h - h}" width="{max(step * 0.7, 1):.1f}" '
            f'height="{h}" fill="{BAR}"/>'
        )
    for i in sorted({0, len(days) // 2, len(days) - 1}) if days else ():
        x = left + i * step + step / 2
        anchor = "start" if i == 0 else "end" if i == len(days) - 1 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}" fill="{TEXT}" '
            f'font-size="16" {FONT}>{days[i][0]:%d %b}</text>'
        )
    total = sum(v for _, v in days)
    description = (
        f"{len(days)} days from {days[0][0]:%d %b %Y} to {days[-1][0]:%d %b %Y}; "
        f"{total:,} in all, at most {top if total else 0:,} in a day"
        if days
        else "no data"
    )
    rows = tuple((f"{d:%a %d %b %Y}", v) for d, v in days)
    return Figure(
        id,
        title,
        _svg(id, title, description, width, height, "".join(parts)),
        rows,
        "Day",
        value_heading,
    )


def _svg(id: str, title: str, description: str, width: int, height: int, body: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{id}-title {id}-desc" focusable="false">'
        f'<title id="{id}-title">{escape(title)}</title>'
        f'<desc id="{id}-desc">{escape(description)}</desc>{body}</svg>'
    )
