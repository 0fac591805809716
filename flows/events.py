"""What goes into the engine and what comes out: neutral, frozen, past-tense values."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class ContactView:
    """What the engine may know about the person it is talking to."""

    language: str = "en"
    postcode: str | None = None
    ward_code: str | None = None
    consented: bool = False
    opted_out: bool = False

    def with_field(self, name: str, value: Any) -> ContactView:
        if name == "consent":
            return replace(self, consented=bool(value))
        return replace(self, **{name: value})


class ConversationState(BaseModel):
    """Where a conversation is. Stored as JSON; ``flow_id`` None means idle."""

    model_config = ConfigDict(frozen=True)

    flow_id: str | None = None
    node_id: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    expires_at: datetime | None = None
    pending: str | None = None  # a global command awaiting confirmation ("forget")
    # Flows the system offered while this person was busy with another question (see
    # Engine.start): flow id -> the variables to start it with when they send its keyword.
    offers: dict[str, dict[str, Any]] = Field(default_factory=dict)


# ---- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserInput:
    """A message from the person. ``payload`` is a tapped button's answer,
    ``<flow>:<node>:<option id>[,<option id>...]``. ``check_only`` marks a tap that only
    changes a pick-several selection on screen (a toggle, a page turn): the engine checks
    the selection so far and answers with :class:`SelectionChecked`, nothing more."""

    text: str
    payload: str | None = None
    check_only: bool = False


@dataclass(frozen=True)
class ActionResult:
    """The host's answer to :class:`ActionRequested`. ``values`` go into the flow's vars; keys
    starting ``contact.`` also update the contact."""

    outcome: str = "ok"
    values: dict[str, Any] = field(default_factory=dict)


Input = UserInput | ActionResult


# ---- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    id: str
    label: str
    cost: int | None = None


@dataclass(frozen=True)
class MessageCreated:
    """Something to send. ``choices`` make it a question; ``multi`` a pick-several question."""

    text: str
    choices: tuple[Choice, ...] = ()
    multi: bool = False
    min_choices: int = 1
    max_choices: int | None = None
    budget: int | None = None
    ordered: bool = False  # the answer is a ranking: the order of the picks matters
    question: str | None = None  # "flow:node" the choices answer (buttons carry it)
    ignore_opt_out: bool = False  # the STOP confirmation still goes out
    # Offer a button that shares the person's own phone number (Telegram's request-contact
    # keyboard), where the channel has one.
    request_phone: bool = False


@dataclass(frozen=True)
class Notice:
    """A short answer to a tap, shown beside the buttons rather than as a new message (a
    Telegram callback answer): "That question has closed", or why a selection can't stand.
    Empty text just acknowledges the tap."""

    text: str = ""
    closed: bool = False  # the tap was on a question that is no longer waiting


@dataclass(frozen=True)
class SelectionChecked:
    """A pick-several selection in progress was checked (see ``UserInput.check_only``).
    ``problem`` is the reason it can't stand, or None: then the keyboard may show it."""

    question: str
    option_ids: tuple[str, ...]
    problem: str | None


@dataclass(frozen=True)
class AnswerRecorded:
    flow_id: str
    node_id: str
    key: str
    value: Any
    personal: bool = False  # FORGET deletes it rather than keeping it detached


@dataclass(frozen=True)
class ContactUpdated:
    field: str  # language | postcode | ward_code | consent
    value: Any


@dataclass(frozen=True)
class OptedOut:
    pass


@dataclass(frozen=True)
class OptedIn:
    pass


@dataclass(frozen=True)
class ContactErased:
    pass


@dataclass(frozen=True)
class ActionRequested:
    """The engine has paused; the host runs the action and resumes with :class:`ActionResult`."""

    name: str
    args: dict[str, str]


@dataclass(frozen=True)
class FlowStarted:
    flow_id: str


@dataclass(frozen=True)
class FlowEnded:
    flow_id: str


@dataclass(frozen=True)
class ConversationExpired:
    flow_id: str


Event = (
    MessageCreated
    | Notice
    | SelectionChecked
    | AnswerRecorded
    | ContactUpdated
    | OptedOut
    | OptedIn
    | ContactErased
    | ActionRequested
    | FlowStarted
    | FlowEnded
    | ConversationExpired
)


@dataclass(frozen=True)
class Step:
    state: ConversationState
    contact: ContactView
    events: tuple[Event, ...]

    @property
    def pending_action(self) -> ActionRequested | None:
        last = self.events[-1] if self.events else None
        return last if isinstance(last, ActionRequested) else None
