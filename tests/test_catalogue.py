"""The text catalogue: every key in English and Welsh, and no English catalogue text ever sent
to someone who chose Welsh, on any channel."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from bot.services import DOMAIN_FLOWS
from flows.catalogue import CATALOGUE_FILE, LANGUAGES, Catalogue, CatalogueError, load_catalogue
from flows.library import BUILTIN_DIR, FlowError, load_library
from storage.models import OutboundMessage

API = "/simulator/api/messages"


def test_every_key_has_english_and_welsh() -> None:
    raw = yaml.safe_load(CATALOGUE_FILE.read_text(encoding="utf-8"))
    missing = [
        f"{key}: {language}"
        for key, texts in raw.items()
        for language in LANGUAGES
        if not isinstance(texts, dict) or not str(texts.get(language, "")).strip()
    ]
    assert not missing, f"catalogue keys without a text: {missing}"


def test_a_key_without_welsh_is_refused() -> None:
    with pytest.raises(CatalogueError, match="greeting: needs cy"):
        Catalogue({"greeting": {"en": "Hello"}})


def test_council_overrides_replace_known_keys_only(tmp_path: Path) -> None:
    (tmp_path / "catalogue.yaml").write_text('help: {en: "Call us on 029 2087 2087."}\n')
    catalogue = load_catalogue([tmp_path])
    assert catalogue.text("help", "en") == "Call us on 029 2087 2087."
    assert catalogue.text("help", "cy").startswith("Mae civicbot")  # the Welsh one stays
    (tmp_path / "catalogue.yaml").write_text('nonsense: {en: "x", cy: "y"}\n')
    with pytest.raises(FlowError, match="nonsense: not a catalogue key"):
        load_library([BUILTIN_DIR, *DOMAIN_FLOWS, tmp_path])


def _english_fragments(catalogue: Catalogue) -> dict[str, str]:
    """Pieces of each English text (between placeholders) long enough to recognise and not
    also in its Welsh text: seeing one in a Welsh contact's message means English leaked."""
    fragments: dict[str, str] = {}
    for key in catalogue.names():
        texts = catalogue.local(key)
        for piece in re.split(r"\{[^}]*\}", texts["en"]):
            piece = piece.strip(" .,:;()/\n")
            if len(piece) >= 4 and piece not in texts["cy"]:
                fragments[piece] = key
    return fragments


async def test_a_welsh_resident_never_gets_english_catalogue_text(
    client: httpx.AsyncClient, services: object
) -> None:
    """Welsh conversations on both simulated channels through paths that use many catalogue
    texts: errors, help, list hints, paging, toggles, FORGET, STOP."""
    from bot.services import Services

    assert isinstance(services, Services)
    script = [
        "SHWMAE", "1", "2", "CF10 1EP",  # join in Welsh
        "CYMORTH", "banana", "9", "", "x" * 600,  # help and errors at the menu
        "COD POST", "QQ1 1QQ", "CF10 1EP",  # a postcode error
        "IAITH", "7", "2",  # language question and an error
        "ANGHOFIO", "NA",  # forget: kept
        "STOPIO", "DECHRAU",  # stop and start again
    ]
    for channel in ("sms", "telegram"):
        for text in script:
            response = await client.post(
                API, json={"channel": channel, "address": f"cy-{channel}", "text": text}
            )
            assert response.status_code == 200, response.text
    fragments = _english_fragments(services.catalogue)
    async with services.sessions() as session:
        rows = (await session.execute(select(OutboundMessage))).scalars().all()
    shown = [
        str(row.content.get("text", ""))
        + "\n"
        + "\n".join(str(b.get("label")) for b in row.content.get("buttons", []))
        for row in rows
        if row.content.get("language") == "cy"  # sent to someone who had chosen Welsh
    ]
    assert len(shown) > 20
    seen = [
        (fragment, key, text)
        for text in shown
        for fragment, key in fragments.items()
        if re.search(rf"(?<!\w){re.escape(fragment)}(?!\w)", text)
    ]
    assert rows and not seen, seen[:5]
