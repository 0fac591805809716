"""Cleaning text that arrives from outside before it is stored or shown."""

from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Drop control characters (PostgreSQL refuses NUL) and lone surrogates (not UTF-8)."""
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    return _CONTROL.sub("", text)


def clean_json(value: Any, max_depth: int = 12) -> Any:
    """:func:`clean_text` applied to every string in a JSON-like value, and objects or lists
    nested deeper than ``max_depth`` left out (None): a value stored deep enough could not
    be read back (the JSON decoder gives up with RecursionError)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict | list) and max_depth <= 0:
        return None
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v, max_depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v, max_depth - 1) for v in value]
    return value
