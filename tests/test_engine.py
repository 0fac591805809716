"""The pure engine: flows, answers, re-prompts, global commands, expiry, with a fixed time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.services import DOMAIN_FLOWS
from flows.engine import Engine, normalise_postcode
from flows.events import (
    ActionRequested,
    ActionResult,
    AnswerRecorded,
    ContactErased,
    ContactUpdated,
    ContactView,
    ConversationExpired,
    ConversationState,
    MessageCreated,
    Notice,
    OptedIn,
    OptedOut,
    Step,
    UserInput,
)
from flows.library import BUILTIN_DIR, FlowError, load_library

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

SURVEY = """
id: survey
title: Survey
triggers: [SURVEY, ARFOLWG]
start: pick
nodes:
  pick:
    type: multi
    text: {en: "Pick projects", cy: "Dewiswch brosiectau"}
    min: 1
    max: 3
    budget: 100
    save_as: projects
    options:
      - {id: park, text: Park benches, cost: 40}
      - {id: lights, text: Street lights, cost: 50}
      - {id: bins, text: {en: More bins, cy: Mwy o finiau}, cost: 20}
      - {id: mural, text: Mural, cost: 70}
    next: age
  age:
    type: input
    text: How old are you?
    validate: {kind: number, min: 16, max: 120}
    save_as: age
    next: code
  code:
    type: input
    text: Your group code?
    validate: {kind: regex, pattern: "[A-Z]{3}[0-9]{2}"}
    error: "Codes look like ABC12."
    save_as: group
    next: where
  where:
    type: branch
    switch: contact.language
    cases: {cy: bye_cy}
    default: bye
  bye:
    type: end
    text: "Thanks, {age}!"
  bye_cy:
    type: end
    text: {en: unused, cy: "Diolch!"}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    extra = tmp_path_factory.mktemp("flows")
    (extra / "survey.yaml").write_text(SURVEY)
    return Engine(load_library([BUILTIN_DIR, *DOMAIN_FLOWS, extra]), timeout=timedelta(hours=1))


def texts(step: Step) -> list[str]:
    return [e.text for e in step.events if isinstance(e, MessageCreated)]


class Convo:
    """Drives the engine like the pipeline does, answering actions from a dict."""

    def __init__(self, engine: Engine, contact: ContactView | None = None) -> None:
        self.engine = engine
        self.state = ConversationState()
        self.contact = contact or ContactView()
        self.now = NOW
        self.events: list[object] = []

    def say(self, text: str, payload: str | None = None, **action_values: object) -> list[str]:
        step = self.engine.step(self.state, self.contact, UserInput(text, payload), self.now)
        out = self._absorb(step)
        while step.pending_action is not None:
            outcome = "ok" if action_values else "not_found"
            result = ActionResult(outcome, dict(action_values))
            step = self.engine.step(self.state, self.contact, result, self.now)
            out += self._absorb(step)
        return out

    def _absorb(self, step: Step) -> list[str]:
        self.state, self.contact = step.state, step.contact
        self.events += step.events
        return texts(step)


def test_onboarding_by_numbers_words_and_action(engine: Engine) -> None:
    c = Convo(engine)
    assert "Is that OK?" in c.say("hello")[0]
    assert "Which language" in c.say("Yes")[0]  # matches option id "yes"
    assert c.contact.consented
    assert "postcode" in c.say("english")[0]
    replies = c.say(
        "cf10 1ep",
        ward_name="Cathays",
        **{"contact.ward_code": "W1", "contact.postcode": "CF10 1EP"},
    )
    assert replies[0] == "Thanks. CF10 1EP is in Cathays ward."
    assert "What would you like to do?" in replies[1]
    assert c.contact.ward_code == "W1" and c.contact.postcode == "CF10 1EP"
    assert c.state.flow_id == "menu"
    requested = [e for e in c.events if isinstance(e, ActionRequested)]
    assert requested == [ActionRequested("lookup_ward", {"postcode": "CF10 1EP"})]


def test_unknown_postcode_offers_retry_or_skip(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True))
    c.say("POSTCODE")
    replies = c.say("SW1A 1AA")
    assert replies == ["Sorry, SW1A 1AA isn't in the area we cover yet."]
    assert c.state.node_id == "ward_unknown"
    assert "postcode" in c.say("1")[0]


