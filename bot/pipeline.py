"""The inbound pipeline: one database transaction per inbound message.

1. take the in-process lock for the conversation (channel + address), FIFO, so a burst of
   messages from one person is handled one at a time and in arrival order;
2. store the message, unique on (channel, provider id): a redelivery stops here;
3. find or create the identity and contact and lock the identity row (``FOR UPDATE`` on
   PostgreSQL, so the lock holds across processes), then load the conversation state;
4. run the engine, running any actions it asks for inside the same transaction;
5. apply its events: contact changes, answers, outbox rows, conversation state; commit.

MORE (Welsh MWY) is answered before the engine when the latest message to the person was
paged (SMS): the next stored page is queued and the conversation state is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.dispatcher import ERASE_AFTER_SEND
from channels.base import Channel, InboundMessage
from channels.sms_text import is_more_request
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
    OptedIn,
    OptedOut,
    UserInput,
)
from storage import repositories as repo
from storage.models import Answer, Contact, Conversation, OutboundMessage

log = logging.getLogger(__name__)

MAX_ACTIONS_PER_MESSAGE = 20


@dataclass(frozen=True)
class ActionContext:
    session: AsyncSession
    contact: Contact
    args: Mapping[str, str]
    now: datetime


Action = Callable[[ActionContext], Awaitable[ActionResult]]


@dataclass(frozen=True)
class InboundResult:
    duplicate: bool
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
    ) -> None:
        self.sessions = sessions
        self.engine = engine
        self.channels = channels
        self.actions = actions
        self.clock = clock
        self.default_language = default_language
        self.max_text_chars = max_text_chars
        self.on_outbox = on_outbox
        self.locks = ConversationLocks()

    async def handle(self, message: InboundMessage) -> InboundResult:
        """Process one inbound message exactly once."""
        channel = self.channels[message.channel]
        key = (message.channel, message.address)
        async with self.locks.hold(key), self.sessions() as session, session.begin():
            result = await self._handle(session, channel, message)
        if result.outbox and self.on_outbox is not None:
            self.on_outbox()
        return result

    async def _handle(
        self, session: AsyncSession, channel: Channel, message: InboundMessage
    ) -> InboundResult:
        now = self.clock.now()
        inbound_id = await repo.record_inbound(
            session,
            channel=message.channel,
            provider_id=message.provider_id,
            address=message.address,
            text=message.text,
            raw=dict(message.raw),
            now=now,
        )
        if inbound_id is None:
            return InboundResult(duplicate=True)

        identity, contact = await repo.lock_identity(
            session,
            channel=message.channel,
            address=message.address,
            now=now,
            language=self.default_language,
        )
        assert identity.id is not None and contact.id is not None
        contact_id = contact.id
        await repo.link_inbound(session, inbound_id=inbound_id, contact_id=contact_id)
        if contact.opted_out_at is None and is_more_request(message.text):
            page = await self._next_page(session, message, contact_id, inbound_id, now)
            if page is not None:
                return InboundResult(duplicate=False, outbox=(page,))
        conversation = await repo.get_conversation(session, identity_id=identity.id)
        state = (
            ConversationState.model_validate(conversation.state)
            if conversation is not None
            else ConversationState()
        )

        text = message.text[: self.max_text_chars]
        inp: Input = UserInput(text=text, payload=message.payload)
        view = contact_view(contact)
        outbox: list[OutboundMessage] = []
        erased = False
        for _ in range(MAX_ACTIONS_PER_MESSAGE):
            step = self.engine.step(state, view, inp, now)
            state, view = step.state, step.contact
            for event in step.events:
                erased = (
                    await self._apply(
                        session, event, contact, channel, message, inbound_id, now, outbox
                    )
                    or erased
                )
            request = step.pending_action
            if request is None:
                break
            inp = await self._run_action(session, contact, request.name, request.args, now)

        if not erased:
            if conversation is None:
                conversation = Conversation(identity_id=identity.id, updated_at=now)
                session.add(conversation)
            conversation.flow_id = state.flow_id
            conversation.node_id = state.node_id
            conversation.expires_at = state.expires_at
            conversation.state = state.model_dump(mode="json")
            conversation.updated_at = now
        await session.flush()
        return InboundResult(duplicate=False, outbox=tuple(outbox))

    async def _next_page(
        self,
        session: AsyncSession,
        message: InboundMessage,
        contact_id: int,
        inbound_id: int,
        now: datetime,
    ) -> OutboundMessage | None:
        """MORE: a channel that pages long content (SMS) keeps the unsent pages in
        ``content["more"]`` of the message; queue the next one. None when nothing waits
        (then MORE goes to the engine like any other text). The engine never sees pages."""
        latest = await repo.paged_outbound(session, channel=message.channel, contact_id=contact_id)
        pages = latest.content.get("more") if latest is not None else None
        if latest is None or not isinstance(pages, list) or not pages:
            return None
        page, rest = pages[0], pages[1:]
        if not isinstance(page, dict):
            return None
        latest.content = {k: v for k, v in latest.content.items() if k != "more"}
        content: dict[str, Any] = {
            "text": str(page.get("text", "")),
            "choices": [],
            "segments": page.get("segments"),
        }
        if rest:
            content["more"] = rest
        row = repo.new_outbound(
            channel=message.channel,
            address=message.address,
            contact_id=contact_id,
            inbound_id=inbound_id,
            content=content,
            now=now,
        )
        session.add(row)
        await session.flush()
        return row

    async def _run_action(
        self,
        session: AsyncSession,
        contact: Contact,
        name: str,
        args: Mapping[str, str],
        now: datetime,
    ) -> ActionResult:
        action = self.actions.get(name)
        if action is None:
            log.error("flow asked for unregistered action %s", name)
            return ActionResult(outcome="error")
        try:
            async with session.begin_nested():
                return await action(ActionContext(session, contact, args, now))
        except Exception:
            log.exception("action %s failed", name)
            return ActionResult(outcome="error")

    async def _apply(
        self,
        session: AsyncSession,
        event: Event,
        contact: Contact,
        channel: Channel,
        message: InboundMessage,
        inbound_id: int,
        now: datetime,
        outbox: list[OutboundMessage],
    ) -> bool:
        """Apply one engine event; True when the contact was erased."""
        assert contact.id is not None
        if isinstance(event, MessageCreated):
            if contact.opted_out_at is not None and not event.ignore_opt_out:
                return False
            content = channel.render(event, contact.language)
            if contact.erased_at is not None:
                content[ERASE_AFTER_SEND] = True
            row = repo.new_outbound(
                channel=message.channel,
                address=message.address,
                contact_id=None if contact.erased_at is not None else contact.id,
                inbound_id=inbound_id,
                content=content,
                ignore_opt_out=event.ignore_opt_out,
                now=now,
            )
            session.add(row)
            outbox.append(row)
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
                    created_at=now,
                )
            )
        elif isinstance(event, OptedOut):
            await repo.mark_opted_out(
                session,
                contact_id=contact.id,
                actor="contact",
                detail={"channel": message.channel},
                now=now,
            )
        elif isinstance(event, OptedIn):
            contact.opted_out_at = None
            await repo.audit(
                session,
                actor="contact",
                action="opted_in",
                subject=f"contact:{contact.id}",
                detail={"channel": message.channel},
                now=now,
            )
        elif isinstance(event, ContactErased):
            await session.flush()
            await repo.erase_contact(session, contact_id=contact.id, now=now)
            await session.refresh(contact)
            await repo.audit(
                session, actor="contact", action="erased", subject=f"contact:{contact.id}", now=now
            )
            return True
        return False


def _update_contact(contact: Contact, name: str, value: Any, now: datetime) -> None:
    if name == "consent":
        contact.consent_at = (contact.consent_at or now) if value else None
    elif name == "language" and isinstance(value, str):
        contact.language = value
    elif name == "postcode":
        contact.postcode = None if value is None else str(value)
    elif name == "ward_code":
        contact.ward_code = None if value is None else str(value)
