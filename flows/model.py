"""Flow definitions: YAML files validated into these pydantic models.

A flow is a set of nodes keyed by id. Waiting nodes (``choice``, ``multi``, ``input``) send a
question and wait for the next inbound message; the others run straight through. ``next`` names a
node in the same flow, or ``flow:<id>`` to jump to another flow's start.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LocalText = dict[str, str]
"""Text per language code; ``en`` is required and is the fallback."""


def _local_text(value: Any) -> Any:
    if isinstance(value, str):
        return {"en": value}
    return value


def _require_english(value: LocalText) -> LocalText:
    if "en" not in value:
        raise ValueError("text needs an 'en' version (the fallback language)")
    return value


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("text", "error", "help", mode="before", check_fields=False)
    @classmethod
    def _coerce_text(cls, value: Any) -> Any:
        return _local_text(value)

    @field_validator("text", "error", "help", check_fields=False)
    @classmethod
    def _check_text(cls, value: LocalText | None) -> LocalText | None:
        return None if value is None else _require_english(value)


class Option(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    text: LocalText
    value: Any = None  # what is saved; the option id when not given
    cost: int | None = Field(default=None, ge=0)
    next: str | None = None

    _coerce = field_validator("text", mode="before")(lambda cls, v: _local_text(v))

    @field_validator("text")
    @classmethod
    def _check_text(cls, value: LocalText) -> LocalText:
        return _require_english(value)

    @property
    def saved_value(self) -> Any:
        return self.id if self.value is None else self.value


class MessageNode(_Node):
    type: Literal["message"]
    text: LocalText
    next: str | None = None


VAR_REF = r"^vars\.[a-z_][a-z0-9_]{0,63}$"
MAX_OPTIONS_FROM_DATA = 120  # a Telegram selection mask must fit its 64-byte button data


def _options_given(node: ChoiceNode | MultiNode) -> None:
    if bool(node.options) == (node.options_from is not None):
        raise ValueError("give either options or options_from (a flow variable), not both")


class Validation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["any", "regex", "number", "postcode"] = "any"
    pattern: str | None = None
    min: float | None = None
    max: float | None = None
    max_length: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Validation:
        if self.kind == "regex":
            if not self.pattern:
                raise ValueError("a regex validation needs a pattern")
            re.compile(self.pattern)
        return self


class Otherwise(BaseModel):
    """What a choice question also accepts besides its options: input that passes
    ``validate`` (a postcode where the options are "Try another postcode" / "Carry on")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    validate_as: Validation = Field(alias="validate")
    save_as: str | None = None
    next: str


class ChoiceNode(_Node):
    """Pick one option. ``options_from: vars.<name>`` takes the options from a flow variable
    an action filled (a list of ``{id, text, cost?, value?}``); such lists may be long, and
    channels page them. ``otherwise`` accepts valid free input too. ``personal: true`` marks
    an answer that is personal in itself (an "about you" answer): FORGET deletes it."""

    type: Literal["choice"]
    text: LocalText
    help: LocalText | None = None  # what HELP says at this question (else the general help)
    options: list[Option] = Field(default_factory=list, max_length=12)
    options_from: str | None = Field(default=None, pattern=VAR_REF)
    otherwise: Otherwise | None = None
    personal: bool = False
    save_as: str | None = None
    next: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ChoiceNode:
        _options_given(self)
        return self


class MultiNode(_Node):
    """Pick several options: between ``min`` and ``max`` of them, and if ``budget`` is set, with
    option costs adding up to no more than it (participatory budgeting). ``ordered`` keeps the
    order the person gave (a ranking, most important first). ``min``, ``max`` and ``budget``
    may name a flow variable (``vars.<name>``) instead of a number; options may come from one
    (``options_from``, as for :class:`ChoiceNode`)."""

    type: Literal["multi"]
    text: LocalText
    help: LocalText | None = None  # what HELP says at this question (else the general help)
    options: list[Option] = Field(default_factory=list, max_length=30)
    options_from: str | None = Field(default=None, pattern=VAR_REF)
    min: int | Annotated[str, Field(pattern=VAR_REF)] = 1
    max: int | Annotated[str, Field(pattern=VAR_REF)] | None = None
    budget: int | Annotated[str, Field(pattern=VAR_REF)] | None = None
    ordered: bool = False
    save_as: str | None = None
    next: str | None = None

    @model_validator(mode="after")
    def _check(self) -> MultiNode:
        _options_given(self)
        for name in ("min", "max", "budget"):
            value = getattr(self, name)
            if isinstance(value, int) and value < (1 if name == "max" else 0):
                raise ValueError(f"{name} must be at least {1 if name == 'max' else 0}")
        if isinstance(self.max, int) and isinstance(self.min, int) and self.max < self.min:
            raise ValueError("max must be at least min")
        if self.budget is not None and any(o.cost is None for o in self.options):
            raise ValueError("every option needs a cost when the question has a budget")
        return self


