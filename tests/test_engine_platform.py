"""The engine's platform features: questions built from data, rankings, taps checked by the
engine, flows the system starts, and HI from someone who has joined."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.services import DOMAIN_FLOWS
from flows.engine import Engine
from flows.events import (
    ActionRequested,
    ActionResult,
    AnswerRecorded,
    ContactUpdated,
    ContactView,
    ConversationState,
    FlowStarted,
    MessageCreated,
    Notice,
    SelectionChecked,
    Step,
    UserInput,
)
from flows.library import BUILTIN_DIR, FlowError, load_library

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

BALLOT = """
id: ballot
title: {en: Riverside fund, cy: Cronfa Glan-yr-afon}
triggers: [VOTE, PLEIDLAIS]
keyword: {en: VOTE, cy: PLEIDLAIS}
start: load
nodes:
  load:
    type: action
    action: load_projects
    outcomes: {ok: pick}
  pick:
    type: multi
    text: {en: "Pick projects", cy: "Dewiswch brosiectau"}
    options_from: vars.projects
    budget: vars.budget
    max: vars.most
    save_as: projects
    next: done
  done:
    type: end
    text: {en: "Thanks", cy: "Diolch"}
"""

RANK = """
id: rank
title: Priorities
triggers: [RANK]
start: pick
nodes:
  pick:
    type: multi
    text: Rank them
    ordered: true
    max: 3
    options:
      - {id: parks, text: Parks}
      - {id: youth, text: Youth clubs}
      - {id: care, text: Care at home}
      - {id: roads, text: Roads}
    save_as: ranking
    next: say
  say:
    type: input
    text: Anything else?
    personal: true
    save_as: note
