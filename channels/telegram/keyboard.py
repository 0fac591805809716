"""How Telegram shows an engine message: text, and an inline keyboard for a question.

Telegram limits a button's ``callback_data`` to 64 bytes, and ``<flow>:<node>:<option>`` can
be longer, so buttons carry short codes and the full question lives in the content stored
with the sent message (found again by the provider id ``<chat id>:<message id>``):

- ``c:<i>``: single choice, option ``i`` (an index into ``content["options"]``);
- ``t:<sel>:<page>``: a pick-several toggle; ``sel`` is the selection *after* the tap, so each
  keyboard carries its own state and a tap is idempotent. The selection stored with the sent
  message (``selected``, updated on every redraw) is the truth: a toggle whose ``sel`` is not
  that selection with one option added or removed was tapped on an out-of-date copy of the
  keyboard (two quick taps, the second before the first's redraw arrived). Applying it would
  silently undo the first tap, so it changes nothing (``stale``); a page turn keeps the stored
  selection, and Done on an out-of-date copy answers nothing;
- ``p:<sel>:<page>``: turn to ``page``, keeping the selection (long lists show
  :data:`PAGE_SIZE` options a page, with Previous / Next);
- ``d:<sel>``: Done with that selection.

``sel`` is a hex bitmask of option indexes, or for a ranking (``ordered``) the indexes in the
order tapped, in base 36, joined by dots. 120 options (the most a list may have) make a
30-digit mask, so every code fits. Nothing here does I/O; the catalogue gives every label.
"""

from __future__ import annotations

from typing import Any

from channels.base import Content, TapMeaning
from flows.catalogue import Catalogue
from flows.events import Choice, MessageCreated

PAGE_SIZE = 8
Rows = list[list[tuple[str, str]]]
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def render(message: MessageCreated, language: str, catalogue: Catalogue) -> Content:
    """Content for one message: text, and for a question its options and first keyboard."""
    content: Content = {"text": message.text, "choices": [], "buttons": [], "language": language}
    if message.request_phone:  # a reply keyboard whose one button shares the person's number
        content["request_phone"] = catalogue.text("telegram_share_phone", language)
    if not message.choices or message.question is None:
        return content
    options = [{"id": c.id, "label": _label(c), "cost": c.cost} for c in message.choices]
    content.update(question=message.question, options=options)
    if message.multi:
        key = "telegram_ranked_hint" if message.ordered else "telegram_toggle_hint"
        content.update(
            text=f"{message.text}\n\n{catalogue.text(key, language)}",
            multi=True,
            ordered=message.ordered,
            min=message.min_choices,
            max=message.max_choices,
            budget=message.budget,
        )
    return with_keyboard(content, (), 0, catalogue)


def with_keyboard(
    content: Content, selected: tuple[int, ...], page: int, catalogue: Catalogue
) -> Content:
    """``content`` with its keyboard drawn for this selection and page. The rows are kept in
    ``keyboard`` (what Telegram shows) and flattened in ``buttons`` (what the simulator's
    JSON API shows); ``choices`` lists the options' labels."""
    rows = keyboard(content, selected, page, catalogue)
    drawn = [[{"label": label, "data": data} for label, data in row] for row in rows]
    return {
        **content,
        "selected": list(selected),
        "page": page,
        "keyboard": drawn,
        "buttons": [button for row in drawn for button in row],
        "choices": [str(o["label"]) for o in content.get("options", [])],
    }


