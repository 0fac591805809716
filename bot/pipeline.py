"""The unit of work: one database transaction per inbound message, or per flow the system
starts for someone.

For an inbound message:

1. take the in-process lock for the conversation (channel + address), FIFO, so a burst of
   messages from one person is handled one at a time and in arrival order; on SQLite, then
   queue (FIFO) for the process's one writer (see :class:`Pipeline`'s ``one_writer``);
2. lock the identity row of someone already known (``FOR UPDATE`` on PostgreSQL, so the
   lock holds across processes) and read their contact and conversation state after it;
3. store the message, unique on (channel, provider id): a redelivery stops here; for
   someone new, create the identity and contact now and lock them the same way;
4. if the channel pages long content (:class:`channels.base.Pager`) and this asks for the
   next page, queue it and stop (the engine never sees pages);
5. if it is a tap on a keyboard (:class:`channels.base.Taps`), read the keyboard's stored
   content and let the channel say what the tap means;
6. run the engine, running any actions it asks for inside the same transaction;
7. apply its events: contact changes, answers, outbox rows, conversation state; commit.

:meth:`Pipeline.start_flow` is the same unit of work for a flow the system starts (a
reminder, an invitation, an alert): same lock, same row lock, same events, one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.dispatcher import ERASE_AFTER_SEND
from channels.base import Channel, Content, InboundMessage, Pager, TapMeaning, Taps
from channels.logs import log_failure
from flows.engine import Engine
from flows.events import (
    ActionResult,
    AnswerRecorded,
    ContactErased,
    ContactUpdated,
    ContactView,
    ConversationState,
    Event,
    Input,
    MessageCreated,
    Notice,
    OptedIn,
    OptedOut,
    SelectionChecked,
    Step,
    UserInput,
)
from storage import repositories as repo
from storage.models import Answer, Contact, OutboundMessage, Priority

log = logging.getLogger(__name__)

MAX_ACTIONS_PER_MESSAGE = 20


@dataclass(frozen=True)
class ActionContext:
    session: AsyncSession
    contact: Contact
    args: Mapping[str, str]
    now: datetime
    channel: str | None = None  # the channel the person is writing on (None: system-started)


Action = Callable[[ActionContext], Awaitable[ActionResult]]
Claim = Callable[[AsyncSession, Contact], Awaitable[bool]]


@dataclass(frozen=True)
class TapAnswer:
    """What to show for a tap, beside the buttons: ``notice`` (None: just acknowledge it) and,
    after a toggle or a page turn, the keyboard's content drawn again (``redraw``)."""

    notice: str | None = None
    redraw: Content | None = None
    closed: bool = False  # the tap was on a question that is no longer waiting
    stale: bool = False  # the tap was on an out-of-date copy of the keyboard: nothing changed


@dataclass(frozen=True)
class InboundResult:
    duplicate: bool
    outbox: tuple[OutboundMessage, ...] = ()
    tap: TapAnswer | None = None  # set for a tap (see InboundMessage.tap)


@dataclass(frozen=True)
class StartResult:
    """What :meth:`Pipeline.start_flow` did: ``outbox`` rows queued (the flow's first messages,
    or a notice offering it to someone busy), nothing for someone who may not be messaged."""

    outbox: tuple[OutboundMessage, ...] = ()


class ConversationLocks:
    """One FIFO asyncio lock per conversation, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, refs = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, refs + 1)
        try:
            async with lock:
                yield
        finally:
            lock, refs = self._locks[key]
            if refs <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, refs - 1)

    def __len__(self) -> int:
        return len(self._locks)


def contact_view(contact: Contact) -> ContactView:
    return ContactView(
        language=contact.language,
        postcode=contact.postcode,
        ward_code=contact.ward_code,
        consented=contact.consent_at is not None,
        opted_out=contact.opted_out_at is not None,
    )


@dataclass
class _Work:
    """One unit of work's context: where replies go and what has been queued."""

    session: AsyncSession
    channel: Channel
    address: str
    contact: Contact
    now: datetime
    inbound_id: int | None
    priority: int
    outbox: list[OutboundMessage] = field(default_factory=list)
    unsaved: list[OutboundMessage] = field(default_factory=list)  # queued, not yet inserted
    tap: TapAnswer | None = None
    erased: bool = False