def test_invalid_choice_reprompts_with_the_question(engine: Engine) -> None:
    c = Convo(engine)
    c.say("hi")
    for bad in ["7", "0", "maybe", "", "🙂", "x" * 10_000]:
        replies = c.say(bad)
        assert replies[0].startswith("Sorry, that isn't one of the options.")
        assert "Is that OK?" in replies[0]
        assert c.state.node_id == "consent"


def test_welsh_commands_and_text(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True, language="cy"))
    assert c.say("CYMORTH")[0].startswith("Mae civicbot")
    assert "Beth hoffech chi" in c.say("dewislen")[0]
    assert c.say("STOPIO") == [
        "Rydych chi wedi dad-danysgrifio o civicbot ac ni chewch ragor o negeseuon. "
        "Anfonwch DECHRAU i ymuno eto."
    ]
    assert c.contact.opted_out
    assert c.say("helo") == []
    assert c.say("DECHRAU")[0].startswith("Croeso nôl")
    assert not c.contact.opted_out


@pytest.mark.parametrize(
    "word", ["STOP", "stopall", "Unsubscribe", "CANCEL", "end.", "QUIT", "/stop"]
)
def test_every_stop_word_opts_out_and_confirms_once(engine: Engine, word: str) -> None:
    c = Convo(engine, ContactView(consented=True))
    step = engine.step(c.state, c.contact, UserInput(word), NOW)
    assert OptedOut() in step.events
    confirmations = [e for e in step.events if isinstance(e, MessageCreated)]
    assert len(confirmations) == 1 and confirmations[0].ignore_opt_out
    c._absorb(step)
    again = engine.step(c.state, c.contact, UserInput(word), NOW)
    assert again.events == ()


def test_start_opts_back_in(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True, opted_out=True))
    step = engine.step(c.state, c.contact, UserInput("UNSTOP"), NOW)
    assert OptedIn() in step.events and not step.contact.opted_out


def test_not_a_command_when_more_words_follow(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True))
    c.say("stop the roadworks on my street")
    assert not c.contact.opted_out


def test_help_repeats_the_current_question(engine: Engine) -> None:
    c = Convo(engine)
    c.say("hi")
    replies = c.say("help")
    assert replies[0].startswith("civicbot helps you")
    assert "Is that OK?" in replies[1]
    assert c.state.node_id == "consent"


def test_lang_with_and_without_argument(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True))
    c.say("MENU")
    replies = c.say("LANG cymraeg")
    assert replies[0] == "Iawn, byddaf yn defnyddio Cymraeg."
    assert "Beth hoffech chi" in replies[1]  # the same question, now in Welsh
    assert ContactUpdated("language", "cy") in c.events
    assert "Pa iaith" in c.say("IAITH")[0]
    assert c.say("1")[0] == "OK, I'll use English."
    assert c.contact.language == "en"


def test_forget_needs_a_clear_yes(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True, postcode="CF10 1EP", ward_code="W1"))
    c.say("MENU")
    assert "Reply YES to erase" in c.say("FORGET")[0]
    replies = c.say("what?")
    assert replies[0] == "OK, nothing has been erased."
    assert "What would you like to do?" in replies[1]
    assert not any(isinstance(e, ContactErased) for e in c.events)
    c.say("anghofio")
    assert c.say("ie") == [
        "Done: your personal data has been erased. Text JOIN if you'd like to take part again."
    ]
    assert ContactErased() in c.events
    assert c.contact == ContactView() and c.state == ConversationState()


def test_multi_choice_formats_limits_and_budget(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True))
    assert "Pick projects" in c.say("survey")[0]
    assert c.say("1 2 3")[0].startswith(
        "Those come to 110, which is 10 over the budget of 100."
    )
    assert c.say("9")[0].startswith("Sorry, 9 isn't on the list. Please use numbers from 1 to 4.")
    assert c.say("banana")[0].startswith('Sorry, I couldn\'t match "banana"')
    assert c.say("")[0].startswith("Please choose at least 1.")
    assert "How old" in c.say("1 and 3")[0]
    assert AnswerRecorded("survey", "pick", "projects", ["park", "bins"]) in c.events


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1 3", ["park", "bins"]),
        ("1,3", ["park", "bins"]),
        ("3, 1", ["bins", "park"]),
        ("1 and 3", ["park", "bins"]),
        ("Park benches, more bins", ["park", "bins"]),
        ("park benches and 3", ["park", "bins"]),
        ("3 3 3", ["bins"]),
    ],
)
def test_multi_choice_answer_forms(engine: Engine, reply: str, expected: list[str]) -> None:
    c = Convo(engine, ContactView(consented=True))
    c.say("SURVEY")
    c.say(reply)
    assert AnswerRecorded("survey", "pick", "projects", expected) in c.events


