"""The needs-assessment service: define (and update before opening), open and close on time,
load the census, report who has been heard, export, and invite under-represented residents
back. Built once in the composition root; proactive messages go through the Broadcaster.

Every change is written to the audit log under the acting name (``cli:<user>``,
``scheduler``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from flows.broadcasts import Audience, Broadcaster, BroadcastError, BroadcastSpec, Segment, Sent
from flows.needs.census import read_census
from flows.needs.definition import Definition, parse_definition
from flows.needs.report import Computed, PollResult, Responses, Scope, build_report
from storage import needs as store
from storage import polls as poll_store
from storage import repositories as repo
from storage.broadcasts import Broadcast, BroadcastRecipient
from storage.models import ChannelIdentity, Contact
from storage.needs import NeedsAssessment, NeedsProfileAnswer, NeedsResponse

log = logging.getLogger(__name__)
FLOW = "needs"


class NeedsError(Exception):
    """A needs command can't be done as asked; the message says why."""


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class Reminder:
    """What ``needs remind`` did or would do."""

    audience: Audience | None
    by_ward: dict[str, int] = field(default_factory=dict)
    by_group: dict[str, int] = field(default_factory=dict)
    sent: Sent | None = None
    reason: str = ""  # why nobody is reminded, when nobody is

    @property
    def recipients(self) -> int:
        return 0 if self.audience is None else self.audience.recipients


