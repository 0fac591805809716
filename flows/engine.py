"""The conversation engine: ``step(state, contact, input, now) -> Step(state, contact, events)``.

Pure: no I/O, no clock of its own, no exceptions for bad input (that gets a re-prompt event).
Actions are the one way out: the engine emits :class:`ActionRequested` and stops; the host runs
the action and calls :meth:`Engine.step` again with an :class:`ActionResult`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from flows.commands import LANGUAGE_NAMES, NO_WORDS, YES_WORDS, Command, normalise, parse_command
from flows.events import (
    ActionRequested,
    ActionResult,
    AnswerRecorded,
    Choice,
    ContactErased,
    ContactUpdated,
    ContactView,
    ConversationExpired,
    ConversationState,
    Event,
    FlowEnded,
    FlowStarted,
    Input,
    MessageCreated,
    Notice,
    OptedIn,
    OptedOut,
    SelectionChecked,
    Step,
    UserInput,
)
from flows.library import FlowLibrary
from flows.model import (
    MAX_OPTIONS_FROM_DATA,
    ActionNode,
    BranchNode,
    ChoiceNode,
    EndNode,
    Flow,
    InputNode,
    LocalText,
    MessageNode,
    MultiNode,
    Option,
    Validation,
)

MAX_TRANSITIONS = 100  # a flow that loops without waiting is cut off here
MAX_OFFERS = 5  # flows offered to a busy person and kept until they take them up
FORGET_QUESTION = "_:forget"
ONBOARDING, MENU, LANGUAGE = "onboarding", "menu", "language"
CONTACT_FIELDS = frozenset({"language", "postcode", "ward_code", "consent"})

_UK_POSTCODE = re.compile(
    r"^(GIR ?0AA|[A-PR-UWYZ](?:[0-9][0-9A-HJKPSTUW]?|[A-HK-Y][0-9][0-9ABEHMNPRVWXY]?) ?"
    r"[0-9][ABD-HJLNP-UW-Z]{2})$"
)
_NUMBER = re.compile(r"[0-9]{1,4}")  # ASCII digits only: "²".isdigit() is True
_MULTI_SPLIT = re.compile(r"\s*(?:,|;|&|\+|/|\band\b)\s*", re.IGNORECASE)
# Welsh "a"/"ac" (and) split only what is not an option's own words ("Build a skatepark").
_WELSH_AND = re.compile(r"\s+(?:a|ac)\s+", re.IGNORECASE)


def normalise_postcode(text: str) -> str | None:
    """``cf101ep`` -> ``CF10 1EP``; None when it is not a UK postcode."""
    compact = re.sub(r"\s+", "", text.upper())
    if not _UK_POSTCODE.match(compact) or len(compact) < 5:
        return None
    return f"{compact[:-3]} {compact[-3:]}"


class _SafeVars(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass
class _Run:
    """The mutable working copy of one step."""

    state: ConversationState
    contact: ContactView
    now: datetime
    events: list[Event] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        self.events.append(event)


class Engine:
    def __init__(self, library: FlowLibrary, *, timeout: timedelta = timedelta(hours=24)) -> None:
        self.library = library
        self.timeout = timeout

    # ---- entry point ------------------------------------------------------------------------

    def step(
        self, state: ConversationState, contact: ContactView, inp: Input, now: datetime
    ) -> Step:
        run = _Run(state=state, contact=contact, now=now)
        if isinstance(inp, ActionResult):
            self._resume_action(run, inp)
        else:
            self._handle_user(run, inp)
        return Step(state=run.state, contact=run.contact, events=tuple(run.events))

    def start(
        self,
        state: ConversationState,
        contact: ContactView,
        flow_id: str,
        now: datetime,
        variables: dict[str, Any] | None = None,
    ) -> Step:
        """The system starts ``flow_id`` for this person (a reminder, an invitation, an alert),
        with ``variables`` as its first flow variables.

        Nobody is hijacked mid-question: someone waiting on a question (or on the FORGET
        confirmation) is sent a short notice naming the flow's keyword instead, their
        question stays open, and the flow (with these variables) starts when they send the
        keyword. Someone idle, at the main menu (an ``interruptible`` flow), or whose last
        question timed out, starts the flow at once.
        Nothing happens for a person who has opted out or not consented, or who is already
        in this flow. Raises ``KeyError`` for an unknown flow."""
        flow = self.library.flow(flow_id)
        run = _Run(state=state, contact=contact, now=now)
        if contact.opted_out or not contact.consented or state.flow_id == flow.id:
            return Step(state=state, contact=contact, events=())
        if self._busy(run):
            offers = {k: v for k, v in state.offers.items() if k != flow.id}
            offers[flow.id] = dict(variables or {})
            offers = dict(list(offers.items())[-MAX_OFFERS:])
            run.state = state.model_copy(update={"offers": offers})
            keyword = self._pick(run, flow.keyword) if flow.keyword else flow.triggers[0]
            run.emit(
                MessageCreated(
                    self._string(
                        run, "flow_offer", title=self._pick(run, flow.title), keyword=keyword
                    )
                )
            )
        else:
            if state.flow_id is not None:  # a question that timed out: close it first
                run.emit(ConversationExpired(state.flow_id))
                run.state = self._idle_state(run)
            self._start(run, flow.id, variables or {})
        return Step(state=run.state, contact=run.contact, events=tuple(run.events))

    def _busy(self, run: _Run) -> bool:
        state = run.state
        if state.pending is not None:
            return True
        if state.flow_id is None or (state.expires_at is not None and run.now >= state.expires_at):
            return False
        flow = self.library.flows.get(state.flow_id)
        if flow is None or flow.interruptible:
            return False
        return isinstance(self._current_node(run), ChoiceNode | MultiNode | InputNode)

    # ---- user input -------------------------------------------------------------------------

    def _handle_user(self, run: _Run, inp: UserInput) -> None:
        parsed = parse_command(inp.text) if inp.payload is None else None
        command = parsed[0] if parsed else None

        if run.contact.opted_out:
            if command is Command.START:
                self._opt_in(run)
            elif command is Command.FORGET:
                # Erasure is a right even after STOP: done at once, in silence (no message may
                # go to an opted-out contact, so there is no question to confirm it with).
                run.emit(ContactErased())
                run.contact = ContactView()
                run.state = ConversationState()
            return  # an opted-out contact hears nothing else

        if command is not None and parsed is not None:
            self._command(run, command, parsed[1])
            return

        if run.state.pending == "forget":
            if inp.payload is not None and not inp.payload.startswith(FORGET_QUESTION + ":"):
                run.emit(Notice(self._string(run, "question_closed"), closed=True))
                return
            self._answer_forget(run, inp)
            return

        state = run.state
        if state.flow_id and state.expires_at is not None and run.now >= state.expires_at:
            run.emit(ConversationExpired(state.flow_id))
            run.state = self._idle_state(run)
            if inp.payload is not None:  # a tap on the expired question's buttons
                run.emit(Notice(self._string(run, "question_closed"), closed=True))
                return
            run.emit(MessageCreated(self._string(run, "expired")))
            self._start(run, MENU if run.contact.consented else ONBOARDING)
            return

        node = self._current_node(run)
        if inp.payload is not None:
            if isinstance(node, ChoiceNode | MultiNode):
                self._tap(run, node, inp)
            else:
                run.emit(Notice(self._string(run, "question_closed"), closed=True))
            return
        word = normalise(inp.text)
        trigger, given = self._trigger(word)
        if node is None:
            self._idle(run, inp)
        elif trigger is not None and given is None and trigger.id == run.state.flow_id:
            # HI or JOIN in the middle of joining: ask the question again, kindly (and in
            # Welsh if the word was Welsh and no language has been chosen yet)
            self._speak(run, trigger, word)
            self._reprompt(run)
        elif trigger is not None and run.contact.consented:
            # a keyword works mid-question
            self._start(run, self._welcome(run, trigger.id), given)
        elif isinstance(node, ChoiceNode | MultiNode | InputNode):
            self._answer(run, node, inp)
        else:  # parked on an action that never resumed: start over rather than get stuck
            run.state = self._idle_state(run)
            self._idle(run, inp)

    def _idle(self, run: _Run, inp: UserInput) -> None:
        word = normalise(inp.text)
        flow, given = self._trigger(word)
        if not run.contact.consented:
            if flow is not None:
                self._speak(run, flow, word)
            self._start(run, ONBOARDING)
        elif flow is not None:
            self._start(run, self._welcome(run, flow.id), given)
        else:
            run.emit(MessageCreated(self._string(run, "not_understood")))

    def _trigger(self, word: str) -> tuple[Flow | None, dict[str, Any] | None]:
        """The flow a message starts, and the variables its words give it: a trigger word
        alone, or one followed by an argument (``INTERESTED 12``, see ``Flow.argument``)."""
        flow = self.library.trigger(word)
        if flow is not None:
            return flow, None
        found = self.library.trigger_with_argument(word)
        if found is None:
            return None, None
        return found[0], dict(found[1])

    def _speak(self, run: _Run, flow: Flow, word: str) -> None:
        """Answer in the language a trigger word implies (SHWMAE: Welsh), for someone who has
        not joined (and so not chosen a language) yet."""
        language = flow.language_of(word)
        if language is not None and not run.contact.consented and language != run.contact.language:
            self._set_contact(run, "language", language)

    def _welcome(self, run: _Run, flow_id: str) -> str:
        """HI or JOIN from someone who has already joined opens the menu, not onboarding
        (which would ask for consent again)."""
        return MENU if flow_id == ONBOARDING and run.contact.consented else flow_id

    def _command(self, run: _Run, command: Command, argument: str) -> None:
        if command is Command.STOP:
            run.emit(OptedOut())
            run.contact = run.contact.with_field("opted_out", True)
            run.emit(MessageCreated(self._string(run, "stop_confirm"), ignore_opt_out=True))
            run.state = ConversationState()
        elif command is Command.START:
            self._start(run, MENU if run.contact.consented else ONBOARDING)
        elif command is Command.HELP:
            node = self._current_node(run)
            own = getattr(node, "help", None) if run.state.pending is None else None
            run.emit(MessageCreated(self._pick(run, own) if own else self._string(run, "help")))
            self._reprompt(run)
        elif command is Command.MENU:
            self._start(run, MENU if run.contact.consented else ONBOARDING)
        elif command is Command.LANG:
            language = LANGUAGE_NAMES.get(argument)
            if language is None:
                self._start(run, "language")
                return
            self._set_contact(run, "language", language)
            run.emit(MessageCreated(self._string(run, "language_set")))
            if run.state.flow_id == LANGUAGE:  # the question LANG xx has just answered
                self._start(run, MENU if run.contact.consented else ONBOARDING)
            else:
                self._reprompt(run)
        elif command is Command.FORGET:
            run.state = run.state.model_copy(update={"pending": "forget"})
            run.emit(
                MessageCreated(
                    self._string(run, "forget_ask"),
                    choices=(
                        Choice("yes", self._string(run, "forget_yes")),
                        Choice("no", self._string(run, "forget_no")),
                    ),
                    question=FORGET_QUESTION,
                )
            )

    def _opt_in(self, run: _Run) -> None:
        run.emit(OptedIn())
        run.contact = run.contact.with_field("opted_out", False)
        run.emit(MessageCreated(self._string(run, "start_confirm")))
        self._start(run, MENU if run.contact.consented else ONBOARDING)

    def _answer_forget(self, run: _Run, inp: UserInput) -> None:
        word = normalise(inp.text)
        if inp.payload is not None:
            run.emit(Notice())
            word = "YES" if inp.payload == f"{FORGET_QUESTION}:yes" else "NO"
        run.state = run.state.model_copy(update={"pending": None})
        yes_labels = {t.upper() for t in self.library.catalogue.all("forget_yes").values()}
        if word in YES_WORDS or word == "1" or word in yes_labels:
            run.emit(ContactErased())
            run.contact = ContactView(language=run.contact.language)
            run.emit(MessageCreated(self._string(run, "forget_done")))
            run.contact = ContactView()
            run.state = ConversationState()
            return
        # Anything but a clear yes keeps the data: erasing is never done on a guess.
        run.emit(MessageCreated(self._string(run, "forget_kept")))
        self._reprompt(run)

    # ---- answering a waiting node -----------------------------------------------------------

    def _tap(self, run: _Run, node: ChoiceNode | MultiNode, inp: UserInput) -> None:
        """A tapped button: an answer (a single choice, or Done on a pick-several question),
        or with ``check_only`` a selection still being made. Problems are answered as a
        :class:`Notice` beside the buttons; the question stays as it was."""
        assert inp.payload is not None
        question = self._question_id(run)
        if not inp.payload.startswith(question + ":"):
            run.emit(Notice(self._string(run, "question_closed"), closed=True))
            return
        answer = inp.payload[len(question) + 1 :]
        options = self._options(run, node)
        by_id = {o.id: o for o in options}
        ids = [i for i in answer.split(",") if i]
        if any(i not in by_id for i in ids) or (isinstance(node, ChoiceNode) and len(ids) != 1):
            run.emit(Notice(self._string(run, "question_closed"), closed=True))
            return
        chosen = list({i: by_id[i] for i in ids}.values())
        if isinstance(node, ChoiceNode):
            run.emit(Notice())
            self._save(run, node.save_as, chosen[0].saved_value)
            self._goto(run, chosen[0].next or node.next)
            return
        problem = self._selection_problem(run, node, chosen, final=not inp.check_only)
        if inp.check_only:
            run.emit(SelectionChecked(question, tuple(o.id for o in chosen), problem))
            return
        if problem is not None:
            run.emit(Notice(problem))
            return
        run.emit(Notice())
        self._save(run, node.save_as, [o.saved_value for o in chosen])
        self._goto(run, node.next)

    def _answer(self, run: _Run, node: ChoiceNode | MultiNode | InputNode, inp: UserInput) -> None:
        if isinstance(node, ChoiceNode):
            option = self._match_option(run, self._options(run, node), inp.text)
            if option is None and node.otherwise is not None:
                value, error = self._validate(run, node.otherwise.validate_as, None, inp.text)
                if error is None:  # not an option, but the input it also takes
                    self._save(run, node.otherwise.save_as, value)
                    self._goto(run, node.otherwise.next)
                    return
            if option is None:
                self._reprompt(run, self._string(run, "choice_error"))
                return
            self._save(run, node.save_as, option.saved_value)
            self._goto(run, option.next or node.next)
        elif isinstance(node, MultiNode):
            chosen, error = self._match_many(run, node, inp.text)
            if error is not None:
                self._reprompt(run, error)
                return
            self._save(run, node.save_as, [o.saved_value for o in chosen])
            self._goto(run, node.next)
        else:
            value, error = self._validate_input(run, node, inp.text)
            if error is not None:
                self._reprompt(run, error)
                return
            self._save(run, node.save_as, value)
            self._goto(run, node.next)

    def _match_option(self, run: _Run, options: list[Option], text: str) -> Option | None:
        word = normalise(text)
        if _NUMBER.fullmatch(word):
            index = int(word) - 1
            return options[index] if 0 <= index < len(options) else None
        for option in options:
            if word == option.id.upper() or word in (t.upper() for t in option.text.values()):
                return option
        if len(word) >= 3:
            starts = [
                o for o in options if any(t.upper().startswith(word) for t in o.text.values())
            ]
            if len(starts) == 1:
                return starts[0]
        if word in YES_WORDS or word in NO_WORDS:
            wanted = "yes" if word in YES_WORDS else "no"
            return next((o for o in options if o.id.lower() == wanted), None)
        return None

    def _match_many(
        self, run: _Run, node: MultiNode, text: str
    ) -> tuple[list[Option], str | None]:
        options = self._options(run, node)
        chosen: list[Option] = []
        if (whole := self._match_option(run, options, text)) is not None and not (
            _NUMBER.fullmatch(text.strip())
        ):
            chosen = [whole]  # a label that itself contains "and" or a comma
        else:
            pieces: list[str] = []
            for piece in (p for p in _MULTI_SPLIT.split(text.strip()) if p):
                whole = self._match_option(run, options, piece)
                if whole is None or piece.strip().isdigit():
                    pieces.extend(p for p in _WELSH_AND.split(piece) if p)
                else:
                    pieces.append(piece)
            for piece in pieces:
                option = self._match_option(run, options, piece)
                if option is not None and not _NUMBER.fullmatch(piece.strip()):
                    chosen.append(option)
                    continue
                tokens = piece.split()
                if tokens and all(_NUMBER.fullmatch(t) for t in tokens):
                    for token in tokens:
                        index = int(token) - 1
                        if not 0 <= index < len(options):
                            return [], self._string(
                                run, "multi_error_range", item=token, count=len(options)
                            )
                        chosen.append(options[index])
                    continue
                if normalise(piece) in YES_WORDS and not chosen and len(pieces) == 1:
                    # YES before choosing anything: say what to send first
                    return [], self._string(run, "multi_error_nothing")
                return [], self._string(run, "multi_error_unknown", item=piece[:40])
        unique = list({o.id: o for o in chosen}.values())
        return unique, self._selection_problem(run, node, unique, final=True)

    def _selection_problem(
        self, run: _Run, node: MultiNode, chosen: list[Option], *, final: bool
    ) -> str | None:
        """Why a pick-several selection can't stand (too many, over budget; and when it is
        the final answer, too few), or None. The one place these rules live: typed answers
        and every tap on every channel are checked here."""
        low, high, budget = self._limits(run, node)
        if high is not None and len(chosen) > high:
            return self._string(run, "multi_error_max", max=high)
        if budget is not None:
            total = sum(o.cost or 0 for o in chosen)
            if total > budget:
                return self._string(
                    run,
                    "multi_error_budget",
                    total=f"{total:,}",
                    budget=f"{budget:,}",
                    over=f"{total - budget:,}",
                )
        if final and len(chosen) < low:
            return self._string(run, "multi_error_min", min=low)
        return None

    def _limits(self, run: _Run, node: MultiNode) -> tuple[int, int | None, int | None]:
        """A pick-several question's min, max and budget, read from flow variables where
        the node names one."""
        low = self._number(run, node.min)
        return (
            0 if low is None else low,
            self._number(run, node.max),
            self._number(run, node.budget),
        )

    def _number(self, run: _Run, value: int | str | None) -> int | None:
        if value is None or isinstance(value, int):
            return value
        found = run.state.vars.get(value.removeprefix("vars."))
        if isinstance(found, bool) or not isinstance(found, int | float):
            return None
        return int(found)

    def _options(self, run: _Run, node: ChoiceNode | MultiNode) -> list[Option]:
        """A question's options: written in the flow, or built from a flow variable that an
        action filled (``options_from``); items that are not valid options are left out."""
        if node.options_from is None:
            return node.options
        raw = run.state.vars.get(node.options_from.removeprefix("vars."))
        if not isinstance(raw, list):
            return []
        options: list[Option] = []
        seen: set[str] = set()
        for item in raw[:MAX_OPTIONS_FROM_DATA]:
            try:
                option = Option.model_validate(item)
            except ValidationError:
                continue
            if option.id not in seen and option.next is None:
                seen.add(option.id)
                options.append(option)
        return options

    def _validate_input(self, run: _Run, node: InputNode, text: str) -> tuple[Any, str | None]:
        return self._validate(run, node.validate_as, node.error, text)

    def _validate(
        self, run: _Run, rule: Validation, error: LocalText | None, text: str
    ) -> tuple[Any, str | None]:
        value = text.strip()
        custom = self._pick(run, error) if error else None
        if not value:
            return None, custom or self._string(run, "input_error")
        if len(value) > rule.max_length:
            return None, custom or self._string(run, "too_long_error", max=rule.max_length)
        if rule.kind == "postcode":
            postcode = normalise_postcode(value)
            if postcode is None:
                return None, custom or self._string(run, "postcode_error")
            return postcode, None
        if rule.kind == "regex":
            assert rule.pattern is not None
            if re.fullmatch(rule.pattern, value) is None:
                return None, custom or self._string(run, "input_error")
            return value, None
        if rule.kind == "number":
            try:
                number = float(value.replace(",", "").lstrip("£"))
            except ValueError:
                return None, custom or self._string(run, "number_error")
            if number != number or number in (float("inf"), float("-inf")) or (
                (rule.min is not None and number < rule.min)
                or (rule.max is not None and number > rule.max)
            ):
                low = "" if rule.min is None else f"{rule.min:g}"
                high = "" if rule.max is None else f"{rule.max:g}"
                return None, custom or self._string(run, "number_range_error", min=low, max=high)
            return (int(number) if number.is_integer() else number), None
        return value, None

    def _save(self, run: _Run, key: str | None, value: Any) -> None:
        """Keep an answer: ``contact.<field>`` updates the contact, other names are flow vars
        and recorded answers. Without ``save_as`` (menus, navigation) nothing is kept."""
        if key is None:
            return
        if key.startswith("contact."):
            self._set_contact(run, key.removeprefix("contact."), value)
            return
        flow_id, node_id = run.state.flow_id, run.state.node_id
        assert flow_id is not None and node_id is not None
        run.state = run.state.model_copy(update={"vars": {**run.state.vars, key: value}})
        node = self._current_node(run)
        personal = isinstance(node, InputNode | ChoiceNode) and node.personal
        run.emit(AnswerRecorded(flow_id, node_id, key, value, personal))

    def _set_contact(self, run: _Run, name: str, value: Any) -> None:
        if name not in CONTACT_FIELDS:
            return
        run.contact = run.contact.with_field(name, value)
        run.emit(ContactUpdated(name, value))

    # ---- moving through nodes ---------------------------------------------------------------

    def _resume_action(self, run: _Run, result: ActionResult) -> None:
        node = self._current_node(run)
        if not isinstance(node, ActionNode):
            return  # nothing is waiting for this result
        variables = dict(run.state.vars)
        for key, value in result.values.items():
            if key.startswith("contact."):
                self._set_contact(run, key.removeprefix("contact."), value)
            else:
                variables[key] = value
        run.state = run.state.model_copy(update={"vars": variables})
        target = node.outcomes.get(result.outcome, node.next)
        if target is None and result.outcome not in node.outcomes:
            # An outcome the flow has no path for (usually "error"): say so, don't go silent.
            run.emit(MessageCreated(self._string(run, "action_failed")))
        self._goto(run, target)

    def _start(self, run: _Run, flow_id: str, variables: dict[str, Any] | None = None) -> None:
        """Start ``flow_id``; without ``variables``, with those of an offer the system made
        for it (see :meth:`start`), if any."""
        flow = self.library.flow(flow_id)
        offers = dict(run.state.offers)
        offered = offers.pop(flow.id, {})
        run.emit(FlowStarted(flow.id))
        run.state = ConversationState(
            flow_id=flow.id,
            node_id=flow.start,
            vars=dict(offered if variables is None else variables),
            offers=offers,
        )
        self._run_from_current(run)

    def _idle_state(self, run: _Run) -> ConversationState:
        """No flow, but the offers still open."""
        return ConversationState(offers=run.state.offers)

    def _goto(self, run: _Run, target: str | None) -> None:
        flow_id = run.state.flow_id
        assert flow_id is not None
        if target is None:
            run.emit(FlowEnded(flow_id))
            run.state = self._idle_state(run)
        elif target.startswith("flow:"):
            run.emit(FlowEnded(flow_id))
            self._start(run, target.removeprefix("flow:"))
        else:
            run.state = run.state.model_copy(update={"node_id": target})
            self._run_from_current(run)

    def _run_from_current(self, run: _Run) -> None:
        for _ in range(MAX_TRANSITIONS):
            flow = self._flow(run)
            node_id = run.state.node_id
            assert node_id is not None
            node = flow.nodes[node_id]
            if isinstance(node, MessageNode):
                run.emit(MessageCreated(self._pick(run, node.text)))
                target = node.next
            elif isinstance(node, ChoiceNode | MultiNode | InputNode):
                if not isinstance(node, InputNode) and not self._options(run, node):
                    # a list built from data that came back empty: say so, don't ask
                    run.emit(MessageCreated(self._string(run, "options_unavailable")))
                    run.emit(FlowEnded(flow.id))
                    run.state = self._idle_state(run)
                    return
                run.state = run.state.model_copy(
                    update={"expires_at": run.now + self.timeout}
                )
                run.emit(self._question(run, flow, node_id, node))
                return
            elif isinstance(node, BranchNode):
                value = self._lookup(run, node.switch)
                key = "" if value is None else str(value).lower()
                target = node.cases.get(key, node.default)
            elif isinstance(node, ActionNode):
                args = {k: self._format(run, v) for k, v in node.args.items()}
                run.emit(ActionRequested(node.action, args))
                return
            else:
                assert isinstance(node, EndNode)
                if node.text:
                    run.emit(MessageCreated(self._pick(run, node.text)))
                target = None
            if target is None:
                run.emit(FlowEnded(flow.id))
                run.state = self._idle_state(run)
                return
            if target.startswith("flow:"):
                run.emit(FlowEnded(flow.id))
                next_flow = self.library.flow(target.removeprefix("flow:"))
                run.emit(FlowStarted(next_flow.id))
                offers = {k: v for k, v in run.state.offers.items() if k != next_flow.id}
                run.state = ConversationState(
                    flow_id=next_flow.id,
                    node_id=next_flow.start,
                    vars=run.state.offers.get(next_flow.id, {}),
                    offers=offers,
                )
            else:
                run.state = run.state.model_copy(update={"node_id": target})
        run.state = self._idle_state(run)  # MAX_TRANSITIONS without waiting: a looping flow

    def _reprompt(self, run: _Run, error: str | None = None) -> None:
        node = self._current_node(run)
        if isinstance(node, ChoiceNode | MultiNode | InputNode):
            assert run.state.node_id is not None
            question = self._question(run, self._flow(run), run.state.node_id, node)
            if error:
                question = replace(question, text=f"{error}\n\n{question.text}")
            run.emit(question)
        elif error:
            run.emit(MessageCreated(error))

    def _question(
        self, run: _Run, flow: Flow, node_id: str, node: ChoiceNode | MultiNode | InputNode
    ) -> MessageCreated:
        text = self._pick(run, node.text)
        if isinstance(node, InputNode):
            return MessageCreated(text, request_phone=node.request_phone)
        choices = tuple(
            Choice(o.id, self._pick(run, o.text), o.cost) for o in self._options(run, node)
        )
        if isinstance(node, MultiNode):
            low, high, budget = self._limits(run, node)
            return MessageCreated(
                text,
                choices=choices,
                multi=True,
                min_choices=low,
                max_choices=high,
                budget=budget,
                ordered=node.ordered,
                question=f"{flow.id}:{node_id}",
            )
        return MessageCreated(text, choices=choices, question=f"{flow.id}:{node_id}")

    def _question_id(self, run: _Run) -> str:
        return f"{run.state.flow_id}:{run.state.node_id}"

    # ---- helpers ----------------------------------------------------------------------------

    def _flow(self, run: _Run) -> Flow:
        assert run.state.flow_id is not None
        return self.library.flow(run.state.flow_id)

    def _current_node(self, run: _Run) -> Any:
        state = run.state
        if state.flow_id is None or state.node_id is None:
            return None
        flow = self.library.flows.get(state.flow_id)
        if flow is None:  # a flow was removed since this conversation started
            run.state = self._idle_state(run)
            return None
        node = flow.nodes.get(state.node_id)
        if node is None:
            run.state = self._idle_state(run)
        return node

    def _lookup(self, run: _Run, path: str) -> Any:
        scope, _, name = path.partition(".")
        if scope == "contact":
            return getattr(run.contact, "consented" if name == "consent" else name, None)
        return run.state.vars.get(name)

    def _pick(self, run: _Run, text: LocalText) -> str:
        return self._format(run, text.get(run.contact.language) or text["en"])

    def _format(self, run: _Run, template: str) -> str:
        values = _SafeVars(
            language=run.contact.language,
            postcode=run.contact.postcode or "",
            ward_code=run.contact.ward_code or "",
        )
        values.update(run.state.vars)
        try:
            return template.format_map(values)
        except (ValueError, IndexError, AttributeError):
            return template

    def _string(self, run: _Run, key: str, **values: Any) -> str:
        return self.library.catalogue.text(key, run.contact.language, **values)



