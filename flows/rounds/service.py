"""The PB rounds service: create and update a round from its YAML file, open and close it (now,
or by the scheduler at the phase times), tally and store the results, export to and import
from Pabulib, residents' ideas, delivery updates, and every announcement through the broadcast
path. Built once in the composition root.

Lifecycle: ``draft`` until voting opens, ``voting`` (the rules are locked: only
``voting_close`` may move later, with a reason), ``closed`` (ballots frozen and results stored,
in one transaction). Every change is written to the audit log under the acting name
(``cli:<user>``, ``scheduler``). Announcements (ideas wanted, voting open, results) are each
sent once: a broadcast is idempotent by its key, and ``PbRound.announced`` records that one
was sent, so the scheduler sends one a crash interrupted on its next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import String, cast, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from flows.broadcasts import Broadcaster, BroadcastError, BroadcastSpec, Groups, Segment, Sent
from flows.catalogue import LANGUAGES, Catalogue
from flows.needs.definition import london
from flows.pb.model import Election
from flows.pb.pabulib import PabulibError, parse_pabulib, write_pabulib
from flows.pb.rules import (
    APPROVAL_ONLY,
    RuleNotApplicable,
    TallyTooLong,
    parse_rule,
    tally,
)
from flows.rounds.definition import MAX_AMOUNT, PROJECT_ID, Project, RoundDefinition, parse_round
from flows.rounds.results import (
    StoredBallot,
    StoredProject,
    StoredRound,
    election_of,
    results_of,
)
from storage import repositories as repo
from storage.erasure import table_of
from storage.models import Contact, Ward
from storage.pb_rounds import (
    PbBallot,
    PbProject,
    PbProposal,
    PbRound,
    ProposalStatus,
    RoundStatus,
)

log = logging.getLogger(__name__)
LOCKED = "voting has opened; the rules are locked"
CHUNK = 5000  # contacts per results broadcast (a list of ids in one query)
IMPORT_BATCH = 5000
MAX_REASON = 200  # a later close's reason, sent to residents


class RoundError(Exception):
    """A rounds command can't be done as asked; the message says why."""


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class Imported:
    round: PbRound
    notes: tuple[str, ...]


def _key(*parts: str) -> str:
    """A broadcast key (at most 64 characters whatever the round id)."""
    return "pb-round:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:48]


def money(amount: int, currency: str) -> str:
    if currency == "GBP":
        return f"£{amount:,}"
    return f"{amount:,} {currency}"