class NeedsService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        broadcaster: Broadcaster,
        clock: Clock,
        under_represented_ratio: float,
        weight_cap: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self.broadcaster = broadcaster
        self.clock = clock
        self.threshold = under_represented_ratio
        self.weight_cap = weight_cap

    # ---- definitions ---------------------------------------------------------------------------

    async def define(
        self, text: str, *, announce: bool, actor: str
    ) -> tuple[NeedsAssessment, str]:
        """Create the assessment in ``text`` (YAML), or update it while it has not opened.
        Raises :class:`~flows.needs.definition.DefinitionError` (with line numbers) or
        :class:`NeedsError`; nothing is written then. Opens it at once if its time has come."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            wards = await store.ward_codes(session)
            dimensions = await store.census_groups(session)
            definition = parse_definition(
                text, known_wards=set(wards), census_dimensions=set(dimensions), now=now
            )
            row = await store.get_assessment(session, definition.id)
            if row is not None and (row.opened_at is not None or row.opens_at <= now):
                raise NeedsError(
                    f"needs assessment {definition.id} has opened, so it can't be changed; "
                    "close it (`civicbot needs close`) or use a new id"
                )
            created = row is None
            if row is None:
                row = NeedsAssessment(
                    id=definition.id,
                    opens_at=definition.opens_at,
                    closes_at=definition.closes_at,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
            _apply(row, definition, announce=announce, now=now)
            await repo.audit(
                session,
                actor=actor,
                action="needs_created" if created else "needs_updated",
                subject=f"needs:{definition.id}",
                detail={
                    "opens_at": definition.opens_at.isoformat(),
                    "closes_at": definition.closes_at.isoformat(),
                    "wards": None if definition.wards is None else list(definition.wards),
                    "categories": len(definition.categories),
                    "announce": announce,
                },
                now=now,
            )
        if definition.opens_at <= now:
            await self.open_due(actor=actor)
        async with self.sessions() as session:
            stored = await store.get_assessment(session, definition.id)
        assert stored is not None
        return stored, "created" if created else "updated"

    async def all(self) -> list[NeedsAssessment]:
        async with self.sessions() as session:
            return await store.list_assessments(session)

    async def get(self, assessment_id: str) -> NeedsAssessment:
        async with self.sessions() as session:
            found = await store.get_assessment(session, assessment_id)
        if found is None:
            raise NeedsError(f"no needs assessment {assessment_id!r} (see `civicbot needs list`)")
        return found

    async def close(self, assessment_id: str, *, actor: str) -> NeedsAssessment:
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            row = await session.get(NeedsAssessment, assessment_id, with_for_update=True)
            if row is None:
                raise NeedsError(f"no needs assessment {assessment_id!r}")
            if row.closed_at is not None:
                raise NeedsError(f"{assessment_id} closed at {row.closed_at:%Y-%m-%d %H:%M} UTC")
            row.closed_at = now
            row.updated_at = now
            await repo.audit(
                session, actor=actor, action="needs_closed", subject=f"needs:{assessment_id}",
                now=now,
            )
        return row

    # ---- the scheduler's job -------------------------------------------------------------------

    async def open_due(self, *, actor: str = "scheduler") -> int:
        """Open every assessment whose time has come (sending its invitation if it has one);
        the invitation is idempotent, so a crash between sending and marking loses nothing."""
        now = self.clock.now()
        async with self.sessions() as session:
            due = await store.due_to_open(session, now=now)
        for assessment in due:
            if assessment.announce:
                await self._announce(assessment, actor=actor)
            async with self.sessions() as session, session.begin():
                row = await session.get(NeedsAssessment, assessment.id, with_for_update=True)
                if row is None or row.opened_at is not None:
                    continue
                row.opened_at = now
                await repo.audit(
                    session, actor=actor, action="needs_opened", subject=f"needs:{row.id}",
                    now=now,
                )
        return len(due)

    async def close_due(self, *, actor: str = "scheduler") -> int:
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            due = await store.due_to_close(session, now=now)
            for row in due:
                row.closed_at = row.closes_at
                row.updated_at = now
                await repo.audit(
                    session, actor=actor, action="needs_closed", subject=f"needs:{row.id}",
                    now=now,
                )
        return len(due)

    async def run_due(self) -> tuple[int, int]:
        """Open and close assessments at their times (restart-safe: read from the database)."""
        return await self.open_due(), await self.close_due()

    async def _scope(self, session: AsyncSession, assessment: NeedsAssessment) -> tuple[str, ...]:
        if assessment.wards is not None:
            return tuple(assessment.wards)
        return tuple(sorted(await store.ward_codes(session)))

    async def _announce(self, assessment: NeedsAssessment, *, actor: str) -> Sent | None:
        async with self.sessions() as session:
            wards = await self._scope(session, assessment)
        spec = BroadcastSpec(
            flow_id=FLOW,
            variables={"assessment": assessment.id},
            segment=Segment(wards=wards),
            key=f"needs-open:{assessment.id}",
            label=f"Needs assessment {assessment.id} is open",
            actor=actor,
        )
        try:
            return await self.broadcaster.send(spec)
        except BroadcastError as exc:  # nobody to invite yet: not a reason not to open
            log.info("needs %s: no invitation sent: %s", assessment.id, exc)
            return None

    # ---- census ----------------------------------------------------------------------------

    async def load_census(self, text: str, *, source: str, actor: str) -> dict[str, int]:
        """Check the whole file, then replace the dimensions it has. Raises
        :class:`~flows.needs.census.CensusFileError` (nothing written)."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            rows = read_census(text, known_wards=set(await store.ward_codes(session)))
            await store.replace_census(session, rows=rows)
            summary = {
                "rows": len(rows),
                "wards": len({r.ward_code for r in rows}),
                "dimensions": len({r.dimension for r in rows}),
            }
            await repo.audit(
                session, actor=actor, action="census_loaded", subject=source[:200],
                detail=summary, now=now,
            )
        return summary

    # ---- the report ------------------------------------------------------------------------

    async def compute(self, assessment_id: str) -> tuple[NeedsAssessment, Computed]:
        async with self.sessions() as session:
            assessment = await store.get_assessment(session, assessment_id)
            if assessment is None:
                raise NeedsError(
                    f"no needs assessment {assessment_id!r} (see `civicbot needs list`)"
                )
            wards = await store.ward_codes(session)
            scope = Scope(
                id=assessment.id,
                wards=await self._scope(session, assessment),
                picks=assessment.picks,
                about_you=tuple(assessment.about_you),
                categories=tuple(c["id"] for c in assessment.categories),
            )
            rows = await store.response_rows(session, assessment_id=assessment_id)
            census = await store.census_rows(session)
            polls = []
            for poll in await poll_store.polls_for_assessment(
                session, assessment_id=assessment_id
            ):
                assert poll.id is not None
                if poll.result is not None:
                    counts, voters = list(poll.result["counts"]), int(poll.result["voters"])
                else:
                    counts, voters = await poll_store.tally(session, poll=poll)
                polls.append(
                    PollResult(
                        poll.id, poll.chat_id, poll.question, list(poll.options), counts, voters,
                        poll.closed_at is not None,
                    )
                )
        responses = Responses(
            wards=[w for w, _, _ in rows],
            picks=[p for _, p, _ in rows],
            demographics=[d for _, _, d in rows],
        )
        computed = build_report(
            scope,
            responses,
            census,
            {code: w.name for code, w in wards.items()},
            threshold=self.threshold,
            polls=polls,
            cap=self.weight_cap,
        )
        computed.report["title"] = dict(assessment.title)
        computed.report["status"] = status(assessment, self.clock.now())
        computed.report["categories"] = [dict(c) for c in assessment.categories]
        return assessment, computed

    async def report(self, assessment_id: str) -> dict[str, Any]:
        return (await self.compute(assessment_id))[1].report

    async def export_rows(self, assessment_id: str) -> tuple[NeedsAssessment, list[dict[str, Any]]]:
        """One row per response: a random respondent id, never a phone number or Telegram
        id; the weight each response carries in ``weighted_score``."""
        assessment, computed = await self.compute(assessment_id)
        async with self.sessions() as session:
            rows = await store.export_rows(session, assessment_id=assessment_id)
        out = []
        for row, weight in zip(rows, computed.weights, strict=True):
            item: dict[str, Any] = {
                "respondent": row.respondent_key or "",
                "ward_code": row.ward_code or "",
            }
            for i in range(assessment.picks):
                item[f"pick_{i + 1}"] = row.picks[i] if i < len(row.picks) else ""
            for dimension in assessment.about_you:
                item[dimension] = (row.demographics or {}).get(dimension, "")
            item["free_text"] = row.free_text or ""
            item["weight"] = round(float(weight), 9)
            out.append(item)
        return assessment, out

    # ---- targeted outreach -------------------------------------------------------------------

    async def remind(self, assessment_id: str, *, dry_run: bool, actor: str) -> Reminder:
        """Invite consented, opted-in residents who have not answered and who live in an
        under-represented ward or belong to an under-represented group (from their earlier
        "about you" answers), through the broadcast path: at most once per resident per
        assessment however often it runs (those already reminded are left out, so a dry run
        counts exactly who a real run would reach)."""
        assessment, computed = await self.compute(assessment_id)
        now = self.clock.now()
        if not assessment.is_open(now):
            raise NeedsError(f"{assessment_id} is not open, so nobody can be invited to it")
        report = computed.report
        wards = tuple(w["ward_code"] for w in report["wards"])
        under_wards = [w["ward_code"] for w in report["wards"] if w["under_represented"]]
        under_groups = [
            (g["dimension"], g["group"]) for g in report["groups"] if g["under_represented"]
        ]
        if not under_wards and not under_groups:
            return Reminder(None, reason="no ward or group is under-represented")
        key = f"needs-remind:{assessment_id}"
        where = _remind_condition(assessment_id, key, under_wards, under_groups)
        label = (
            f"under-represented in {assessment_id}: wards {', '.join(under_wards) or '-'}; "
            f"groups {', '.join(f'{d}={g}' for d, g in under_groups) or '-'}"
        )
        spec = BroadcastSpec(
            flow_id=FLOW,
            variables={"assessment": assessment_id},
            segment=Segment(wards=wards, where=where, where_label=label[:200]),
            key=key,
            label=f"Reminder: needs assessment {assessment_id}",
            actor=actor,
        )
        audience = await self.broadcaster.preview(spec)
        by_ward, by_group = await self._breakdown(where, wards, under_wards, under_groups)
        if dry_run or audience.recipients == 0:
            reason = "" if audience.recipients else "nobody new to remind"
            return Reminder(audience, by_ward, by_group, reason=reason)
        sent = await self.broadcaster.send(spec)
        return Reminder(audience, by_ward, by_group, sent=sent)

    async def _breakdown(
        self,
        where: ColumnElement[bool],
        wards: Sequence[str],
        under_wards: Sequence[str],
        under_groups: Sequence[tuple[str, str]],
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Who the reminder reaches, by ward and by under-represented group (a resident in
        two such groups counts in both)."""
        reachable = and_(
            col(Contact.consent_at).is_not(None),
            col(Contact.opted_out_at).is_(None),
            col(Contact.erased_at).is_(None),
            col(Contact.ward_code).in_(list(wards)),
            col(Contact.id).in_(select(col(ChannelIdentity.contact_id))),
            where,
        )
        async with self.sessions() as session:
            query = select(col(Contact.id), col(Contact.ward_code)).where(reachable)
            rows = (await session.execute(query)).all()
            ids = [int(i) for i, _ in rows if i is not None]
            groups: dict[int, list[tuple[str, str]]] = {}
            if ids and under_groups:
                answers = select(
                    col(NeedsProfileAnswer.contact_id),
                    col(NeedsProfileAnswer.dimension),
                    col(NeedsProfileAnswer.group_name),
                ).where(col(NeedsProfileAnswer.contact_id).in_(ids))
                for cid, dimension, group in (await session.execute(answers)).all():
                    groups.setdefault(int(cid), []).append((dimension, group))
        by_ward: dict[str, int] = {}
        for _, ward in rows:
            label = f"{ward}{' (under-represented)' if ward in under_wards else ''}"
            by_ward[label] = by_ward.get(label, 0) + 1
        by_group: dict[str, int] = {}
        wanted = set(under_groups)
        for cid in ids:
            for pair in groups.get(cid, []):
                if pair in wanted:
                    name = f"{pair[0]}={pair[1]}"
                    by_group[name] = by_group.get(name, 0) + 1
        return dict(sorted(by_ward.items())), dict(sorted(by_group.items()))


def status(assessment: NeedsAssessment, now: datetime) -> str:
    if assessment.has_closed(now):
        return "closed"
    return "open" if assessment.opens_at <= now else "scheduled"


def _apply(row: NeedsAssessment, d: Definition, *, announce: bool, now: datetime) -> None:
    row.title = dict(d.title)
    row.wards = None if d.wards is None else list(d.wards)
    row.opens_at = d.opens_at
    row.closes_at = d.closes_at
    row.picks = d.picks
    row.ask_free_text = d.ask_free_text
    row.about_you = list(d.about_you)
    row.categories = [c.as_dict() for c in d.categories]
    row.announce = announce
    row.updated_at = now


def _remind_condition(
    assessment_id: str,
    key: str,
    under_wards: Sequence[str],
    under_groups: Sequence[tuple[str, str]],
) -> ColumnElement[bool]:
    """Contacts to remind: not answered, not reminded yet, in an under-represented ward or
    known to be in an under-represented group."""
    answered = select(col(NeedsResponse.contact_id)).where(
        col(NeedsResponse.assessment_id) == assessment_id,
        col(NeedsResponse.contact_id).is_not(None),
    )
    reminded = (
        select(col(BroadcastRecipient.contact_id))
        .join(Broadcast, col(Broadcast.id) == col(BroadcastRecipient.broadcast_id))
        .where(col(Broadcast.key) == key, col(BroadcastRecipient.contact_id).is_not(None))
    )
    in_group = (
        select(col(NeedsProfileAnswer.contact_id)).where(
            or_(
                *[
                    and_(
                        col(NeedsProfileAnswer.dimension) == dimension,
                        col(NeedsProfileAnswer.group_name) == group,
                    )
                    for dimension, group in under_groups
                ]
            )
        )
        if under_groups
        else None
    )
    target = or_(
        col(Contact.ward_code).in_(list(under_wards)) if under_wards else false(),
        col(Contact.id).in_(in_group) if in_group is not None else false(),
    )
    return and_(col(Contact.id).not_in(answered), col(Contact.id).not_in(reminded), target)