class Pipeline:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        engine: Engine,
        channels: Mapping[str, Channel],
        actions: Mapping[str, Action],
        clock: Clock,
        default_language: str = "en",
        max_text_chars: int = 2000,
        on_outbox: Callable[[], None] | None = None,
        one_writer: bool = False,
    ) -> None:
        """``one_writer`` (SQLite): transactions here take turns on an in-process FIFO lock
        before they begin. SQLite lets one transaction write at a time, and its own queue is
        a busy handler that retries after sleeps of up to 100 ms, in no order: with 16
        webhooks in flight, one could wait seconds while later ones went first."""
        self.sessions = sessions
        self.engine = engine
        self.channels = channels
        self.actions = actions
        self.clock = clock
        self.default_language = default_language
        self.max_text_chars = max_text_chars
        self.on_outbox = on_outbox
        self.locks = ConversationLocks()
        self._writer: AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if one_writer else nullcontext()
        )

    # ---- inbound ----------------------------------------------------------------------------

    async def handle(self, message: InboundMessage) -> InboundResult:
        """Process one inbound message exactly once."""
        channel = self.channels[message.channel]
        key = (message.channel, message.address)
        async with (
            self.locks.hold(key),
            self._writer,
            self.sessions() as session,
            session.begin(),
        ):
            result = await self._handle(session, channel, message)
        if result.outbox and self.on_outbox is not None:
            self.on_outbox()
        return result

    async def _handle(
        self, session: AsyncSession, channel: Channel, message: InboundMessage
    ) -> InboundResult:
        now = self.clock.now()
        # Someone we know (nearly every message): lock them, then store the message already
        # linked to them. Someone new: store the message first, so a redelivery stops before
        # anyone is created, then create them. Either way the lock is held before the state
        # is read, and a redelivery stores and changes nothing.
        known = await repo.lock_known(session, channel=message.channel, address=message.address)
        inbound_id = await repo.record_inbound(
            session,
            channel=message.channel,
            provider_id=message.provider_id,
            address=message.address,
            text=message.text,
            raw=dict(message.raw),
            now=now,
            contact_id=None if known is None else known.contact.id,
        )
        if inbound_id is None:
            return InboundResult(duplicate=True)
        if known is None:
            identity, contact = await repo.lock_identity(
                session,
                channel=message.channel,
                address=message.address,
                now=now,
                language=self.default_language,
            )
            assert identity.id is not None and contact.id is not None
            await repo.link_inbound(session, inbound_id=inbound_id, contact_id=contact.id)
            identity_id, display_name = identity.id, identity.display_name
            conversation_id, state = await self._load_state(session, identity_id)
        else:
            identity_id, display_name = known.identity_id, known.display_name
            contact, conversation_id = known.contact, known.conversation_id
            state = _state_from(known.state)
        assert contact.id is not None
        if message.name and display_name != message.name:
            # staff find people by it (admin web)
            await repo.set_display_name(session, identity_id=identity_id, name=message.name)
        work = _Work(
            session, channel, message.address, contact, now, inbound_id, Priority.REPLY
        )
        if (
            message.tap is None
            and contact.opted_out_at is None
            and isinstance(channel, Pager)
            and channel.wants_next_page(message.text)
            and await self._next_page(work, channel)
        ):
            return InboundResult(duplicate=False, outbox=tuple(work.outbox))

        keyboard: OutboundMessage | None = None
        meaning: TapMeaning | None = None
        if message.tap is not None:
            keyboard, meaning = await self._read_tap(work, message)
            # A tap whose keyboard we cannot read goes to the engine as it came: the engine
            # checks it against the question now waiting, and answers "that question has
            # closed" for anything else.
            inp: Input = UserInput(
                "",
                payload=meaning.payload if meaning is not None else message.tap.data,
                check_only=meaning.check_only if meaning is not None else False,
            )
            work.tap = TapAnswer()
        else:
            inp = UserInput(text=message.text[: self.max_text_chars], payload=message.payload)

        step = self.engine.step(state, contact_view(contact), inp, now)
        state = await self._run(work, step, keyboard, meaning)
        await self._save_state(work, identity_id, conversation_id, state)
        return InboundResult(duplicate=False, outbox=tuple(work.outbox), tap=work.tap)

    async def _next_page(self, work: _Work, pager: Pager) -> bool:
        """MORE: queue the next page of the latest paged message; False when none waits
        (then MORE goes to the engine like any other text)."""
        assert work.contact.id is not None
        latest = await repo.paged_outbound(
            work.session, channel=work.channel.name, contact_id=work.contact.id
        )
        paged = pager.next_page(latest.content) if latest is not None else None
        if latest is None or paged is None:
            return False
        latest.content, page = paged
        self._queue(work, page, ignore_opt_out=False)
        await self._insert_queued(work)
        await work.session.flush()
        return True

    async def _read_tap(
        self, work: _Work, message: InboundMessage
    ) -> tuple[OutboundMessage | None, TapMeaning | None]:
        assert message.tap is not None and work.contact.id is not None
        row = await repo.keyboard_message(
            work.session,
            channel=message.channel,
            contact_id=work.contact.id,
            reference=message.tap.message,
        )
        if row is None or not isinstance(work.channel, Taps):
            return row, None
        return row, work.channel.decode_tap(row.content, message.tap.data)

    # ---- system-started flows ---------------------------------------------------------------

    async def start_flow(
        self,
        *,
        channel: str,
        address: str,
        flow_id: str,
        variables: Mapping[str, Any] | None = None,
        priority: int = Priority.BULK,
        claim: Claim | None = None,
    ) -> StartResult:
        """Start ``flow_id`` for the person at (channel, address), as the system (see
        :meth:`flows.engine.Engine.start` for what happens to someone mid-question). The same
        unit of work as an inbound message: conversation lock, row lock, one transaction.
        Nothing happens for an address we do not know. ``claim`` runs first in the same
        transaction (a broadcast recording its recipient): if it returns False, nothing
        else happens."""
        chosen = self.channels[channel]
        async with (
            self.locks.hold((channel, address)),
            self._writer,
            self.sessions() as session,
            session.begin(),
        ):
            now = self.clock.now()
            found = await repo.lock_known(session, channel=channel, address=address)
            if found is None:
                return StartResult()
            contact = found.contact
            if contact.erased_at is not None:
                return StartResult()
            if claim is not None and not await claim(session, contact):
                return StartResult()
            work = _Work(session, chosen, address, contact, now, None, priority)
            state = _state_from(found.state)
            step = self.engine.start(
                state, contact_view(contact), flow_id, now, dict(variables or {})
            )
            state = await self._run(work, step, None, None)
            await self._save_state(work, found.identity_id, found.conversation_id, state)
        if work.outbox and self.on_outbox is not None:
            self.on_outbox()
        return StartResult(outbox=tuple(work.outbox))

    # ---- shared -----------------------------------------------------------------------------

    async def _load_state(
        self, session: AsyncSession, identity_id: int
    ) -> tuple[int | None, ConversationState]:
        conversation = await repo.get_conversation(session, identity_id=identity_id)
        if conversation is None:
            return None, ConversationState()
        return conversation.id, _state_from(conversation.state)

    async def _run(
        self,
        work: _Work,
        step: Step,
        keyboard: OutboundMessage | None,
        meaning: TapMeaning | None,
    ) -> ConversationState:
        """Apply a step's events, run the actions it asks for and resume; the final state."""
        for _ in range(MAX_ACTIONS_PER_MESSAGE):
            for event in step.events:
                await self._apply(work, event, keyboard, meaning)
            request = step.pending_action
            if request is None:
                break
            result = await self._run_action(work, request.name, request.args)
            step = self.engine.step(step.state, step.contact, result, work.now)
        return step.state

    async def _save_state(
        self,
        work: _Work,
        identity_id: int,
        conversation_id: int | None,
        state: ConversationState,
    ) -> None:
        await self._insert_queued(work)
        if not work.erased:
            await repo.save_conversation(
                work.session,
                identity_id=identity_id,
                conversation_id=conversation_id,
                flow_id=state.flow_id,
                node_id=state.node_id,
                expires_at=state.expires_at,
                state=state.model_dump(mode="json"),
                now=work.now,
            )
        await work.session.flush()  # what the flow changed on the contact, answers, audit

    async def _insert_queued(self, work: _Work) -> None:
        """Insert the outbox rows queued so far (one statement), before anything that could
        read them or roll back to a savepoint: an action, an erasure, the end."""
        if work.unsaved:
            await repo.insert_outbound(work.session, work.unsaved)
            work.unsaved.clear()

    async def _run_action(self, work: _Work, name: str, args: Mapping[str, str]) -> ActionResult:
        action = self.actions.get(name)
        if action is None:
            log.error("flow asked for unregistered action %s", name)
            return ActionResult(outcome="error")
        await self._insert_queued(work)
        try:
            async with work.session.begin_nested():
                return await action(
                    ActionContext(work.session, work.contact, args, work.now, work.channel.name)
                )
        except Exception as exc:
            log_failure(log, f"action {name} failed", exc)
            return ActionResult(outcome="error")

    def _queue(self, work: _Work, content: Content, *, ignore_opt_out: bool) -> OutboundMessage:
        contact = work.contact
        erased = contact.erased_at is not None
        if erased:  # the reply to FORGET: linked to nothing, and blanked once it has gone
            content[ERASE_AFTER_SEND] = True
        row = repo.new_outbound(
            channel=work.channel.name,
            address=work.address,
            contact_id=None if erased else contact.id,
            inbound_id=None if erased else work.inbound_id,
            content=content,
            priority=work.priority,
            ignore_opt_out=ignore_opt_out,
            now=work.now,
        )
        work.unsaved.append(row)
        work.outbox.append(row)
        return row

    async def _apply(
        self,
        work: _Work,
        event: Event,
        keyboard: OutboundMessage | None,
        meaning: TapMeaning | None,
    ) -> None:
        """Apply one engine event."""
        contact, session, now = work.contact, work.session, work.now
        assert contact.id is not None
        if isinstance(event, MessageCreated):
            if contact.opted_out_at is not None and not event.ignore_opt_out:
                return
            content = work.channel.render(event, contact.language)
            content.setdefault("language", contact.language)  # what the person was sent in
            self._queue(work, content, ignore_opt_out=event.ignore_opt_out)
        elif isinstance(event, Notice):
            work.tap = TapAnswer(notice=event.text or None, closed=event.closed)
        elif isinstance(event, SelectionChecked):
            if event.problem is not None:
                work.tap = TapAnswer(notice=event.problem)
            elif keyboard is not None and meaning is not None and isinstance(work.channel, Taps):
                keyboard.content = work.channel.redraw(keyboard.content, meaning)
                keyboard.updated_at = now
                notice = None
                if meaning.stale:
                    language = str(keyboard.content.get("language") or contact.language)
                    notice = self.engine.library.catalogue.text("tap_out_of_date", language)
                work.tap = TapAnswer(notice=notice, redraw=keyboard.content, stale=meaning.stale)
        elif isinstance(event, ContactUpdated):
            _update_contact(contact, event.field, event.value, now)
        elif isinstance(event, AnswerRecorded):
            session.add(
                Answer(
                    contact_id=contact.id,
                    flow_id=event.flow_id,
                    node_id=event.node_id,
                    key=event.key,
                    value=event.value,
                    personal=event.personal,
                    created_at=now,
                )
            )
        elif isinstance(event, OptedOut):
            await repo.mark_opted_out(
                session,
                contact_id=contact.id,
                actor="contact",
                detail={"channel": work.channel.name},
                now=now,
            )
        elif isinstance(event, OptedIn):
            contact.opted_out_at = None
            await repo.audit(
                session,
                actor="contact",
                action="opted_in",
                subject=f"contact:{contact.id}",
                detail={"channel": work.channel.name},
                now=now,
            )
        elif isinstance(event, ContactErased):
            await self._insert_queued(work)
            await session.flush()
            await repo.erase_contact(session, contact_id=contact.id, now=now)
            await session.refresh(contact)
            await repo.audit(
                session, actor="contact", action="erased", subject=f"contact:{contact.id}", now=now
            )
            work.erased = True


def _state_from(stored: dict[str, Any] | None) -> ConversationState:
    if stored is None:
        return ConversationState()
    return ConversationState.model_validate(stored)


def _update_contact(contact: Contact, name: str, value: Any, now: datetime) -> None:
    if name == "consent":
        contact.consent_at = (contact.consent_at or now) if value else None
    elif name == "language" and isinstance(value, str):
        contact.language = value
    elif name == "postcode":
        contact.postcode = None if value is None else str(value)
    elif name == "ward_code":
        contact.ward_code = None if value is None else str(value)