"""


def projects(n: int = 40) -> list[dict[str, Any]]:
    return [
        {"id": str(k), "text": {"en": f"Project {k}", "cy": f"Prosiect {k}"}, "cost": 1000 * k}
        for k in range(1, n + 1)
    ]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    extra = tmp_path_factory.mktemp("flows")
    (extra / "ballot.yaml").write_text(BALLOT)
    (extra / "rank.yaml").write_text(RANK)
    return Engine(load_library([BUILTIN_DIR, *DOMAIN_FLOWS, extra]), timeout=timedelta(hours=1))


def run(engine: Engine, step: Step, values: dict[str, Any]) -> Step:
    """Resume any action the step asks for with ``values``."""
    events = list(step.events)
    while step.pending_action is not None:
        step = engine.step(step.state, step.contact, ActionResult("ok", values), NOW)
        events += step.events
    return Step(step.state, step.contact, tuple(events))


def say(
    engine: Engine, state: ConversationState, contact: ContactView, text: str, **kw: Any
) -> Step:
    return engine.step(state, contact, UserInput(text, **kw), NOW)


def texts(step: Step) -> list[str]:
    return [e.text for e in step.events if isinstance(e, MessageCreated)]


JOINED = ContactView(consented=True)
DATA = {"projects": projects(), "budget": 50_000, "most": 5}


def open_ballot(engine: Engine, contact: ContactView = JOINED) -> Step:
    return run(engine, say(engine, ConversationState(), contact, "VOTE"), DATA)


def test_options_budget_and_limits_come_from_data(engine: Engine) -> None:
    step = open_ballot(engine)
    [question] = [e for e in step.events if isinstance(e, MessageCreated)]
    assert len(question.choices) == 40 and question.choices[13].label == "Project 14"
    assert (question.budget, question.max_choices, question.multi) == (50_000, 5, True)
    welsh = open_ballot(engine, ContactView(consented=True, language="cy"))
    [cy] = [e for e in welsh.events if isinstance(e, MessageCreated)]
    assert cy.choices[13].label == "Prosiect 14" and cy.text == "Dewiswch brosiectau"


def test_an_answer_over_budget_or_out_of_range_says_why(engine: Engine) -> None:
    step = open_ballot(engine)
    over = say(engine, step.state, step.contact, "40 39")
    assert texts(over)[0].startswith("Those come to 79,000, which is 29,000 over the budget of")
    outside = say(engine, step.state, step.contact, "2 41")
    assert texts(outside)[0].startswith(
        "Sorry, 41 isn't on the list. Please use numbers from 1 to 40"
    )
    fine = say(engine, step.state, step.contact, "2 14 31")
    assert AnswerRecorded("ballot", "pick", "projects", ["2", "14", "31"]) in fine.events
    assert texts(fine) == ["Thanks"]


def test_a_list_that_comes_back_empty_is_said_not_asked(engine: Engine) -> None:
    step = run(engine, say(engine, ConversationState(), JOINED, "VOTE"), {"projects": []})
    assert texts(step) == [
        "Sorry, that list isn't available right now. Please try again later, or text MENU."
    ]
    assert step.state.flow_id is None
    broken = run(
        engine,
        say(engine, ConversationState(), JOINED, "VOTE"),
        {"projects": [{"id": "bad id!", "text": "x"}, {"text": "no id"}, "a string"]},
    )
    assert texts(broken)[0].startswith("Sorry, that list isn't available")


def test_taps_are_checked_by_the_engine(engine: Engine) -> None:
    step = open_ballot(engine)
    state = step.state
    toggle = say(engine, state, JOINED, "", payload="ballot:pick:2,14", check_only=True)
    assert toggle.events == (SelectionChecked("ballot:pick", ("2", "14"), None),)
    assert toggle.state == state  # a toggle changes nothing stored
    over = say(engine, state, JOINED, "", payload="ballot:pick:40,39", check_only=True)
    [checked] = over.events
    assert isinstance(checked, SelectionChecked) and checked.problem is not None
    assert "29,000 over the budget" in checked.problem
    too_many = say(engine, state, JOINED, "", payload="ballot:pick:1,2,3,4,5,6", check_only=True)
    assert "no more than 5" in str(too_many.events[0])
    empty_done = say(engine, state, JOINED, "", payload="ballot:pick:")
    assert empty_done.events == (Notice("Please choose at least 1."),)
    forged = say(engine, state, JOINED, "", payload="ballot:pick:2,999")
    assert forged.events == (Notice("That question has closed.", closed=True),)
    done = say(engine, state, JOINED, "", payload="ballot:pick:2,14")
    assert done.events[0] == Notice()
    assert AnswerRecorded("ballot", "pick", "projects", ["2", "14"]) in done.events


def test_a_ranking_keeps_the_order_given_and_free_text_is_personal(engine: Engine) -> None:
    step = say(engine, ConversationState(), JOINED, "RANK")
    [question] = [e for e in step.events if isinstance(e, MessageCreated)]
    assert question.ordered and question.max_choices == 3
    answered = say(engine, step.state, JOINED, "3 1 3")  # a repeat counts once
    assert AnswerRecorded("rank", "pick", "ranking", ["care", "parks"]) in answered.events
    noted = say(engine, answered.state, JOINED, "The park needs lights")
    assert AnswerRecorded("rank", "say", "note", "The park needs lights", True) in noted.events


def test_system_start_for_someone_idle_starts_the_flow_with_its_variables(
    engine: Engine,
) -> None:
    step = engine.start(ConversationState(), JOINED, "ballot", NOW, {"round": "r1"})
    assert FlowStarted("ballot") in step.events
    assert step.events[-1] == ActionRequested("load_projects", {})
    assert step.state.vars == {"round": "r1"}


def test_system_start_never_hijacks_a_question(engine: Engine) -> None:
    asked = say(engine, ConversationState(), JOINED, "RANK")
    welsh = ContactView(consented=True, language="cy")
    for contact, notice in (
        (
            JOINED,
            "Riverside fund: reply VOTE when you're ready. "
            "Your last question is still waiting for an answer.",
        ),
        (
            welsh,
            "Cronfa Glan-yr-afon: atebwch PLEIDLAIS pan fyddwch yn barod. "
            "Mae eich cwestiwn diwethaf yn dal i aros am ateb.",
        ),
    ):
        offered = engine.start(asked.state, contact, "ballot", NOW, {"round": "r1"})
        assert texts(offered) == [notice]
        assert (offered.state.flow_id, offered.state.node_id) == ("rank", "pick")
        assert offered.state.offers == {"ballot": {"round": "r1"}}
    # The question they were on still takes its answer; the offer waits for its keyword.
    answered = say(engine, offered.state, JOINED, "1 2")
    assert AnswerRecorded("rank", "pick", "ranking", ["parks", "youth"]) in answered.events
    assert answered.state.offers == {"ballot": {"round": "r1"}}
    taken = say(engine, answered.state, JOINED, "vote")
    assert FlowStarted("ballot") in taken.events
    assert taken.state.vars == {"round": "r1"} and taken.state.offers == {}


def test_system_start_for_someone_who_cannot_be_messaged_does_nothing(engine: Engine) -> None:
    for contact in (ContactView(), ContactView(consented=True, opted_out=True)):
        step = engine.start(ConversationState(), contact, "ballot", NOW)
        assert step.events == () and step.state == ConversationState()
    with pytest.raises(KeyError):
        engine.start(ConversationState(), JOINED, "no_such_flow", NOW)


def test_system_start_after_a_timed_out_question_starts_at_once(engine: Engine) -> None:
    asked = say(engine, ConversationState(), JOINED, "RANK")
    later = engine.start(asked.state, JOINED, "ballot", NOW + timedelta(hours=2))
    assert FlowStarted("ballot") in later.events


def test_hi_from_someone_who_has_joined_opens_the_menu(engine: Engine) -> None:
    """Issue #9, defect 1: HI asked for consent again, and "No thanks" then cleared it."""
    for word in ("HI", "join", "Shwmae", "HELO"):
        step = say(engine, ConversationState(), JOINED, word)
        assert texts(step)[0].startswith("What would you like to do?"), word
        mid = say(engine, say(engine, ConversationState(), JOINED, "RANK").state, JOINED, word)
        assert texts(mid)[0].startswith("What would you like to do?"), word
        assert not any(
            isinstance(e, AnswerRecorded | ContactUpdated)
            for e in mid.events
        )


def test_flow_keywords_must_be_triggers(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        BALLOT.replace("keyword: {en: VOTE, cy: PLEIDLAIS}", "keyword: {en: BALLOT}")
    )
    with pytest.raises(FlowError, match="keyword 'BALLOT' is not one of the triggers"):
        load_library(
            [BUILTIN_DIR, *DOMAIN_FLOWS, tmp_path], known_actions={"lookup_ward", "load_projects"}
        )


def test_options_and_options_from_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        RANK.replace("    ordered: true\n", "    ordered: true\n    options_from: vars.x\n")
    )
    with pytest.raises(FlowError, match="either options or options_from"):
        load_library([BUILTIN_DIR, *DOMAIN_FLOWS, tmp_path])