def _date(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%d.%m.%Y")


class RoundsService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        broadcaster: Broadcaster,
        catalogue: Catalogue,
        clock: Clock,
    ) -> None:
        self.sessions = sessions
        self.broadcaster = broadcaster
        self.catalogue = catalogue
        self.clock = clock

    # ---- reading -----------------------------------------------------------------------------

    async def all(self) -> list[PbRound]:
        async with self.sessions() as session:
            query = select(PbRound).order_by(col(PbRound.voting_open), col(PbRound.id))
            return list((await session.execute(query)).scalars())

    async def get(self, round_id: str) -> PbRound:
        async with self.sessions() as session:
            return await self._get(session, round_id)

    async def _get(self, session: AsyncSession, round_id: str, *, lock: bool = False) -> PbRound:
        row = await session.get(PbRound, round_id, with_for_update=lock)
        if row is None:
            raise RoundError(f"no PB round {round_id!r} (see `civicbot pb round list`)")
        return row

    async def projects(self, session: AsyncSession, round_id: str) -> list[PbProject]:
        query = (
            select(PbProject)
            .where(col(PbProject.round_id) == round_id)
            .order_by(col(PbProject.position))
        )
        return list((await session.execute(query)).scalars())

    async def show(self, round_id: str) -> dict[str, Any]:
        """The round as JSON: its definition, status, times, projects and ballot count."""
        async with self.sessions() as session:
            row = await self._get(session, round_id)
            projects = await self.projects(session, round_id)
            ballots = len(
                (
                    await session.execute(
                        select(col(PbBallot.id)).where(col(PbBallot.round_id) == round_id)
                    )
                ).all()
            )
            proposals = len(
                (
                    await session.execute(
                        select(col(PbProposal.id)).where(col(PbProposal.round_id) == round_id)
                    )
                ).all()
            )

        def iso(when: datetime | None) -> str | None:
            return None if when is None else when.astimezone(UTC).isoformat()

        return {
            "id": row.id,
            "title": dict(row.title),
            "status": row.status,
            "wards": "all" if row.wards is None else list(row.wards),
            "budget": row.budget,
            "currency": row.currency,
            "ballot": dict(row.ballot),
            "rule": row.rule,
            "verification": row.verification,
            "phases": {
                "proposals_open": iso(row.proposals_open),
                "proposals_close": iso(row.proposals_close),
                "voting_open": iso(row.voting_open),
                "voting_close": iso(row.voting_close),
            },
            "opened_at": iso(row.opened_at),
            "closed_at": iso(row.closed_at),
            "imported": row.imported,
            "ballots": ballots,
            "proposals": proposals,
            "projects": [
                {
                    "id": p.id,
                    "title": dict(p.title),
                    "cost": p.cost,
                    "summary": dict(p.summary),
                    "ward": p.ward_code,
                    "category": p.category,
                }
                for p in projects
            ],
        }

    # ---- definitions -------------------------------------------------------------------------

    async def _parse(self, session: AsyncSession, text: str) -> RoundDefinition:
        wards = {w for w in (await session.execute(select(col(Ward.code)))).scalars()}
        return parse_round(text, known_wards=wards, now=self.clock.now())

    async def create(self, text: str, *, actor: str) -> PbRound:
        """Create the round in ``text`` (YAML). Raises
        :class:`~flows.needs.definition.DefinitionError` (with line numbers) or
        :class:`RoundError`; nothing is written then."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            d = await self._parse(session, text)
            if await session.get(PbRound, d.id) is not None:
                raise RoundError(
                    f"a PB round {d.id!r} exists already: change it with `civicbot pb round "
                    f"update {d.id} FILE` (before voting opens) or use a new id"
                )
            row = PbRound(
                id=d.id,
                budget=d.budget,
                rule=d.rule,
                voting_open=d.voting_open,
                voting_close=d.voting_close,
                created_at=now,
                updated_at=now,
            )
            _apply(row, d, now)
            session.add(row)
            await session.flush()
            for i, p in enumerate(d.projects, start=1):
                session.add(_project(d.id, i, p))
            await repo.audit(
                session,
                actor=actor,
                action="pb_round_created",
                subject=f"pb_round:{d.id}",
                detail=_summary(d),
                now=now,
            )
        return await self.get(d.id)

    async def update(
        self, round_id: str, text: str, *, actor: str, reason: str | None = None
    ) -> tuple[PbRound, str]:
        """Replace the round's definition before voting opens. After that only a later
        ``voting_close`` is taken, with a reason (audited and announced); anything else is
        refused with :data:`LOCKED` and nothing changes. Returns the round and what was done."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            row = await self._get(session, round_id, lock=True)
            if row.imported:
                raise RoundError(f"{round_id} was imported from a Pabulib file; it can't change")
            if row.status == RoundStatus.CLOSED:
                raise RoundError(f"PB round {round_id} has closed; it can't change")
            d = await self._parse(session, text)
            if d.id != round_id:
                raise RoundError(f"the file is for round {d.id!r}, not {round_id!r}")
            locked = row.status != RoundStatus.DRAFT or now >= row.voting_open
            if not locked:
                kept = {p.id: p.proposal_id for p in await self.projects(session, round_id)}
                listed = {p.id for p in d.projects}
                for pid, proposal in kept.items():
                    if proposal is not None and pid not in listed:
                        raise RoundError(
                            f"project {pid} came from idea {proposal} (accepted) and is not in "
                            f"the file: add it (`civicbot pb round show {round_id} --json` "
                            "has it)"
                        )
                await session.execute(
                    delete(table_of(PbProject)).where(table_of(PbProject).c.round_id == round_id)
                )
                _apply(row, d, now)
                for i, p in enumerate(d.projects, start=1):
                    project = _project(d.id, i, p)
                    project.proposal_id = kept.get(p.id)
                    session.add(project)
                await repo.audit(
                    session,
                    actor=actor,
                    action="pb_round_updated",
                    subject=f"pb_round:{round_id}",
                    detail=_summary(d),
                    now=now,
                )
                done = "updated"
            else:
                projects = await self.projects(session, round_id)
                if _locked_view(d) != _stored_view(row, projects):
                    raise RoundError(LOCKED)
                if d.voting_close == row.voting_close:
                    raise RoundError(f"nothing to change: the file says what round {round_id} is")
                if d.voting_close < row.voting_close:
                    raise RoundError(
                        f"{LOCKED}: voting_close may only move later (it is "
                        f"{row.voting_close.isoformat()})"
                    )
                if not reason or not reason.strip():
                    raise RoundError("moving voting_close needs --reason (it is announced)")
                if len(reason.strip()) > MAX_REASON:
                    raise RoundError(f"--reason: at most {MAX_REASON} characters (it is sent)")
                before = row.voting_close
                row.voting_close = d.voting_close
                row.updated_at = now
                await repo.audit(
                    session,
                    actor=actor,
                    action="pb_round_voting_close_moved",
                    subject=f"pb_round:{round_id}",
                    detail={
                        "from": before.isoformat(),
                        "to": d.voting_close.isoformat(),
                        "reason": reason.strip()[:500],
                    },
                    now=now,
                )
                done = f"voting now closes {london(d.voting_close)} (Europe/London)"
        stored = await self.get(round_id)
        if done != "updated" and reason:
            await self._announce_extension(stored, reason.strip(), actor=actor)
        return stored, done

    # ---- opening and closing -----------------------------------------------------------------

    async def open(self, round_id: str, *, actor: str) -> PbRound:
        """Open voting now (a facilitator; the scheduler opens rounds in :meth:`run_due`)."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            row = await self._get(session, round_id, lock=True)
            if row.status != RoundStatus.DRAFT:
                raise RoundError(f"PB round {round_id} is {row.status}: voting has opened already")
            if now >= row.voting_close:
                raise RoundError(
                    f"voting_close ({london(row.voting_close)}) has passed: update the round "
                    "with a later voting_close first"
                )
            self._mark_open(row, now)
            await repo.audit(
                session,
                actor=actor,
                action="pb_round_opened",
                subject=f"pb_round:{round_id}",
                now=now,
            )
        await self.announce(actor=actor)
        return await self.get(round_id)

    @staticmethod
    def _mark_open(row: PbRound, now: datetime) -> None:
        row.status = RoundStatus.VOTING
        row.opened_at = now
        if now < row.voting_open:
            row.voting_open = now
        row.updated_at = now

    async def close(self, round_id: str, *, actor: str, announce: bool = True) -> PbRound:
        """Freeze the ballots and tally them, in one transaction: the round is ``closed``
        with its results stored, or (the tally failed) nothing changed. Then (unless
        ``announce`` is False: the caller sends them with :meth:`announce`) the results are
        sent; an interrupted send is finished by the scheduler's next run."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            row = await self._get(session, round_id, lock=True)
            if row.status == RoundStatus.DRAFT:
                raise RoundError(f"voting in PB round {round_id} has not opened; nothing to close")
            if row.status == RoundStatus.CLOSED:
                raise RoundError(f"PB round {round_id} has closed already")
            row.status = RoundStatus.CLOSED
            row.closed_at = now
            if now < row.voting_close:
                row.voting_close = now
            row.updated_at = now
            election = await self.election(session, row, voters=False)
            row.results = await asyncio.to_thread(self._tally, row, election)
            await repo.audit(
                session,
                actor=actor,
                action="pb_round_closed",
                subject=f"pb_round:{round_id}",
                detail={
                    "voters": row.results["voters"],
                    "selected": row.results["selected"],
                    "cost": row.results["cost"],
                },
                now=now,
            )
        if announce:
            await self.announce(actor=actor)
        return await self.get(round_id)

    def _tally(self, row: PbRound, election: Election) -> dict[str, Any]:
        try:
            result = tally(election, parse_rule(row.rule))
        except (RuleNotApplicable, TallyTooLong) as exc:
            raise RoundError(f"PB round {row.id}: the tally stopped: {exc}") from None
        return results_of(row.id, election, result, self.catalogue)

    async def election(
        self,
        session: AsyncSession,
        row: PbRound,
        *,
        with_results: bool = False,
        voters: bool = True,
    ) -> Election:
        """The round's `Election`. ``voters=False`` (for the tally, which needs no voter ids)
        lets the database count identical ballots instead of sending every row: the voters
        are then numbered 1..n."""
        projects = await self.projects(session, row.id)
        if not voters:
            return election_of(
                _stored(row),
                [
                    StoredProject(p.id, p.cost, p.title.get("en", ""), p.category, p.extra)
                    for p in projects
                ],
                await _counted_ballots(session, row.id),
                row.results if with_results else None,
            )
        query = (
            select(
                col(PbBallot.voter_key),
                col(PbBallot.vote),
                col(PbBallot.points),
                col(PbBallot.extra),
            )
            .where(col(PbBallot.round_id) == row.id)
            .order_by(col(PbBallot.id))
        )
        ballots = [
            StoredBallot(key, vote, points, extra)
            for key, vote, points, extra in (await session.execute(query)).all()
        ]
        return election_of(
            _stored(row),
            [
                StoredProject(p.id, p.cost, p.title.get("en", ""), p.category, p.extra)
                for p in projects
            ],
            ballots,
            row.results if with_results else None,
        )

    async def run_due(self, *, actor: str = "scheduler") -> tuple[int, int]:
        """Open and close rounds at their phase times and send any announcement not sent
        yet (restart-safe: all read from the database; each step done once)."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            due = list(
                (
                    await session.execute(
                        select(PbRound)
                        .where(
                            col(PbRound.status) == RoundStatus.DRAFT,
                            col(PbRound.voting_open) <= now,
                        )
                        .with_for_update()
                    )
                ).scalars()
            )
            for row in due:
                self._mark_open(row, now)
                await repo.audit(
                    session,
                    actor=actor,
                    action="pb_round_opened",
                    subject=f"pb_round:{row.id}",
                    now=now,
                )
        async with self.sessions() as session:
            closing = list(
                (
                    await session.execute(
                        select(col(PbRound.id)).where(
                            col(PbRound.status) == RoundStatus.VOTING,
                            col(PbRound.voting_close) <= now,
                        )
                    )
                ).scalars()
            )
        closed = 0
        for round_id in closing:
            try:
                await self.close(round_id, actor=actor)
                closed += 1
            except RoundError as exc:  # closed meanwhile, or a tally that cannot finish
                log.warning("PB round %s not closed: %s", round_id, exc)
        await self.announce(actor=actor)
        return len(due), closed

    # ---- results -----------------------------------------------------------------------------

    async def results(self, round_id: str) -> dict[str, Any]:
        row = await self.get(round_id)
        if row.status != RoundStatus.CLOSED or row.results is None:
            raise RoundError(
                f"PB round {round_id} has not closed: results come when voting closes "
                f"({london(row.voting_close)} Europe/London), or `civicbot pb round close`"
            )
        return dict(row.results)

    async def export(self, round_id: str) -> str:
        """The closed round as a Pabulib file (voters under their random ``voter_key``)."""
        async with self.sessions() as session:
            row = await self._get(session, round_id)
            if row.status != RoundStatus.CLOSED:
                raise RoundError(
                    f"PB round {round_id} has not closed: its ballots are not final, so it "
                    "can't be exported yet"
                )
            election = await self.election(session, row, with_results=True)
        return write_pabulib(election)

    async def import_file(
        self,
        text: str,
        *,
        source: str,
        actor: str,
        round_id: str | None = None,
        rule: str | None = None,
    ) -> Imported:
        """Make a closed round from a Pabulib file (every META key, PROJECTS column and VOTES
        column kept for export), tallied with ``rule`` (default: the file's rule)."""
        now = self.clock.now()
        try:
            election = await asyncio.to_thread(parse_pabulib, text)
        except PabulibError as exc:
            raise RoundError(f"{source}: {exc}") from None
        notes: list[str] = []
        ident = round_id or _slug(Path(source).stem)
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", ident):
            raise RoundError(f"round id {ident!r}: use 1-64 lower-case letters, digits, - and _")
        chosen = _import_rule(election, rule, notes)
        ballot = _import_ballot(election)
        bad = [p.id for p in election.projects if p.cost.denominator != 1]
        if any(x.denominator != 1 for g in election.groups for x in g.points or ()):
            raise RoundError(f"{source}: points must be whole numbers")
        if bad or election.budget.denominator != 1:
            raise RoundError(f"{source}: costs and the budget must be whole numbers ({bad[:3]})")
        for p in election.projects:
            if len(p.id) > 64:
                raise RoundError(f"{source}: project id {p.id[:20]!r}... is over 64 characters")
        long_voter = next((v for g in election.groups for v in g.voters if len(v) > 64), None)
        if long_voter is not None:
            raise RoundError(f"{source}: voter id {long_voter[:20]!r}... is over 64 characters")
        meta = dict(election.meta)
        row = PbRound(
            id=ident,
            title={
                "en": meta.get("description", ident)[:200],
                "cy": meta.get("description", ident)[:200],
            },
            wards=None,
            budget=int(election.budget),
            currency=(meta.get("currency") or "GBP")[:8],
            ballot=ballot,
            rule=chosen,
            verification="none",
            voting_open=_pabulib_date(meta.get("date_begin"), now),
            voting_close=_pabulib_date(meta.get("date_end"), now, end=True),
            status=RoundStatus.CLOSED,
            imported=True,
            pabulib_meta=meta,
            pabulib_columns={
                "projects": list(election.project_columns),
                "votes": list(election.vote_columns),
            },
            announced=["proposals", "voting", "results"],
            created_at=now,
            updated_at=now,
            opened_at=now,
            closed_at=now,
        )
        if row.voting_close <= row.voting_open:
            row.voting_close = row.voting_open
        voters = _voters(election)
        async with self.sessions() as session, session.begin():
            if await session.get(PbRound, ident) is not None:
                raise RoundError(f"a PB round {ident!r} exists already: give another --id")
            session.add(row)
            await session.flush()
            for i, p in enumerate(election.projects, start=1):
                session.add(
                    PbProject(
                        round_id=ident,
                        id=p.id,
                        position=i,
                        title={"en": (p.name or p.id)[:200], "cy": (p.name or p.id)[:200]},
                        summary={},
                        cost=int(p.cost),
                        category=(p.fields.get("category") or "")[:200] or None,
                        extra=dict(p.fields),
                    )
                )
            await session.flush()
            table = table_of(PbBallot)
            batch: list[dict[str, Any]] = []
            for values in voters:
                values.update(round_id=ident, cast_at=now, updated_at=now)
                batch.append(values)
                if len(batch) >= IMPORT_BATCH:
                    await session.execute(insert(table), batch)
                    batch = []
            if batch:
                await session.execute(insert(table), batch)
            stored = await self.election(session, row, voters=False)
            row.results = await asyncio.to_thread(self._tally, row, stored)
            await repo.audit(
                session,
                actor=actor,
                action="pb_round_imported",
                subject=f"pb_round:{ident}",
                detail={
                    "source": source[-200:],
                    "voters": election.num_voters,
                    "rule": chosen,
                    "notes": notes,
                },
                now=now,
            )
        return Imported(await self.get(ident), tuple(notes))

    # ---- ideas and delivery ------------------------------------------------------------------

    async def proposals(self, round_id: str) -> list[PbProposal]:
        async with self.sessions() as session:
            await self._get(session, round_id)
            query = (
                select(PbProposal)
                .where(col(PbProposal.round_id) == round_id)
                .order_by(col(PbProposal.id))
            )
            return list((await session.execute(query)).scalars())

    async def accept_proposal(
        self,
        round_id: str,
        proposal_id: int,
        *,
        cost: int,
        project_id: str,
        actor: str,
        title_cy: str | None = None,
    ) -> PbProject:
        """Turn a resident's idea into a project on the ballot (before voting opens) and
        tell the resident, through the broadcast path."""
        now = self.clock.now()
        if not PROJECT_ID.fullmatch(project_id):
            raise RoundError("--id: 1-32 letters, digits, '.', '-' or '_'")
        if not 0 < cost <= MAX_AMOUNT:
            raise RoundError("--cost: a whole number above 0")
        async with self.sessions() as session, session.begin():
            row = await self._get(session, round_id, lock=True)
            if row.status != RoundStatus.DRAFT or now >= row.voting_open:
                raise RoundError(LOCKED)
            proposal = await session.get(PbProposal, proposal_id)
            if proposal is None or proposal.round_id != round_id:
                raise RoundError(
                    f"no idea {proposal_id} in round {round_id} (see `civicbot pb proposals "
                    f"{round_id}`)"
                )
            if proposal.status == ProposalStatus.ACCEPTED:
                raise RoundError(f"idea {proposal_id} is project {proposal.project_id} already")
            if not proposal.title.strip():
                raise RoundError(f"idea {proposal_id} has no title (its sender used FORGET)")
            if cost > row.budget:
                raise RoundError(f"--cost {cost:,} is more than the budget {row.budget:,}")
            if await session.get(PbProject, (round_id, project_id)) is not None:
                raise RoundError(f"round {round_id} has a project {project_id!r} already")
            projects = await self.projects(session, round_id)
            summary = (proposal.content or proposal.title)[:300]
            project = PbProject(
                round_id=round_id,
                id=project_id,
                position=max((p.position for p in projects), default=0) + 1,
                title={"en": proposal.title[:120], "cy": (title_cy or proposal.title)[:120]},
                summary={"en": summary, "cy": summary},
                cost=cost,
                ward_code=proposal.ward_code if row.covers(proposal.ward_code) else None,
                proposal_id=proposal.id,
            )
            session.add(project)
            proposal.status = ProposalStatus.ACCEPTED
            proposal.project_id = project_id
            contact_id = proposal.contact_id
            idea = proposal.title
            await repo.audit(
                session,
                actor=actor,
                action="pb_proposal_accepted",
                subject=f"pb_round:{round_id}",
                detail={"proposal": proposal_id, "project": project_id, "cost": cost},
                now=now,
            )
        if contact_id is not None:
            texts = self._texts(
                "pb_proposal_accepted",
                row,
                idea=idea,
                project=project_id,
                cost=money(cost, row.currency),
            )
            await self._send(
                BroadcastSpec(
                    text=texts,
                    segment=Segment(
                        where=col(Contact.id) == contact_id,
                        where_label=f"the sender of idea {proposal_id}",
                    ),
                    key=_key("proposal", round_id, str(proposal_id)),
                    label=f"PB round {round_id}: idea {proposal_id} accepted",
                    actor=actor,
                )
            )
        return project

    async def project_update(
        self, round_id: str, project_id: str, *, text_en: str, text_cy: str | None, actor: str
    ) -> tuple[int, int]:
        """Tell the voters who backed the project (opted in) and the ward's groups how its
        delivery is going. Returns how many messages were queued and how many backed it."""
        text_en = text_en.strip()
        if not text_en:
            raise RoundError("--text-en is empty")
        if len(text_en) > 600 or (text_cy is not None and len(text_cy) > 600):
            raise RoundError("an update is at most 600 characters")
        async with self.sessions() as session:
            row = await self._get(session, round_id)
            project = await session.get(PbProject, (round_id, project_id))
            if project is None:
                raise RoundError(f"round {round_id} has no project {project_id!r}")
            if row.status != RoundStatus.CLOSED:
                raise RoundError(f"PB round {round_id} has not closed: no project is funded yet")
            query = select(col(PbBallot.contact_id), col(PbBallot.vote)).where(
                col(PbBallot.round_id) == round_id, col(PbBallot.contact_id).is_not(None)
            )
            rows = (await session.execute(query)).all()
            backers = sorted(int(cid or 0) for cid, vote in rows if project_id in vote)
        now = self.clock.now()
        texts = {
            lang: self.catalogue.text(
                "pb_project_update",
                lang,
                project=project.title.get(lang, project_id),
                title=row.title.get(lang, row.id),
                text=(text_cy.strip() if lang == "cy" and text_cy else text_en),
            )
            for lang in LANGUAGES
        }
        digest = hashlib.sha256(f"{text_en}\x1f{text_cy}".encode()).hexdigest()[:16]
        wards = (project.ward_code,) if project.ward_code else _ward_tuple(row)
        queued = 0
        for n, chunk in enumerate(_chunks(backers)):
            sent = await self._send(
                BroadcastSpec(
                    text=texts,
                    segment=Segment(
                        where=col(Contact.id).in_(chunk),
                        where_label=f"voters who backed {project_id} in {round_id}",
                    ),
                    key=_key("update", round_id, project_id, digest, str(n)),
                    label=f"PB round {round_id}: update on project {project_id}",
                    actor=actor,
                )
            )
            queued += sent.queued if sent is not None else 0
        group = await self._send(
            BroadcastSpec(
                text=texts,
                groups=Groups(wards=wards),
                key=_key("update-groups", round_id, project_id, digest),
                label=f"PB round {round_id}: update on project {project_id} (groups)",
                actor=actor,
            )
        )
        async with self.sessions() as session, session.begin():
            await repo.audit(
                session,
                actor=actor,
                action="pb_project_update",
                subject=f"pb_round:{round_id}",
                detail={"project": project_id, "backers": len(backers), "text_en": text_en[:200]},
                now=now,
            )
        queued += group.queued if group is not None else 0
        return queued, len(backers)

    # ---- announcements -----------------------------------------------------------------------

    async def announce(self, *, actor: str = "scheduler") -> int:
        """Send every announcement that is due and not sent yet: ideas wanted (in the ideas
        phase), voting open (the invitation), results (after close). Returns how many."""
        now = self.clock.now()
        async with self.sessions() as session:
            rows = list(
                (
                    await session.execute(select(PbRound).where(col(PbRound.imported).is_(False)))
                ).scalars()
            )
        sent = 0
        for row in rows:
            done = set(row.announced or ())
            todo: list[str] = []
            if (
                "proposals" not in done
                and row.status == RoundStatus.DRAFT
                and row.proposals_open is not None
                and row.proposals_close is not None
                and row.proposals_open <= now < row.proposals_close
            ):
                todo.append("proposals")
            if "voting" not in done and row.status == RoundStatus.VOTING:
                todo.append("voting")
            if "results" not in done and row.status == RoundStatus.CLOSED and row.results:
                todo.append("results")
            for what in todo:
                if what == "proposals":
                    await self._announce_ideas(row, actor=actor)
                elif what == "voting":
                    await self._announce_voting(row, actor=actor)
                else:
                    await self._announce_results(row, actor=actor)
                async with self.sessions() as session, session.begin():
                    fresh = await self._get(session, row.id, lock=True)
                    fresh.announced = sorted({*(fresh.announced or ()), what})
                sent += 1
        return sent

    async def _scope(self, row: PbRound) -> tuple[str, ...]:
        if row.wards is not None:
            return tuple(row.wards)
        async with self.sessions() as session:
            return tuple(sorted((await session.execute(select(col(Ward.code)))).scalars()))

    def _texts(self, key: str, row: PbRound, **values: Any) -> dict[str, str]:
        return {
            lang: self.catalogue.text(key, lang, title=row.title.get(lang, row.id), **values)
            for lang in LANGUAGES
        }

    async def _send(self, spec: BroadcastSpec) -> Sent | None:
        try:
            return await self.broadcaster.send(spec)
        except BroadcastError as exc:  # nobody to tell: not a reason to stop
            log.info("%s: not sent: %s", spec.label, exc)
            return None

    async def _to_scope_and_groups(
        self, row: PbRound, texts: dict[str, str], what: str, *, actor: str
    ) -> None:
        wards = await self._scope(row)
        if wards:
            await self._send(
                BroadcastSpec(
                    text=texts,
                    segment=Segment(wards=wards),
                    key=_key(what, row.id),
                    label=f"PB round {row.id}: {what}",
                    actor=actor,
                )
            )
        await self._send(
            BroadcastSpec(
                text=texts,
                groups=Groups(wards=_ward_tuple(row)),
                key=_key(what + "-groups", row.id),
                label=f"PB round {row.id}: {what} (groups)",
                actor=actor,
            )
        )

    async def _announce_ideas(self, row: PbRound, *, actor: str) -> None:
        assert row.proposals_close is not None
        texts = self._texts("pb_round_ideas", row, close=london(row.proposals_close))
        await self._to_scope_and_groups(row, texts, "ideas", actor=actor)

    async def _announce_voting(self, row: PbRound, *, actor: str) -> None:
        async with self.sessions() as session:
            count = len(await self.projects(session, row.id))
        texts = self._texts(
            "pb_round_invite",
            row,
            budget=money(row.budget, row.currency),
            count=count,
            close=london(row.voting_close),
        )
        await self._to_scope_and_groups(row, texts, "voting", actor=actor)

    async def _announce_extension(self, row: PbRound, reason: str, *, actor: str) -> None:
        texts = self._texts("pb_round_extended", row, close=london(row.voting_close), reason=reason)
        await self._to_scope_and_groups(
            row, texts, f"extended-{row.voting_close.isoformat()}", actor=actor
        )

    async def _announce_results(self, row: PbRound, *, actor: str) -> None:
        """Each voter gets what was funded and, for each project they backed that was not,
        the short reason, in their language (one broadcast per set of such projects); the
        wards' groups get what was funded."""
        results = row.results
        assert results is not None
        async with self.sessions() as session:
            projects = {p.id: p for p in await self.projects(session, row.id)}
            query = select(col(PbBallot.contact_id), col(PbBallot.vote)).where(
                col(PbBallot.round_id) == row.id, col(PbBallot.contact_id).is_not(None)
            )
            ballots = [(int(c or 0), list(v)) for c, v in (await session.execute(query)).all()]
        info = {p["id"]: p for p in results["projects"]}

        def name(pid: str, lang: str) -> str:
            p = projects.get(pid)
            return f"{pid} {p.title.get(lang, '')}".strip() if p else pid

        def funded(lang: str) -> str:
            names = [name(pid, lang) for pid in results["selected"]]
            return ", ".join(names) or self.catalogue.text("pb_result_nothing", lang)

        base = {
            lang: self.catalogue.text(
                "pb_round_result",
                lang,
                title=row.title.get(lang, row.id),
                funded=funded(lang),
                cost=money(int(results["cost"]), row.currency),
                budget=money(row.budget, row.currency),
                voters=results["voters"],
            )
            for lang in LANGUAGES
        }
        by_set: dict[tuple[str, ...], list[int]] = {}
        for contact_id, vote in ballots:
            missed = tuple(sorted({v for v in vote if v in info and not info[v]["selected"]}))
            by_set.setdefault(missed, []).append(contact_id)
        for missed, contacts in sorted(by_set.items()):
            texts = {}
            for lang in LANGUAGES:
                lines = [base[lang]]
                for pid in missed:
                    lines.append(
                        self.catalogue.text(
                            "pb_round_result_unfunded",
                            lang,
                            project=name(pid, lang),
                            reason=info[pid]["reason"].get(lang, info[pid]["reason"]["en"]),
                        )
                    )
                texts[lang] = "\n".join(lines)
            for n, chunk in enumerate(_chunks(sorted(contacts))):
                await self._send(
                    BroadcastSpec(
                        text=texts,
                        segment=Segment(
                            where=col(Contact.id).in_(chunk),
                            where_label=f"voters in {row.id} (not funded: "
                            f"{', '.join(missed) or 'none'})"[:200],
                        ),
                        key=_key("results", row.id, ",".join(missed), str(n)),
                        label=f"PB round {row.id}: results",
                        actor=actor,
                    )
                )
        await self._send(
            BroadcastSpec(
                text=base,
                groups=Groups(wards=_ward_tuple(row)),
                key=_key("results-groups", row.id),
                label=f"PB round {row.id}: results (groups)",
                actor=actor,
            )
        )


# ---- helpers ---------------------------------------------------------------------------------


async def _counted_ballots(session: AsyncSession, round_id: str) -> list[StoredBallot]:
    """The round's ballots, identical ones counted by the database (one row per distinct
    ballot rather than 60,000), each voter numbered."""
    vote, points = cast(col(PbBallot.vote), String), cast(col(PbBallot.points), String)
    query = (
        select(vote, points, func.count())
        .where(col(PbBallot.round_id) == round_id)
        .group_by(vote, points)
    )
    out: list[StoredBallot] = []
    for vote_text, points_text, n in (await session.execute(query)).all():
        chosen = [str(v) for v in json.loads(vote_text)]
        parsed = None if points_text is None else json.loads(points_text)  # SQL or JSON null
        given = None if parsed is None else [int(x) for x in parsed]
        out.append(StoredBallot("", chosen, given, None, count=int(n)))
    return out


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    return [list(ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK)]


def _ward_tuple(row: PbRound) -> tuple[str, ...] | None:
    return None if row.wards is None else tuple(row.wards)


def _apply(row: PbRound, d: RoundDefinition, now: datetime) -> None:
    row.title = dict(d.title)
    row.wards = None if d.wards is None else list(d.wards)
    row.budget = d.budget
    row.currency = d.currency
    row.ballot = dict(d.ballot)
    row.rule = d.rule
    row.verification = d.verification
    row.proposals_open = d.proposals_open
    row.proposals_close = d.proposals_close
    row.voting_open = d.voting_open
    row.voting_close = d.voting_close
    row.updated_at = now


def _project(round_id: str, position: int, p: Project) -> PbProject:
    return PbProject(
        round_id=round_id,
        id=p.id,
        position=position,
        title=dict(p.title),
        summary=dict(p.summary),
        cost=p.cost,
        ward_code=p.ward,
        category=p.category,
    )


def _summary(d: RoundDefinition) -> dict[str, Any]:
    return {
        "budget": d.budget,
        "rule": d.rule,
        "ballot": dict(d.ballot),
        "wards": None if d.wards is None else list(d.wards),
        "voting_open": d.voting_open.isoformat(),
        "voting_close": d.voting_close.isoformat(),
        "projects": len(d.projects),
    }


def _locked_view(d: RoundDefinition) -> dict[str, Any]:
    """What may not change once voting has opened: everything but voting_close."""
    return {
        "title": dict(d.title),
        "wards": None if d.wards is None else sorted(d.wards),
        "budget": d.budget,
        "currency": d.currency,
        "ballot": dict(d.ballot),
        "rule": d.rule,
        "verification": d.verification,
        "proposals": (d.proposals_open, d.proposals_close),
        "projects": [
            (p.id, dict(p.title), p.cost, dict(p.summary), p.ward, p.category) for p in d.projects
        ],
    }


def _stored_view(row: PbRound, projects: Sequence[PbProject]) -> dict[str, Any]:
    return {
        "title": dict(row.title),
        "wards": None if row.wards is None else sorted(row.wards),
        "budget": row.budget,
        "currency": row.currency,
        "ballot": dict(row.ballot),
        "rule": row.rule,
        "verification": row.verification,
        "proposals": (row.proposals_open, row.proposals_close),
        "projects": [
            (p.id, dict(p.title), p.cost, dict(p.summary), p.ward_code, p.category)
            for p in projects
        ],
    }


def _stored(row: PbRound) -> StoredRound:
    return StoredRound(
        id=row.id,
        title=row.title.get("en", row.id),
        budget=row.budget,
        currency=row.currency,
        ballot=dict(row.ballot),
        rule=row.rule,
        date_begin=_date(row.voting_open),
        date_end=_date(row.voting_close),
        imported=row.imported,
        meta=row.pabulib_meta,
        columns=row.pabulib_columns,
    )


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")
    return slug[:64] or "imported"


# Pabulib rules civicbot does not run, and what an import tallies instead
_IMPORT_FALLBACK = {
    "unknown": "greedy",
    "greedy-threshold": "greedy",
    "greedy-no-skip": "greedy",
    "equalshares/add1-comparison": "mes-add1",
}


def _import_rule(election: Election, rule: str | None, notes: list[str]) -> str:
    if rule is not None:
        try:
            chosen: str = parse_rule(rule)
        except ValueError as exc:
            raise RoundError(f"--rule: {exc}") from None
    else:
        named = election.meta.get("rule", "unknown").strip().lower() or "unknown"
        try:
            chosen = parse_rule(named)
        except ValueError:
            chosen = _IMPORT_FALLBACK.get(named, "greedy")
            notes.append(
                f"the file's rule {named!r} is not one civicbot runs: tallied with {chosen} "
                "(give --rule to choose)"
            )
    if chosen in APPROVAL_ONLY and election.vote_type != "approval":
        raise RoundError(
            f"rule {chosen} needs approval ballots; the file's are {election.vote_type}: "
            "give --rule greedy or --rule mes"
        )
    return chosen


def _int_meta(election: Election, key: str) -> int | None:
    try:
        value = Fraction(election.meta.get(key, "").strip().replace(",", "."))
    except (ValueError, ZeroDivisionError):
        return None
    return int(value) if value.denominator == 1 and value > 0 else None


def _import_ballot(election: Election) -> dict[str, Any]:
    m = len(election.projects)
    longest = max((len(g.projects) for g in election.groups), default=1) or 1
    if election.vote_type == "approval":
        return {
            "type": "approval",
            "min": _int_meta(election, "min_length") or 1,
            "max": _int_meta(election, "max_length") or m,
        }
    if election.vote_type == "cumulative":
        most = max((int(sum(g.points or ())) for g in election.groups), default=1)
        return {"type": "cumulative", "points": _int_meta(election, "max_sum_points") or most}
    if election.vote_type == "ordinal":
        return {"type": "ranked", "top": _int_meta(election, "max_length") or longest}
    raise RoundError(
        f"{election.vote_type} ballots are not a PB round ballot type (approval, knapsack, "
        "cumulative, ranked)"
    )


def _voters(election: Election) -> list[dict[str, Any]]:
    """One row per voter for ``pb_ballots``, in the file's order, with the file's other
    VOTES cells in ``extra`` (voter_id, vote and points as blanks: kept in their columns)."""
    from flows.pb.pabulib import _split

    columns = list(election.vote_columns)
    at_voter = columns.index("voter_id") if "voter_id" in columns else -1
    extra_cols = [c for c in columns if c not in ("voter_id", "vote", "points")]
    others: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for k, line in enumerate(election.vote_lines):
        cells = [c.strip() for c in _split(line)]
        voter = cells[at_voter] if at_voter >= 0 else str(k + 1)
        order.append(voter)
        if extra_cols:
            others[voter] = {
                c: (
                    ""
                    if c in ("voter_id", "vote", "points")
                    else (cells[j] if j < len(cells) else "")
                )
                for j, c in enumerate(columns)
            }
    group_of = {v: g for g in election.groups for v in g.voters}
    known = set(order)
    order += [v for g in election.groups for v in g.voters if v not in known]
    rows = []
    for voter in order:
        g = group_of.get(voter)
        if g is None:
            continue
        rows.append(
            {
                "contact_id": None,
                "voter_key": voter,
                "vote": [election.projects[j].id for j in g.projects],
                "points": None if g.points is None else [int(x) for x in g.points],
                "ward_code": None,
                "channel": None,
                "receipt": None,
                "extra": others.get(voter),
            }
        )
    return rows


def _pabulib_date(value: str | None, default: datetime, *, end: bool = False) -> datetime:
    """A Pabulib date (dd.mm.yyyy, or a year) as a UTC time; ``default`` when it has none."""
    text = (value or "").strip()
    try:
        if re.fullmatch(r"\d{1,2}\.\d{1,2}\.\d{4}", text):
            day, month, year = (int(x) for x in text.split("."))
            return datetime(year, month, day, 23 if end else 0, 59 if end else 0, tzinfo=UTC)
        if re.fullmatch(r"\d{4}", text):
            year = int(text)
            return (
                datetime(year, 12, 31, 23, 59, tzinfo=UTC)
                if end
                else datetime(year, 1, 1, tzinfo=UTC)
            )
    except ValueError:
        pass
    return default
