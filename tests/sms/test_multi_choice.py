"""Multi-choice answers as people type them in an SMS: "1 3 5", "1,3,5", "1 and 3", the option
words (even words with "a" in them, Welsh for "and"), and a clear re-prompt otherwise."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.services import DOMAIN_FLOWS, registered_actions
from flows.engine import Engine
from flows.events import AnswerRecorded, ContactView, ConversationState, MessageCreated, UserInput
from flows.library import BUILTIN_DIR, load_library
from tests.support import sms

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
VOTE = """
id: vote
title: Vote
triggers: [VOTE]
start: pick
nodes:
  pick:
    type: multi
    text: {en: "Which projects?", cy: "Pa brosiectau?"}
    save_as: projects
    options:
      - {id: skate, text: {en: Build a skatepark, cy: Parc sglefrio}}
      - {id: trees, text: {en: Plant trees, cy: Plannu coed}}
      - {id: cafe, text: {en: A community cafe, cy: Caffi cymunedol}}
      - {id: bins, text: {en: More bins, cy: Mwy o finiau}}
      - {id: lights, text: {en: Street lights, cy: Goleuadau stryd}}
    next: done
  done:
    type: end
    text: "Thanks"
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    folder: Path = tmp_path_factory.mktemp("flows")
    (folder / "vote.yaml").write_text(VOTE, encoding="utf-8")
    folders = [BUILTIN_DIR, *DOMAIN_FLOWS, folder]
    return Engine(load_library(folders, known_actions=registered_actions()))


def _answer(engine: Engine, reply: str, language: str = "en") -> tuple[object, str]:
    contact = ContactView(consented=True, language=language)
    step = engine.step(ConversationState(), contact, UserInput("VOTE"), NOW)
    step = engine.step(step.state, contact, UserInput(reply), NOW)
    answers = [e.value for e in step.events if isinstance(e, AnswerRecorded)]
    texts = [sms(e, language)["text"] for e in step.events if isinstance(e, MessageCreated)]
    return (answers[0] if answers else None), "\n".join(texts)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1 3 5", ["skate", "cafe", "lights"]),
        ("1,3,5", ["skate", "cafe", "lights"]),
        ("1, 3, 5", ["skate", "cafe", "lights"]),
        ("1 and 3", ["skate", "cafe"]),
        ("1 a 3", ["skate", "cafe"]),
        ("2 ac 4", ["trees", "bins"]),
        ("build a skatepark, plant trees", ["skate", "trees"]),
        ("A community cafe and more bins", ["cafe", "bins"]),
        ("Street lights", ["lights"]),
    ],
)
def test_multi_choice_answers(engine: Engine, reply: str, expected: list[str]) -> None:
    answer, _ = _answer(engine, reply)
    assert answer == expected


def test_welsh_option_words(engine: Engine) -> None:
    answer, _ = _answer(engine, "plannu coed a mwy o finiau", "cy")
    assert answer == ["trees", "bins"]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("7", "Sorry, 7 isn't on the list. Please use numbers from 1 to 5."),
        ("1 9", "Sorry, 9 isn't on the list. Please use numbers from 1 to 5."),
        ("bananas", 'Sorry, I couldn\'t match "bananas" to an option.'),
        ("1 3 bananas", "Sorry, I couldn't match"),
    ],
)
def test_unclear_answer_gets_a_clear_reprompt(engine: Engine, reply: str, error: str) -> None:
    answer, text = _answer(engine, reply)
    assert answer is None
    assert text.startswith(error)
    assert "Which projects?\n\n1 Build a skatepark\n2 Plant trees" in text
    assert text.endswith("Reply with the numbers of your choices, e.g. 1 3")
