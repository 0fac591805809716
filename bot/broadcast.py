"""The one broadcast path (:class:`flows.broadcasts.Broadcaster`): every proactive message
(announcements, reminders, alerts, group posts, poll results) goes through here.

- The audience is read from the database: contacts who have consented (unless a domain says
  otherwise), have not opted out or been erased, in the segment's wards, channels and
  languages and the domain's own condition; each contact is reached on one identity (their
  newest on an allowed channel). Telegram groups are chosen by ward or chat id.
- Each recipient is recorded in ``broadcast_recipients`` (unique per broadcast and contact or
  group) in the same transaction as its outbox row, so a broadcast reaches a recipient at most
  once, however often it is sent or if a send is interrupted and repeated.
- A message is rendered by the recipient's channel in their language (English when the
  broadcast has no text in theirs), queued at bulk priority; the dispatcher re-checks opt-outs
  just before each send. A flow is started through the pipeline's unit of work
  (:meth:`bot.pipeline.Pipeline.start_flow`), which never hijacks someone mid-question.
- Group posts carry the default language first and the other language after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlmodel import col

from bot.clock import Clock
from bot.pipeline import Pipeline
from channels.base import Channel, Content
from flows.broadcasts import (
    CHANNEL_GROUPS,
    Audience,
    AudienceLine,
    BroadcastError,
    BroadcastSpec,
    Groups,
    Segment,
    Sent,
)
from flows.catalogue import LANGUAGES
from flows.engine import Engine
from flows.events import ContactView, ConversationState, MessageCreated
from storage import broadcasts as store
from storage import groups as group_store
from storage import repositories as repo
from storage.broadcasts import Broadcast, BroadcastRecipient, BroadcastStatus
from storage.erasure import table_of
from storage.models import ChannelIdentity, Contact, OutboundMessage, Priority

log = logging.getLogger(__name__)

BATCH = 500
GROUP_CHANNEL = "telegram"
SMS = "sms"


@dataclass(frozen=True)
class Recipient:
    contact_id: int
    language: str
    channel: str
    address: str


class BroadcastService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        pipeline: Pipeline,
        engine: Engine,
        channels: Mapping[str, Channel],
        clock: Clock,
        default_language: str,
        sms_segment_price: Decimal,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.pipeline = pipeline
        self.engine = engine
        self.channels = channels
        self.clock = clock
        self.default_language = default_language
        self.sms_segment_price = sms_segment_price
        self.on_outbox = on_outbox

    # ---- checks and audience ------------------------------------------------------------------

    def _check(self, spec: BroadcastSpec) -> None:
        if bool(spec.text) == (spec.flow_id is not None):
            raise BroadcastError("a broadcast sends either a text or a flow, not both")
        if spec.text and not spec.text.get("en", "").strip():
            raise BroadcastError("the English text is empty (it is the fallback language)")
        unknown = set(spec.text) - set(LANGUAGES)
        if unknown:
            raise BroadcastError(f"unknown language(s) {sorted(unknown)}; use en and cy")
        if spec.flow_id is not None:
            flow = self.engine.library.flows.get(spec.flow_id)
            if flow is None:
                raise BroadcastError(f"no flow {spec.flow_id!r}")
            if not flow.triggers:
                raise BroadcastError(
                    f"flow {spec.flow_id!r} has no keyword, so it can't be offered to someone "
                    "in the middle of another question; give it triggers"
                )
            if spec.groups is not None:
                raise BroadcastError("groups get messages, not flows")
        if spec.segment is None and spec.groups is None:
            raise BroadcastError("say who gets it: a segment of contacts, or groups")
        if spec.send_at is not None and spec.segment is not None and spec.segment.where is not None:
            raise BroadcastError("a broadcast with a domain condition can't be scheduled")
        for name in spec.segment.channels if spec.segment else ():
            if name not in CHANNEL_GROUPS:
                raise BroadcastError(f"unknown channel {name!r}; use sms or telegram")

    def _allowed_channels(self, segment: Segment) -> list[str]:
        wanted = segment.channels or tuple(CHANNEL_GROUPS)
        names = [name for group in wanted for name in CHANNEL_GROUPS[group]]
        return [name for name in names if name in self.channels]

    def _contact_filter(self, segment: Segment) -> list[Any]:
        conditions: list[Any] = [
            col(Contact.opted_out_at).is_(None),
            col(Contact.erased_at).is_(None),
        ]
        if segment.consented_only:
            conditions.append(col(Contact.consent_at).is_not(None))
        if segment.wards:
            conditions.append(col(Contact.ward_code).in_(segment.wards))
        if segment.languages:
            conditions.append(col(Contact.language).in_(segment.languages))
        if segment.where is not None:
            conditions.append(segment.where)
        return conditions

    async def _recipients(
        self, session: AsyncSession, segment: Segment, *, after: int, limit: int
    ) -> list[Recipient]:
        """The next ``limit`` contacts after contact id ``after``, each on one identity."""
        allowed = self._allowed_channels(segment)
        if not allowed:
            return []
        has_identity = (
            select(col(ChannelIdentity.contact_id))
            .where(col(ChannelIdentity.channel).in_(allowed))
            .scalar_subquery()
        )
        ids_query = (
            select(col(Contact.id), col(Contact.language))
            .where(*self._contact_filter(segment), col(Contact.id) > after)
            .where(col(Contact.id).in_(has_identity))
            .order_by(col(Contact.id))
            .limit(limit)
        )
        rows = (await session.execute(ids_query)).all()
        contacts = {int(i or 0): str(lang) for i, lang in rows}
        if not contacts:
            return []
        identities = (
            select(
                col(ChannelIdentity.contact_id),
                col(ChannelIdentity.channel),
                col(ChannelIdentity.address),
            )
            .where(
                col(ChannelIdentity.contact_id).in_(list(contacts)),
                col(ChannelIdentity.channel).in_(allowed),
            )
            .order_by(col(ChannelIdentity.contact_id), col(ChannelIdentity.id).desc())
        )
        chosen: dict[int, Recipient] = {}
        for contact_id, channel, address in (await session.execute(identities)).all():
            if contact_id not in chosen:  # the newest identity on an allowed channel
                chosen[contact_id] = Recipient(contact_id, contacts[contact_id], channel, address)
        return [chosen[i] for i in sorted(chosen)]

    async def _audience_counts(
        self, session: AsyncSession, segment: Segment
    ) -> dict[tuple[str, str], int]:
        """How many contacts :meth:`_recipients` would give, per (channel, language): the
        same choice (each contact on their newest identity on an allowed channel), counted
        in one query instead of read out in batches."""
        allowed = self._allowed_channels(segment)
        if not allowed:
            return {}
        newer = aliased(ChannelIdentity)
        has_newer = (
            select(col(newer.id))
            .where(
                col(newer.contact_id) == col(ChannelIdentity.contact_id),
                col(newer.channel).in_(allowed),
                col(newer.id) > col(ChannelIdentity.id),
            )
            .exists()
        )
        query = (
            select(col(ChannelIdentity.channel), col(Contact.language), func.count())
            .select_from(Contact)
            .join(
                ChannelIdentity,
                (col(ChannelIdentity.contact_id) == col(Contact.id))
                & col(ChannelIdentity.channel).in_(allowed),
            )
            .where(*self._contact_filter(segment), ~has_newer)
            .group_by(col(ChannelIdentity.channel), col(Contact.language))
        )
        return {
            (str(channel), str(language)): int(n)
            for channel, language, n in (await session.execute(query)).all()
        }

    async def _groups(self, session: AsyncSession, groups: Groups) -> list[str]:
        """The chat ids: the groups named, plus those in the wards (every assigned group
        when neither wards nor chat ids are given)."""
        if GROUP_CHANNEL not in self.channels:
            return []
        ids = set(groups.chat_ids)
        if groups.wards is not None or not groups.chat_ids:
            wards = None if groups.wards is None else list(groups.wards)
            ids.update(g.chat_id for g in await group_store.groups_in_wards(session, wards=wards))
        return sorted(ids)

    async def _anyone(self, spec: BroadcastSpec) -> bool:
        async with self.sessions() as session:
            if spec.segment is not None and await self._recipients(
                session, spec.segment, after=0, limit=1
            ):
                return True
            return spec.groups is not None and bool(await self._groups(session, spec.groups))

    # ---- preview --------------------------------------------------------------------------------

    async def preview(self, spec: BroadcastSpec) -> Audience:
        self._check(spec)
        counts: dict[tuple[str, str], int] = {}
        group_ids: list[str] = []
        async with self.sessions() as session:
            if spec.segment is not None:
                counts = await self._audience_counts(session, spec.segment)
            if spec.groups is not None:
                group_ids = await self._groups(session, spec.groups)
        lines = []
        sms_segments = 0
        for (channel, language), n in sorted(counts.items()):
            segments = self._segments(spec, channel, language)
            lines.append(AudienceLine(channel, language, n, segments))
            if channel == SMS:
                sms_segments += segments * n
        cost = (self.sms_segment_price * sms_segments).quantize(Decimal("0.01"))
        return Audience(tuple(lines), tuple(group_ids), sms_segments, cost)

    def _segments(self, spec: BroadcastSpec, channel: str, language: str) -> int:
        """SMS segments for one recipient: the text, or a flow's first messages."""
        sender = self.channels[channel]
        if spec.text:
            contents = [sender.render(MessageCreated(self._text(spec, language)), language)]
        else:
            assert spec.flow_id is not None
            step = self.engine.start(
                ConversationState(),
                ContactView(language=language, consented=True),
                spec.flow_id,
                self.clock.now(),
                dict(spec.variables),
            )
            contents = [
                sender.render(e, language) for e in step.events if isinstance(e, MessageCreated)
            ]
        total = sum(int(c.get("segments") or 1) for c in contents)
        return max(total, 1)

    def _text(self, spec: BroadcastSpec, language: str) -> str:
        return spec.text.get(language) or spec.text["en"]

    # ---- sending --------------------------------------------------------------------------------

    async def send(self, spec: BroadcastSpec) -> Sent:
        self._check(spec)
        now = self.clock.now()
        scheduled = spec.send_at is not None and spec.send_at > now
        if not scheduled and not await self._anyone(spec):
            raise BroadcastError(
                "nobody would get it: no consented, opted-in resident (or group) matches; "
                "check the wards, channels and languages"
            )
        row = Broadcast(
            key=spec.resolved_key(),
            label=spec.label[:200],
            kind="flow" if spec.flow_id else "message",
            texts=dict(spec.text),
            flow_id=spec.flow_id,
            variables=dict(spec.variables),
            audience={
                "segment": None if spec.segment is None else spec.segment.describe(),
                "groups": None
                if spec.groups is None
                else {
                    "wards": None if spec.groups.wards is None else list(spec.groups.wards),
                    "chat_ids": list(spec.groups.chat_ids),
                },
            },
            actor=spec.actor[:200],
            status=BroadcastStatus.SCHEDULED if scheduled else BroadcastStatus.SENDING,
            created_at=now,
            send_at=spec.send_at,
        )
        async with self.sessions() as session, session.begin():
            stored, created = await store.get_or_create(session, row)
            if created:
                await repo.audit(
                    session,
                    actor=spec.actor,
                    action="broadcast_scheduled" if scheduled else "broadcast_sent",
                    subject=f"broadcast:{stored.id}",
                    detail={"label": spec.label, "kind": row.kind, **row.audience},
                    now=now,
                )
        assert stored.id is not None
        if stored.status == BroadcastStatus.CANCELLED:
            raise BroadcastError(f"broadcast {stored.id} was cancelled")
        if stored.status == BroadcastStatus.SCHEDULED and stored.send_at and stored.send_at > now:
            return Sent(stored.id, 0, 0, scheduled=True)
        queued, already = await self._expand(stored.id, spec)
        return Sent(stored.id, queued, already)

    async def send_due(self) -> int:
        """The scheduler's job: send every scheduled broadcast whose time has come."""
        async with self.sessions() as session:
            due = await store.due_scheduled(session, now=self.clock.now())
        for row in due:
            assert row.id is not None
            await self._expand(row.id, _spec_from_row(row))
        return len(due)

    async def _expand(self, broadcast_id: int, spec: BroadcastSpec) -> tuple[int, int]:
        """Queue the broadcast for everyone who has not had it; (queued now, had it)."""
        queued = already = 0
        async with self.sessions() as session, session.begin():
            stored = await session.get(Broadcast, broadcast_id, with_for_update=True)
            assert stored is not None
            stored.status = BroadcastStatus.SENDING
        if spec.segment is not None:
            after = 0
            while True:
                async with self.sessions() as session:
                    batch = await self._recipients(
                        session, spec.segment, after=after, limit=BATCH
                    )
                if not batch:
                    break
                after = batch[-1].contact_id
                if spec.flow_id is not None:
                    new, old = await self._start_flows(broadcast_id, spec, batch)
                else:
                    new, old = await self._queue_messages(broadcast_id, spec, batch)
                queued += new
                already += old
                if new and self.on_outbox is not None:
                    self.on_outbox()
        if spec.groups is not None:
            new, old = await self._queue_groups(broadcast_id, spec, spec.groups)
            queued += new
            already += old
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            stored = await session.get(Broadcast, broadcast_id, with_for_update=True)
            assert stored is not None
            stored.status = BroadcastStatus.QUEUED
            stored.recipients += queued
            stored.finished_at = now
        if queued and self.on_outbox is not None:
            self.on_outbox()
        return queued, already

    async def _queue_messages(
        self, broadcast_id: int, spec: BroadcastSpec, batch: Sequence[Recipient]
    ) -> tuple[int, int]:
        now = self.clock.now()
        rendered: dict[tuple[str, str], Content] = {}
        async with self.sessions() as session, session.begin():
            new = await store.claim_contacts(
                session,
                broadcast_id=broadcast_id,
                recipients=[(r.contact_id, r.channel) for r in batch],
                now=now,
            )
            rows: list[tuple[int, OutboundMessage]] = []
            for r in batch:
                if r.contact_id not in new:
                    continue
                key = (r.channel, r.language)
                if key not in rendered:
                    text = self._text(spec, r.language)
                    rendered[key] = self.channels[r.channel].render(
                        MessageCreated(text), r.language
                    )
                    rendered[key].setdefault("language", r.language)
                row = repo.new_outbound(
                    channel=r.channel,
                    address=r.address,
                    contact_id=r.contact_id,
                    content=dict(rendered[key]),
                    priority=Priority.BULK,
                    now=now,
                )
                session.add(row)
                rows.append((r.contact_id, row))
            await session.flush()
            if rows:  # one executemany on the table (not the ORM): link each recipient's row
                table = table_of(BroadcastRecipient)
                await session.execute(
                    update(table)
                    .where(
                        table.c.broadcast_id == broadcast_id,
                        table.c.contact_id == bindparam("cid"),
                    )
                    .values(outbound_id=bindparam("oid")),
                    [{"cid": cid, "oid": row.id} for cid, row in rows],
                )
        return len(rows), len(batch) - len(new)

    async def _start_flows(
        self, broadcast_id: int, spec: BroadcastSpec, batch: Sequence[Recipient]
    ) -> tuple[int, int]:
        assert spec.flow_id is not None
        queued = already = 0
        for r in batch:
            outcome: dict[str, bool] = {}

            async def claim(
                session: AsyncSession,
                contact: Contact,
                r: Recipient = r,
                outcome: dict[str, bool] = outcome,
            ) -> bool:
                new = await store.claim_contacts(
                    session,
                    broadcast_id=broadcast_id,
                    recipients=[(r.contact_id, r.channel)],
                    now=self.clock.now(),
                )
                outcome["new"] = bool(new)
                return bool(new)

            result = await self.pipeline.start_flow(
                channel=r.channel,
                address=r.address,
                flow_id=spec.flow_id,
                variables=spec.variables,
                claim=claim,
            )
            if "new" not in outcome:  # nobody to start it for (unknown or erased)
                continue
            if not outcome["new"]:
                already += 1
                continue
            queued += 1
            if result.outbox and result.outbox[0].id is not None:
                async with self.sessions() as session, session.begin():
                    await store.link_outbound(
                        session,
                        broadcast_id=broadcast_id,
                        contact_id=r.contact_id,
                        outbound_id=result.outbox[0].id,
                    )
        return queued, already

    async def _queue_groups(
        self, broadcast_id: int, spec: BroadcastSpec, groups: Groups
    ) -> tuple[int, int]:
        now = self.clock.now()
        queued = already = 0
        async with self.sessions() as session, session.begin():
            chat_ids = await self._groups(session, groups)
            if not chat_ids:
                return 0, 0
            channel = self.channels[GROUP_CHANNEL]
            content = channel.render(
                MessageCreated(self._group_text(spec)), self.default_language
            )
            for chat_id in chat_ids:
                if not await store.claim_group(
                    session,
                    broadcast_id=broadcast_id,
                    chat_id=chat_id,
                    channel=GROUP_CHANNEL,
                    now=now,
                ):
                    already += 1
                    continue
                row = repo.new_outbound(
                    channel=GROUP_CHANNEL,
                    address=chat_id,
                    content=dict(content),
                    priority=Priority.BULK,
                    now=now,
                )
                session.add(row)
                await session.flush()
                assert row.id is not None
                await store.link_outbound(
                    session, broadcast_id=broadcast_id, group_chat_id=chat_id, outbound_id=row.id
                )
                queued += 1
        return queued, already

    def _group_text(self, spec: BroadcastSpec) -> str:
        first = self.default_language
        texts = [spec.text.get(first) or spec.text["en"]]
        for language in LANGUAGES:
            other = spec.text.get(language)
            if language != first and other and other not in texts:
                texts.append(other)
        return "\n\n".join(texts)

    async def progress(self, broadcast_id: int) -> dict[str, int]:
        async with self.sessions() as session:
            return await store.progress(session, broadcast_id=broadcast_id)


def _spec_from_row(row: Broadcast) -> BroadcastSpec:
    """A scheduled broadcast, as it was asked for (scheduled ones have no domain condition)."""
    audience = row.audience or {}
    segment = audience.get("segment")
    groups = audience.get("groups")
    return BroadcastSpec(
        text=dict(row.texts),
        flow_id=row.flow_id,
        variables=dict(row.variables),
        segment=None
        if segment is None
        else Segment(
            wards=tuple(segment.get("wards") or ()),
            channels=tuple(segment.get("channels") or ()),
            languages=tuple(segment.get("languages") or ()),
            consented_only=bool(segment.get("consented_only", True)),
        ),
        groups=None
        if groups is None
        else Groups(
            wards=None if groups.get("wards") is None else tuple(groups["wards"]),
            chat_ids=tuple(groups.get("chat_ids") or ()),
        ),
        key=row.key,
        label=row.label,
        actor=row.actor,
    )
