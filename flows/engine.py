"""The conversation engine: ``step(state, contact, input, now) -> Step(state, contact, events)``.

Pure: no I/O, no clock of its own, no exceptions for bad input (that gets a re-prompt event).
Actions are the one way out: the engine emits :class:`ActionRequested` and stops; the host runs
the action and calls :meth:`Engine.step` again with an :class:`ActionResult`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

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
    OptedIn,
    OptedOut,
    Step,
    UserInput,
)
from flows.library import FlowLibrary
from flows.model import (
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
)

MAX_TRANSITIONS = 100  # a flow that loops without waiting is cut off here
FORGET_QUESTION = "_:forget"
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
            self._answer_forget(run, inp)
            return

        state = run.state
        if state.flow_id and state.expires_at is not None and run.now >= state.expires_at:
            run.emit(ConversationExpired(state.flow_id))
            run.emit(MessageCreated(self._string(run, "expired")))
            run.state = ConversationState()
            self._start(run, "menu" if run.contact.consented else "onboarding")
            return

        if inp.payload is not None and inp.payload.startswith(FORGET_QUESTION + ":"):
            run.emit(MessageCreated(self._string(run, "question_closed")))
            return

        node = self._current_node(run)
        trigger = self.library.trigger(normalise(inp.text)) if inp.payload is None else None
        if node is None:
            self._idle(run, inp)
        elif trigger is not None and run.contact.consented and trigger.id != run.state.flow_id:
            self._start(run, trigger.id)  # a keyword starts its flow, even mid-question
        elif isinstance(node, ChoiceNode | MultiNode | InputNode):
            self._answer(run, node, inp)
        else:  # parked on an action that never resumed: start over rather than get stuck
            run.state = ConversationState()
            self._idle(run, inp)

    def _idle(self, run: _Run, inp: UserInput) -> None:
        if inp.payload is not None:
            run.emit(MessageCreated(self._string(run, "question_closed")))
            return
        flow = self.library.trigger(normalise(inp.text))
        if not run.contact.consented:
            self._start(run, "onboarding")
        elif flow is not None:
            self._start(run, flow.id)
        else:
            run.emit(MessageCreated(self._string(run, "not_understood")))

    def _command(self, run: _Run, command: Command, argument: str) -> None:
        if command is Command.STOP:
            run.emit(OptedOut())
            run.contact = run.contact.with_field("opted_out", True)
            run.emit(MessageCreated(self._string(run, "stop_confirm"), ignore_opt_out=True))
            run.state = ConversationState()
        elif command is Command.START:
            self._start(run, "menu" if run.contact.consented else "onboarding")
        elif command is Command.HELP:
            run.emit(MessageCreated(self._string(run, "help")))
            self._reprompt(run)
        elif command is Command.MENU:
            self._start(run, "menu" if run.contact.consented else "onboarding")
        elif command is Command.LANG:
            language = LANGUAGE_NAMES.get(argument)
            if language is None:
                self._start(run, "language")
                return
            self._set_contact(run, "language", language)
            run.emit(MessageCreated(self._string(run, "language_set")))
            self._reprompt(run)
        elif command is Command.FORGET:
            run.state = run.state.model_copy(update={"pending": "forget"})
            run.emit(
                MessageCreated(
                    self._string(run, "forget_ask"),
                    choices=(
                        Choice("yes", self._pick(run, {"en": "Yes, erase", "cy": "Ie, dileu"})),
                        Choice("no", self._pick(run, {"en": "No, keep", "cy": "Na, cadw"})),
                    ),
                    question=FORGET_QUESTION,
                )
            )

    def _opt_in(self, run: _Run) -> None:
        run.emit(OptedIn())
        run.contact = run.contact.with_field("opted_out", False)
        run.emit(MessageCreated(self._string(run, "start_confirm")))
        if not run.contact.consented:
            self._start(run, "onboarding")

    def _answer_forget(self, run: _Run, inp: UserInput) -> None:
        word = normalise(inp.text)
        if inp.payload is not None:
            word = "YES" if inp.payload == f"{FORGET_QUESTION}:yes" else "NO"
        run.state = run.state.model_copy(update={"pending": None})
        if word in YES_WORDS or word in ("1", "YES, ERASE", "IE, DILEU"):
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

    def _answer(self, run: _Run, node: ChoiceNode | MultiNode | InputNode, inp: UserInput) -> None:
        flow = self._flow(run)
        node_id = run.state.node_id
        assert node_id is not None
        question = f"{flow.id}:{node_id}"
        if inp.payload is not None and not inp.payload.startswith(question + ":"):
            run.emit(MessageCreated(self._string(run, "question_closed")))
            return
        payload = inp.payload[len(question) + 1 :] if inp.payload is not None else None

        if isinstance(node, ChoiceNode):
            option = self._match_option(run, node.options, payload or inp.text)
            if option is None:
                self._reprompt(run, self._string(run, "choice_error"))
                return
            self._save(run, node.save_as, option.saved_value)
            self._goto(run, option.next or node.next)
        elif isinstance(node, MultiNode):
            chosen, error = self._match_many(run, node, payload, inp.text)
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
        self, run: _Run, node: MultiNode, payload: str | None, text: str
    ) -> tuple[list[Option], str | None]:
        by_id = {o.id: o for o in node.options}
        chosen: list[Option] = []
        if payload is not None:
            ids = [p for p in payload.split(",") if p]
            if any(i not in by_id for i in ids):
                return [], self._string(run, "choice_error")
            chosen = [by_id[i] for i in ids]
        elif (whole := self._match_option(run, node.options, text)) is not None and not (
            _NUMBER.fullmatch(text.strip())
        ):
            chosen = [whole]  # a label that itself contains "and" or a comma
        else:
            pieces: list[str] = []
            for piece in (p for p in _MULTI_SPLIT.split(text.strip()) if p):
                whole = self._match_option(run, node.options, piece)
                if whole is None or piece.strip().isdigit():
                    pieces.extend(p for p in _WELSH_AND.split(piece) if p)
                else:
                    pieces.append(piece)
            for piece in pieces:
                option = self._match_option(run, node.options, piece)
                if option is not None and not _NUMBER.fullmatch(piece.strip()):
                    chosen.append(option)
                    continue
                tokens = piece.split()
                if tokens and all(_NUMBER.fullmatch(t) for t in tokens):
                    for token in tokens:
                        index = int(token) - 1
                        if not 0 <= index < len(node.options):
                            item = token
                            return [], self._string(run, "multi_error_unknown", item=item)
                        chosen.append(node.options[index])
                    continue
                return [], self._string(run, "multi_error_unknown", item=piece[:40])
        unique = list({o.id: o for o in chosen}.values())
        if len(unique) < node.min:
            return [], self._string(run, "multi_error_min", min=node.min)
        if node.max is not None and len(unique) > node.max:
            return [], self._string(run, "multi_error_max", max=node.max)
        if node.budget is not None:
            total = sum(o.cost or 0 for o in unique)
            if total > node.budget:
                return [], self._string(
                    run, "multi_error_budget", total=f"{total:,}", budget=f"{node.budget:,}"
                )
        return unique, None

    def _validate_input(self, run: _Run, node: InputNode, text: str) -> tuple[Any, str | None]:
        rule = node.validate_as
        value = text.strip()
        custom = self._pick(run, node.error) if node.error else None
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
        run.emit(AnswerRecorded(flow_id, node_id, key, value))

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

    def _start(self, run: _Run, flow_id: str) -> None:
        flow = self.library.flow(flow_id)
        run.emit(FlowStarted(flow.id))
        run.state = ConversationState(flow_id=flow.id, node_id=flow.start)
        self._run_from_current(run)

    def _goto(self, run: _Run, target: str | None) -> None:
        flow_id = run.state.flow_id
        assert flow_id is not None
        if target is None:
            run.emit(FlowEnded(flow_id))
            run.state = ConversationState()
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
                run.state = ConversationState()
                return
            if target.startswith("flow:"):
                run.emit(FlowEnded(flow.id))
                next_flow = self.library.flow(target.removeprefix("flow:"))
                run.emit(FlowStarted(next_flow.id))
                run.state = ConversationState(flow_id=next_flow.id, node_id=next_flow.start)
            else:
                run.state = run.state.model_copy(update={"node_id": target})
        run.state = ConversationState()  # MAX_TRANSITIONS without waiting: a looping flow

    def _reprompt(self, run: _Run, error: str | None = None) -> None:
        node = self._current_node(run)
        if isinstance(node, ChoiceNode | MultiNode | InputNode):
            assert run.state.node_id is not None
            question = self._question(run, self._flow(run), run.state.node_id, node)
            if error:
                question = MessageCreated(
                    f"{error}\n\n{question.text}",
                    choices=question.choices,
                    multi=question.multi,
                    min_choices=question.min_choices,
                    max_choices=question.max_choices,
                    budget=question.budget,
                    question=question.question,
                )
            run.emit(question)
        elif error:
            run.emit(MessageCreated(error))

    def _question(
        self, run: _Run, flow: Flow, node_id: str, node: ChoiceNode | MultiNode | InputNode
    ) -> MessageCreated:
        text = self._pick(run, node.text)
        if isinstance(node, InputNode):
            return MessageCreated(text)
        choices = tuple(Choice(o.id, self._pick(run, o.text), o.cost) for o in node.options)
        if isinstance(node, MultiNode):
            return MessageCreated(
                text,
                choices=choices,
                multi=True,
                min_choices=node.min,
                max_choices=node.max,
                budget=node.budget,
                question=f"{flow.id}:{node_id}",
            )
        return MessageCreated(text, choices=choices, question=f"{flow.id}:{node_id}")

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
            run.state = ConversationState()
            return None
        node = flow.nodes.get(state.node_id)
        if node is None:
            run.state = ConversationState()
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
        text = self.library.strings.get(key, {"en": key})
        template = text.get(run.contact.language) or text["en"]
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            return template



