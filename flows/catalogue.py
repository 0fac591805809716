"""The text catalogue: every user-facing string outside flow YAML, in English and Welsh.

One file, ``flows/catalogue.yaml``, keyed by a short name; each key has an ``en`` and a ``cy``
text (loading refuses a key without both, so a Welsh contact is never sent English by
accident). Texts are ``str.format`` templates: ``{total}``, ``{budget}``... A council may
override texts with a ``catalogue.yaml`` in ``CIVICBOT_FLOWS_DIR`` (known keys only).

The engine, the channel renderers and the domain services all read texts from here; none of
them keeps a user-facing string of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

LANGUAGES = ("en", "cy")
CATALOGUE_FILE = Path(__file__).parent / "catalogue.yaml"
OVERRIDE_NAME = "catalogue.yaml"


class CatalogueError(Exception):
    """The catalogue file is invalid; the message names the key and the problem."""


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Catalogue:
    """Texts by key and language. ``text(key, language, **values)`` formats one."""

    def __init__(self, texts: Mapping[str, Mapping[str, str]]) -> None:
        problems = [
            f"{key}: needs {', '.join(sorted(set(LANGUAGES) - set(langs)))}"
            for key, langs in texts.items()
            if not set(LANGUAGES) <= set(langs)
        ]
        if problems:
            raise CatalogueError("catalogue keys without every language: " + "; ".join(problems))
        self._texts = {key: dict(langs) for key, langs in texts.items()}

    def __contains__(self, key: object) -> bool:
        return key in self._texts

    def names(self) -> list[str]:
        return sorted(self._texts)

    def local(self, key: str) -> dict[str, str]:
        """Every language's template for ``key``."""
        return dict(self._texts[key])

    def text(self, key: str, language: str, **values: Any) -> str:
        """The text for ``key`` in ``language`` (English for a language we don't have),
        formatted with ``values``; a placeholder without a value is left as it is."""
        texts = self._texts[key]
        template = texts.get(language) or texts["en"]
        try:
            return template.format_map(_Missing(values))
        except (ValueError, IndexError, AttributeError):
            return template

    def all(self, key: str, **values: Any) -> dict[str, str]:
        """``key`` formatted in every language."""
        return {language: self.text(key, language, **values) for language in LANGUAGES}


def _read(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path.name}: cannot read YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogueError(f"{path.name}: expected a mapping of keys to texts")
    texts: dict[str, dict[str, str]] = {}
    for key, value in data.items():
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise CatalogueError(f"{path.name}: {key}: expected {{en: ..., cy: ...}}")
        texts[str(key)] = dict(value)
    return texts


def load_catalogue(overrides: Iterable[Path] = ()) -> Catalogue:
    """The shipped catalogue, with texts replaced from each override folder's
    ``catalogue.yaml`` (if it has one), in order."""
    texts = _read(CATALOGUE_FILE)
    for folder in overrides:
        path = folder / OVERRIDE_NAME
        if not path.is_file():
            continue
        for key, langs in _read(path).items():
            if key not in texts:
                raise CatalogueError(f"{path}: {key}: not a catalogue key")
            texts[key] = {**texts[key], **langs}
    return Catalogue(texts)