def test_multi_choice_by_button_payload_and_stale_buttons(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True))
    c.say("survey")
    assert c.say("", payload="survey:pick:park,bins")[0] == "How old are you?"
    assert Notice() in c.events  # the tap itself is acknowledged
    assert c.say("", payload="survey:pick:park") == []
    assert c.events[-1] == Notice("That question has closed.", closed=True)  # by the buttons
    assert c.state.node_id == "age"


def test_input_validation_number_regex_and_branch(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True))
    c.say("survey")
    c.say("2")
    assert c.say("twelve")[0].startswith("Please reply with a number.")
    assert c.say("12")[0].startswith("Please reply with a number from 16 to 120.")
    assert c.say("nan")[0].startswith("Please reply with a number")
    assert "group code" in c.say("34")[0]
    assert c.say("abc12")[0].startswith("Codes look like ABC12.")
    assert c.say("ABC12") == ["Thanks, 34!"]
    assert c.state == ConversationState()


def test_branch_on_contact_language(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True, language="cy"))
    assert "Dewiswch" in c.say("arfolwg")[0]
    c.say("Mwy o finiau")
    c.say("40")
    assert c.say("XYZ99") == ["Diolch!"]


def test_waiting_conversation_expires(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True))
    c.say("survey")
    c.now = NOW + timedelta(hours=1, seconds=1)
    replies = c.say("1")
    assert replies[0] == "Our last conversation timed out, so let's start again."
    assert "What would you like to do?" in replies[1]
    assert ConversationExpired("survey") in c.events


def test_idle_contact_gets_a_helpful_answer(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True))
    assert c.say("what is this")[0].startswith("Sorry, I didn't understand that.")


def test_unconsented_contact_is_always_onboarded(engine: Engine) -> None:
    c = Convo(engine)
    assert "Is that OK?" in c.say("survey")[0]
    assert c.say("2") == [
        "No problem. We won't use your details. Text JOIN if you change your mind."
    ]
    assert ContactUpdated("consent", False) in c.events


@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=80)))
@settings(max_examples=300, deadline=None)
def test_any_input_anywhere_never_raises(text: str, payload: str | None) -> None:
    engine = Engine(load_library([BUILTIN_DIR, *DOMAIN_FLOWS]))
    state = ConversationState(flow_id="onboarding", node_id="consent")
    for contact in (ContactView(), ContactView(consented=True, opted_out=True)):
        step = engine.step(state, contact, UserInput(text, payload), NOW)
        assert isinstance(step.state, ConversationState)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cf101ep", "CF10 1EP"),
        (" sw1a 1aa ", "SW1A 1AA"),
        ("EC1A1BB", "EC1A 1BB"),
        ("M1 1AE", "M1 1AE"),
        ("12345", None),
        ("CF10", None),
        ("", None),
        ("QQ1 1QQ", None),
    ],
)
def test_postcode_normalisation(raw: str, expected: str | None) -> None:
    assert normalise_postcode(raw) == expected


def test_flow_files_are_validated(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "id: bad\ntitle: Bad\nstart: a\nnodes:\n  a: {type: message, text: hi, next: nowhere}\n"
    )
    with pytest.raises(FlowError, match="bad.yaml: .*unknown node 'nowhere'"):
        load_library([BUILTIN_DIR, *DOMAIN_FLOWS, tmp_path])
    (tmp_path / "bad.yaml").write_text("id: [unclosed\n")
    with pytest.raises(FlowError, match="cannot read YAML"):
        load_library([BUILTIN_DIR, *DOMAIN_FLOWS, tmp_path])


def test_unregistered_actions_are_refused() -> None:
    with pytest.raises(FlowError, match="lookup_ward"):
        load_library([BUILTIN_DIR, *DOMAIN_FLOWS], known_actions=set())


def test_forget_after_stop_erases_in_silence(engine: Engine) -> None:
    c = Convo(engine, ContactView(consented=True, postcode="CF10 1EP", opted_out=True))
    step = engine.step(c.state, c.contact, UserInput("FORGET"), NOW)
    assert step.events == (ContactErased(),)
    assert step.contact == ContactView()