class InputNode(_Node):
    """Free input, validated. ``personal: true`` marks an answer that is personal in itself
    (free text, a date of birth): FORGET deletes it instead of keeping it detached."""

    type: Literal["input"]
    text: LocalText
    help: LocalText | None = None  # what HELP says at this question (else the general help)
    validate_as: Validation = Field(default_factory=Validation, alias="validate")
    error: LocalText | None = None
    personal: bool = False
    # On channels that can (Telegram), a button that shares the person's own phone number;
    # the answer is then that number.
    request_phone: bool = False
    save_as: str | None = None
    next: str | None = None


class BranchNode(_Node):
    """Go to ``cases[value]`` where value (``switch``) is ``vars.<name>`` or ``contact.<field>``."""

    type: Literal["branch"]
    switch: str = Field(pattern=r"^(vars|contact)\.[a-z_]+$")
    cases: dict[str, str]
    default: str | None = None


class ActionNode(_Node):
    """Call a registered action; continue at ``outcomes[outcome]`` or ``next``."""

    type: Literal["action"]
    action: str
    args: dict[str, str] = Field(default_factory=dict)
    outcomes: dict[str, str] = Field(default_factory=dict)
    next: str | None = None


class EndNode(_Node):
    type: Literal["end"]
    text: LocalText | None = None


Node = Annotated[
    MessageNode | ChoiceNode | MultiNode | InputNode | BranchNode | ActionNode | EndNode,
    Field(discriminator="type"),
]
WAITING = (ChoiceNode, MultiNode, InputNode)


class Flow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: LocalText
    triggers: list[str] = Field(default_factory=list)
    # The word to suggest in each language when the system offers this flow to someone who
    # is in the middle of another question (``VOTE`` / ``PLEIDLAIS``); one of the triggers.
    keyword: LocalText | None = None
    # A flow whose question may be set aside when the system starts another flow (the main
    # menu: navigation, not a question anyone is in the middle of answering).
    interruptible: bool = False
    # Trigger words that say which language the person speaks: someone who has not chosen
    # one yet is answered in it (YMUNO, HELO, SHWMAE start onboarding in Welsh).
    trigger_languages: dict[str, list[str]] = Field(default_factory=dict)
    # An option in the main menu that starts this flow (a domain's entry point), added after
    # the menu's own options when the flow is loaded; the menu itself never names domains.
    menu: LocalText | None = None
    # Words after a trigger word are kept in this flow variable ("INTERESTED 12" starts
    # the flow with ``vars.<argument>`` = "12"); without it only the bare word triggers.
    argument: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,63}$")
    start: str
    nodes: dict[str, Node]

    _coerce = field_validator("title", "keyword", "menu", mode="before")(
        lambda cls, v: _local_text(v)
    )

    @field_validator("menu")
    @classmethod
    def _menu_english(cls, value: LocalText | None) -> LocalText | None:
        return None if value is None else _require_english(value)

    @field_validator("triggers")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [t.strip().upper() for t in value]

    @field_validator("trigger_languages")
    @classmethod
    def _upper_words(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {lang: [w.strip().upper() for w in words] for lang, words in value.items()}

    def language_of(self, word: str) -> str | None:
        """The language a trigger word implies, if any."""
        return next((lang for lang, words in self.trigger_languages.items() if word in words), None)

    @model_validator(mode="after")
    def _check_references(self) -> Flow:
        for word in (self.keyword or {}).values():
            if word.strip().upper() not in self.triggers:
                raise ValueError(f"keyword {word!r} is not one of the triggers")
        for words in self.trigger_languages.values():
            for word in words:
                if word not in self.triggers:
                    raise ValueError(f"trigger_languages word {word!r} is not one of the triggers")
        if self.start not in self.nodes:
            raise ValueError(f"start node {self.start!r} is not defined")
        for node_id, node in self.nodes.items():
            for target in _targets(node):
                if not target.startswith("flow:") and target not in self.nodes:
                    raise ValueError(f"node {node_id!r} points at unknown node {target!r}")
        return self

    def flow_references(self) -> set[str]:
        return {
            t.removeprefix("flow:")
            for node in self.nodes.values()
            for t in _targets(node)
            if t.startswith("flow:")
        }


def _targets(node: BaseModel) -> list[str]:
    targets: list[str] = []
    nxt = getattr(node, "next", None)
    if nxt:
        targets.append(nxt)
    for option in getattr(node, "options", []):
        if option.next:
            targets.append(option.next)
    if isinstance(node, BranchNode):
        targets.extend(node.cases.values())
        if node.default:
            targets.append(node.default)
    if isinstance(node, ActionNode):
        targets.extend(node.outcomes.values())
    if isinstance(node, ChoiceNode) and node.otherwise is not None:
        targets.append(node.otherwise.next)
    return targets
