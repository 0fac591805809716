"""The engine features tender alerts use: a trigger word with an argument (INTERESTED 12),
and a domain flow adding itself to the main menu."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.services import TENDER_FLOWS
from flows.engine import Engine
from flows.events import ActionRequested, ContactView, ConversationState, UserInput
from flows.library import BUILTIN_DIR, FlowError, load_library

NOW = datetime(2025, 1, 24, 9, 0, tzinfo=UTC)
JOINED = ContactView(consented=True)


def menu_labels(folders: list[Path]) -> list[str]:
    menu = load_library(folders).flow("menu")
    return [o.text["en"] for o in menu.nodes[menu.start].options]  # type: ignore[union-attr]


def test_a_domain_flow_adds_itself_to_the_menu() -> None:
    core = menu_labels([BUILTIN_DIR])
    assert menu_labels([BUILTIN_DIR, TENDER_FLOWS]) == [*core, "Tender alerts for organisations"]


def test_trigger_words_with_an_argument() -> None:
    engine = Engine(load_library([BUILTIN_DIR, TENDER_FLOWS]))
    for text, ref in [("INTERESTED 12", "12"), ("diddordeb 7", "7"), ("Interested  abc!", "ABC")]:
        step = engine.step(ConversationState(), JOINED, UserInput(text), NOW)
        assert step.state.flow_id == "tender_interested"
        assert step.events[-1] == ActionRequested("tender_interested", {"ref": ref})
    bare = engine.step(ConversationState(), JOINED, UserInput("INTERESTED"), NOW)
    assert bare.events[-1] == ActionRequested("tender_interested", {"ref": "{ref}"})
    # a trigger without an argument is not started by longer text
    other = engine.step(ConversationState(), JOINED, UserInput("BIDDING now please"), NOW)
    assert other.state.flow_id is None
    # mid-question, INTERESTED 12 still works
    asked = engine.step(ConversationState(), JOINED, UserInput("BIDDING"), NOW)
    mid = engine.step(asked.state, JOINED, UserInput("PARTNERS 3"), NOW)
    assert mid.events[-1] == ActionRequested("tender_partners", {"ref": "3"})


def test_menu_entries_are_checked(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "id: bad\ntitle: Bad\nmenu: {cy: Drwg}\nstart: x\nnodes: {x: {type: end}}\n"
    )
    with pytest.raises(FlowError, match="menu"):
        load_library([BUILTIN_DIR, tmp_path])