def pages(content: Content) -> int:
    return max(1, -(-len(content.get("options", [])) // PAGE_SIZE))


def keyboard(
    content: Content, selected: tuple[int, ...], page: int, catalogue: Catalogue
) -> Rows:
    """The inline keyboard's rows of (label, callback data)."""
    options = content.get("options", [])
    if not options or not content.get("question"):
        return []
    language = str(content.get("language", "en"))
    total = pages(content)
    page = min(max(page, 0), total - 1)
    shown = range(page * PAGE_SIZE, min(len(options), (page + 1) * PAGE_SIZE))
    ordered = bool(content.get("ordered"))
    rows: Rows = []
    if not content.get("multi"):
        rows = [[(str(options[i]["label"]), f"c:{i}")] for i in shown]
        rows += _nav(total, page, "", language, catalogue)
        return rows
    code = _encode(selected, ordered)
    for i in shown:
        label = str(options[i]["label"])
        if i in selected:
            toggled = tuple(s for s in selected if s != i)
            mark = f"✅ {selected.index(i) + 1}." if ordered else "✅"
        else:
            toggled = (*selected, i) if ordered else tuple(sorted((*selected, i)))
            mark = "⬜"
        rows.append([(f"{mark} {label}", f"t:{_encode(toggled, ordered)}:{page}")])
    rows += _nav(total, page, code, language, catalogue)
    rows.append([(done_label(content, selected, catalogue), f"d:{code}")])
    return rows


def _nav(total: int, page: int, code: str, language: str, catalogue: Catalogue) -> Rows:
    if total == 1:
        return []
    row: list[tuple[str, str]] = []
    if page > 0:
        row.append((catalogue.text("telegram_previous", language), f"p:{code}:{page - 1}"))
    row.append((f"{page + 1}/{total}", f"p:{code}:{page}"))
    if page < total - 1:
        row.append((catalogue.text("telegram_next", language), f"p:{code}:{page + 1}"))
    return [row]


def done_label(content: Content, selected: tuple[int, ...], catalogue: Catalogue) -> str:
    """Done, with the running total against the budget when there is one."""
    language = str(content.get("language", "en"))
    budget = content.get("budget")
    if budget is None:
        return catalogue.text("telegram_done_count", language, count=len(selected))
    total = spent(content, selected)
    return catalogue.text(
        "telegram_done_budget", language, spent=f"{total:,}", budget=f"{budget:,}"
    )


def spent(content: Content, selected: tuple[int, ...]) -> int:
    options = content.get("options", [])
    return sum(int(options[i].get("cost") or 0) for i in selected)


def decode_tap(content: Content, data: str) -> TapMeaning | None:
    """What a button of this content's keyboard means; None for data it never carried."""
    question, options = content.get("question"), content.get("options")
    if not question or not isinstance(options, list) or not options:
        return None
    kind, _, rest = data.partition(":")
    multi, ordered = bool(content.get("multi")), bool(content.get("ordered"))
    if kind == "c" and not multi:
        index = _index(rest, len(options))
        if index is None:
            return None
        return TapMeaning(f"{question}:{options[index]['id']}", check_only=False)
    if kind not in ("t", "p", "d") or (kind != "p" and not multi):
        return None
    code, _, page_text = rest.partition(":")
    selected = _decode(code, len(options), ordered)
    if selected is None or (selected and not multi):
        return None
    page = 0
    if kind != "d":
        parsed = _index(page_text, pages(content))
        if parsed is None:
            return None
        page = parsed
    current = _stored_selection(content, len(options))
    if current is not None and selected != current:
        if kind == "p" or (kind == "t" and _one_toggle_apart(current, selected, ordered)):
            selected = current if kind == "p" else selected
        else:
            return _meaning(question, options, current, page, check_only=True, stale=True)
    return _meaning(question, options, selected, page, check_only=kind != "d")


def _meaning(
    question: str,
    options: list[Any],
    selected: tuple[int, ...],
    page: int,
    *,
    check_only: bool,
    stale: bool = False,
) -> TapMeaning:
    ids = ",".join(str(options[i]["id"]) for i in selected)
    return TapMeaning(
        f"{question}:{ids}", check_only=check_only, selected=selected, page=page, stale=stale
    )


def _stored_selection(content: Content, size: int) -> tuple[int, ...] | None:
    """The selection the keyboard was last drawn with; None if the content has none we trust."""
    stored = content.get("selected")
    if not isinstance(stored, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size for i in stored
    ):
        return None
    return tuple(stored)


def _one_toggle_apart(current: tuple[int, ...], tapped: tuple[int, ...], ordered: bool) -> bool:
    """Whether ``tapped`` is ``current`` with one option added (at the end, for a ranking) or
    removed: a tap on the keyboard as it was last drawn."""
    if len(tapped) == len(current) + 1:
        return tapped[:-1] == current if ordered else set(current) < set(tapped)
    if len(tapped) == len(current) - 1:
        if not ordered:
            return set(tapped) < set(current)
        return any(current[:i] + current[i + 1 :] == tapped for i in range(len(current)))
    return False


def _index(text: str, size: int) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 4:
        return None
    value = int(text)
    return value if value < size else None


def _encode(selected: tuple[int, ...], ordered: bool) -> str:
    if not selected:
        return ""
    if ordered:
        return ".".join(_base36(i) for i in selected)
    return format(sum(1 << i for i in selected), "x")


def _base36(value: int) -> str:
    digits = ""
    while True:
        value, remainder = divmod(value, 36)
        digits = _DIGITS[remainder] + digits
        if not value:
            return digits


def _decode(code: str, size: int, ordered: bool) -> tuple[int, ...] | None:
    if code == "":
        return ()
    if not code.isascii() or len(code) > 60:
        return None
    if ordered:
        try:
            indexes = [int(part, 36) for part in code.split(".")]
        except ValueError:
            return None
        if len(set(indexes)) != len(indexes) or any(not 0 <= i < size for i in indexes):
            return None
        return tuple(indexes)
    try:
        bits = int(code, 16)
    except ValueError:
        return None
    if bits < 0 or bits >> size:
        return None
    return tuple(i for i in range(size) if bits >> i & 1)


def _label(choice: Choice) -> str:
    return choice.label if choice.cost is None else f"{choice.label} ({choice.cost:,})"


def as_markup_rows(content: Content) -> list[list[dict[str, Any]]]:
    """The stored keyboard, as rows of ``{"label", "data"}``."""
    rows = content.get("keyboard")
    return rows if isinstance(rows, list) else []
