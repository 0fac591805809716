"""The tender-alerts service: imports OCDS releases, keeps each process's compiled state and
normalised fields, and sends alerts, digests, cancellations and partner introductions
through the broadcast path. Built once in the composition root.

- **Import** (:meth:`TenderService.import_files`, :meth:`import_parsed`): every file is read
  and checked before anything is written; then, in one transaction, releases are stored
  once by (ocid, release id), and each ocid that got a new release is compiled again from
  all its releases (ocdsmerge), normalised and saved. A change of deadline, value or status
  raises the process's ``revision``, which is what alerts again; other changes (a new
  title) do not.
- **Alerts** (:meth:`send_alerts`): every open notice is matched against every active
  subscription (:class:`flows.tenders.matching.Matcher`). Instant subscriptions get one
  broadcast per (process, revision): a new notice, or what changed ("Deadline moved to
  12 March") for those alerted before. Daily and weekly ones get a row that waits for
  their digest (:meth:`send_digests`, 08:00 Europe/London; weekly on Mondays). Each
  (subscription, process, revision) is recorded once, and a broadcast reaches each person
  once, so nobody hears about the same thing twice, however often this runs.
- **Cancellations**: those whose organisation marked interest hear when a tender is
  cancelled.
- **Introductions** (:meth:`deliver_introductions`): an INTRODUCE recorded in a
  conversation is put to the other organisation (a flow started through the broadcast
  path); once it answers, the asker is told, with the other side's contact details only if
  it said yes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from flows.broadcasts import Broadcaster, BroadcastError, BroadcastSpec, Segment
from flows.catalogue import Catalogue
from flows.tenders.alerts import LONDON, AlertTexts
from flows.tenders.matching import Criteria, Matcher
from flows.tenders.normalise import Lot, Notice, normalise
from flows.tenders.ocds import Compiler, OcdsError, ParsedFile, Release, read_file
from storage import tenders as store
from storage.models import Contact
from storage.tenders import (
    IntroductionStatus,
    TenderAlert,
    TenderIntroduction,
    TenderOrg,
    TenderProcess,
    TenderSubscription,
)

log = logging.getLogger(__name__)

DIGEST_HOUR = 8  # digests go at 08:00 Europe/London
FREQUENCIES = ("instant", "daily", "weekly")
INTRO_FLOW = "tender_introduction"


class Clock(Protocol):
    def now(self) -> datetime: ...


Progress = Callable[[int, int], None]


@dataclass
class ImportResult:
    files: int = 0
    releases: int = 0  # in the files
    new_releases: int = 0  # not stored before
    processes: int = 0  # compiled again
    new_processes: int = 0
    amended: list[str] = field(default_factory=list)  # ocids whose deadline/value/status moved


@dataclass
class AlertRun:
    instant: int = 0  # people newly sent an instant alert (summed over broadcasts)
    queued_for_digest: int = 0
    cancelled: int = 0


def notice_of(row: TenderProcess) -> Notice:
    """A stored process as the matcher sees it."""
    return Notice(
        ocid=row.ocid,
        title=row.title,
        description=row.description,
        buyer=row.buyer,
        status=row.status,
        deadline=row.deadline,
        amount=row.value_amount,
        min_value=row.value_min,
        max_value=row.value_max,
        currency=row.currency,
        cpv=tuple(row.cpv),
        categories=tuple(row.categories),
        regions=tuple(row.regions),
        sme=row.sme,
        vcse=row.vcse,
        reserved=row.reserved,
        framework=row.framework,
        dps=row.dps,
        social_value=row.social_value,
        procurement_method=row.procurement_method,
        url=row.url,
        lots=tuple(
            Lot(
                id=str(lot.get("id", "")),
                title=str(lot.get("title", "")),
                status=str(lot.get("status", "")),
                categories=tuple(lot.get("categories") or ()),
                cpv=tuple(lot.get("cpv") or ()),
                amount=lot.get("amount"),
            )
            for lot in row.lots
        ),
    )


def criteria_of(sub: TenderSubscription) -> Criteria:
    assert sub.id is not None
    return Criteria(
        id=sub.id,
        categories=frozenset(sub.categories),
        cpv=tuple(sub.cpv),
        regions=frozenset(sub.regions),
        min_value=sub.min_value,
        max_value=sub.max_value,
        vcse_only=sub.vcse_only,
        keywords=tuple(sub.keywords),
    )


def next_digest(frequency: str, now: datetime) -> datetime | None:
    """When a digest is next due: the next 08:00 in London (weekly: on a Monday)."""
    if frequency not in ("daily", "weekly"):
        return None
    local = now.astimezone(LONDON)
    due = local.replace(hour=DIGEST_HOUR, minute=0, second=0, microsecond=0)
    if due <= local:
        due += timedelta(days=1)
    if frequency == "weekly":
        while due.weekday() != 0:
            due += timedelta(days=1)
    # a wall-clock 08:00 across a clock change: rebuild it in the right offset
    due = due.replace(tzinfo=None).replace(tzinfo=LONDON)
    return due.astimezone(now.tzinfo)


def _apply(row: TenderProcess, notice: Notice, compiled: dict[str, Any], count: int) -> None:
    row.title = notice.title[:500]
    row.description = notice.description
    row.buyer = notice.buyer[:300]
    row.status = notice.status
    row.deadline = notice.deadline
    row.value_amount = notice.amount
    row.value_min = notice.min_value
    row.value_max = notice.max_value
    row.currency = notice.currency
    row.categories = list(notice.categories)
    row.cpv = list(notice.cpv)
    row.regions = list(notice.regions)
    row.sme = notice.sme
    row.vcse = notice.vcse
    row.reserved = notice.reserved
    row.framework = notice.framework
    row.dps = notice.dps
    row.social_value = notice.social_value
    row.procurement_method = notice.procurement_method[:200]
    row.url = notice.url[:500]
    row.lots = [
        {
            "id": lot.id,
            "title": lot.title,
            "status": lot.status,
            "categories": list(lot.categories),
            "cpv": list(lot.cpv),
            "amount": lot.amount,
        }
        for lot in notice.lots
    ]
    row.compiled = compiled
    row.release_count = count


class TenderService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        broadcaster: Broadcaster,
        catalogue: Catalogue,
        clock: Clock,
        compiler: Compiler | None = None,
        feed_bases: dict[str, str] | None = None,
    ) -> None:
        self.sessions = sessions
        # The live APIs' base URLs by source name (settings), for flows.tenders.fetch.
        self.feed_bases = dict(feed_bases or {})
        self.broadcaster = broadcaster
        self.catalogue = catalogue
        self.clock = clock
        self._compiler = compiler

    @property
    def compiler(self) -> Compiler:
        if self._compiler is None:  # reading the schema's merge rules takes a moment
            self._compiler = Compiler()
        return self._compiler

    def texts(self, language: str) -> AlertTexts:
        return AlertTexts(self.catalogue, language, now=self.clock.now())

    # ---- import -------------------------------------------------------------------------------

    async def import_files(
        self, paths: Sequence[Path], *, progress: Progress | None = None
    ) -> ImportResult:
        """Read and check every file (raising :class:`OcdsError` naming each problem), then
        import them all in one transaction."""
        parsed: list[ParsedFile] = []
        problems: list[str] = []
        for path in paths:
            try:
                parsed.append(read_file(path))
            except OcdsError as exc:
                problems.extend(f"{exc.source}: {p}" for p in exc.problems)
        if problems:
            raise OcdsError("import", problems)
        return await self.import_parsed(parsed, progress=progress)

    async def import_parsed(
        self, files: Sequence[ParsedFile], *, progress: Progress | None = None
    ) -> ImportResult:
        now = self.clock.now()
        result = ImportResult(files=len(files))
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for parsed in files:
            for release in parsed.releases:
                result.releases += 1
                rows.setdefault(
                    (release.ocid, release.release_id),
                    {
                        "ocid": release.ocid,
                        "release_id": release.release_id,
                        "date": release.date[:40],
                        "source": parsed.source[-300:],
                        "data": release.data,
                        "imported_at": now,
                    },
                )
        async with self.sessions() as session, session.begin():
            new = await store.add_releases(session, rows=list(rows.values()))
            result.new_releases = len(new)
            ocids = sorted({ocid for ocid, _ in new})
            for done, ocid in enumerate(ocids, start=1):
                await self._recompile(session, ocid, now, result)
                if progress is not None:
                    progress(done, len(ocids))
        return result

    async def _recompile(
        self, session: AsyncSession, ocid: str, now: datetime, result: ImportResult
    ) -> None:
        stored = await store.releases_of(session, ocid=ocid)
        releases = [Release(r.ocid, r.release_id, r.date, r.data) for r in stored]
        compiled = self.compiler.compile(releases)
        notice = normalise(compiled)
        row = await store.process_by_ocid(session, ocid=ocid)
        fields = notice.alert_fields()
        if row is None:
            row = TenderProcess(ocid=ocid, created_at=now, updated_at=now, alerted=fields)
            session.add(row)
            result.new_processes += 1
        elif row.alerted != fields:
            before = row.alerted
            row.changes = [k for k in ("deadline", "value", "status") if before.get(k) != fields[k]]
            row.alerted = fields
            row.revision += 1
            if notice.status != "cancelled":
                row.cancel_told = False
            result.amended.append(ocid)
        _apply(row, notice, compiled, len(stored))
        row.updated_at = now
        result.processes += 1
        await session.flush()

    # ---- alerts -------------------------------------------------------------------------------

    async def send_alerts(self) -> AlertRun:
        """Alert instant subscribers about open notices they have not heard about (at this
        revision), queue the rest for digests, and tell interested organisations about
        cancellations."""
        now = self.clock.now()
        run = AlertRun()
        async with self.sessions() as session:
            open_rows = await store.processes(session, open_at=now)
            subs = await store.active_subscriptions(session)
            by_id = {s.id: s for s in subs}
            seen = await self._alerts_for(session, [r.id for r in open_rows if r.id is not None])
        matcher = Matcher([criteria_of(s) for s in subs])
        for row in open_rows:
            assert row.id is not None
            matched = [by_id[i] for i in matcher.match(notice_of(row), now)]
            fresh = [s for s in matched if (s.id, row.revision) not in seen.get(row.id, set())]
            if not fresh:
                continue
            told_before = {sid for sid, _ in seen.get(row.id, set())}
            instant = [s for s in fresh if s.frequency == "instant"]
            digest = [s for s in fresh if s.frequency != "instant"]
            for kind in ("new", "amended"):
                group = [s for s in instant if (s.id in told_before) == (kind == "amended")]
                if group:
                    run.instant += await self._send_alert(row, group, kind, now)
            if digest:
                run.queued_for_digest += await self._queue_digest(row, digest, told_before, now)
        run.cancelled = await self._tell_cancelled(now)
        return run

    async def _alerts_for(
        self, session: AsyncSession, process_ids: list[int]
    ) -> dict[int, set[tuple[int, int]]]:
        """process id -> {(subscription id, revision)} already recorded."""
        seen: dict[int, set[tuple[int, int]]] = defaultdict(set)
        for start in range(0, len(process_ids), 500):
            chunk = process_ids[start : start + 500]
            query = select(
                col(TenderAlert.process_id),
                col(TenderAlert.subscription_id),
                col(TenderAlert.revision),
            ).where(col(TenderAlert.process_id).in_(chunk))
            for pid, sid, revision in (await session.execute(query)).all():
                seen[int(pid)].add((int(sid), int(revision)))
        return seen

    async def _send_alert(
        self, row: TenderProcess, subs: list[TenderSubscription], kind: str, now: datetime
    ) -> int:
        assert row.id is not None
        changed = row.changes if kind == "amended" else []
        text = {lang: self.texts(lang).alert(row, changed) for lang in ("en", "cy")}
        contacts = sorted({s.contact_id for s in subs})
        spec = BroadcastSpec(
            text=text,
            segment=Segment(
                where=col(Contact.id).in_(contacts), where_label=f"tender {row.id} subscribers"
            ),
            key=f"tender:{row.id}:r{row.revision}:{kind}",
            label=f"tender alert {row.id}",
        )
        sent = await self._broadcast(spec)
        async with self.sessions() as session, session.begin():
            await store.claim_alerts(
                session,
                rows=[
                    {
                        "subscription_id": s.id,
                        "process_id": row.id,
                        "revision": row.revision,
                        "kind": kind,
                        "broadcast_id": sent,
                        "created_at": now,
                        "sent_at": now,
                    }
                    for s in subs
                ],
            )
        return len(contacts) if sent is not None else 0

    async def _queue_digest(
        self, row: TenderProcess, subs: list[TenderSubscription], told: set[int], now: datetime
    ) -> int:
        async with self.sessions() as session, session.begin():
            new = await store.claim_alerts(
                session,
                rows=[
                    {
                        "subscription_id": s.id,
                        "process_id": row.id,
                        "revision": row.revision,
                        "kind": "amended" if s.id in told else "new",
                        "created_at": now,
                        "sent_at": None,
                    }
                    for s in subs
                ],
            )
        return len(new)

    async def _broadcast(self, spec: BroadcastSpec) -> int | None:
        try:
            return (await self.broadcaster.send(spec)).broadcast_id
        except BroadcastError as exc:  # nobody left to reach (they stopped meanwhile)
            log.info("tender broadcast %s not sent: %s", spec.key, exc)
            return None

    async def send_digests(self) -> int:
        """Send each daily or weekly subscriber whose digest is due the notices waiting for
        it (still open), one message per person; the number of people sent one."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            due = (
                await session.execute(
                    select(TenderSubscription).where(
                        col(TenderSubscription.frequency).in_(["daily", "weekly"]),
                        col(TenderSubscription.next_digest_at) <= now,
                        col(TenderSubscription.paused).is_(False),
                    )
                )
            ).scalars().all()
            waiting = (
                await session.execute(
                    select(TenderAlert, TenderProcess)
                    .join(TenderProcess, col(TenderProcess.id) == col(TenderAlert.process_id))
                    .where(
                        col(TenderAlert.subscription_id).in_([s.id for s in due]),
                        col(TenderAlert.sent_at).is_(None),
                    )
                    .order_by(col(TenderProcess.id))
                )
            ).all()
            for sub in due:
                sub.next_digest_at = next_digest(sub.frequency, now)
            subs = {s.id: s for s in due}
            people: dict[int, dict[int, TenderProcess]] = defaultdict(dict)
            alert_ids: dict[int, list[int]] = defaultdict(list)
            for alert, process in waiting:
                sub = subs[alert.subscription_id]
                alert_ids[sub.contact_id].append(int(alert.id or 0))
                if process.status == "active" and process.deadline and process.deadline > now:
                    people[sub.contact_id][int(process.id or 0)] = process
        sent = 0
        stamp = now.astimezone(LONDON).strftime("%Y%m%d")
        for contact_id, processes in people.items():
            if not processes:
                continue
            rows = [processes[k] for k in sorted(processes)]
            spec = BroadcastSpec(
                text={lang: self.texts(lang).digest(rows) for lang in ("en", "cy")},
                segment=Segment(
                    where=col(Contact.id) == contact_id, where_label="a tender digest"
                ),
                key=f"tender-digest:{contact_id}:{stamp}",
                label="tender digest",
            )
            if await self._broadcast(spec) is not None:
                sent += 1
        async with self.sessions() as session, session.begin():
            ids = [i for ids in alert_ids.values() for i in ids]
            if ids:
                await session.execute(
                    update(TenderAlert).where(col(TenderAlert.id).in_(ids)).values(sent_at=now)
                )
        return sent

    async def _tell_cancelled(self, now: datetime) -> int:
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(TenderProcess).where(
                        col(TenderProcess.status) == "cancelled",
                        col(TenderProcess.cancel_told).is_(False),
                    )
                )
            ).scalars().all()
            told = 0
            work = []
            for row in rows:
                assert row.id is not None
                orgs = await store.interested_orgs(session, process_id=row.id)
                work.append((row, [o.contact_id for o in orgs]))
        for row, contacts in work:
            if contacts:
                spec = BroadcastSpec(
                    text={lang: self.texts(lang).cancelled(row) for lang in ("en", "cy")},
                    segment=Segment(
                        where=col(Contact.id).in_(contacts),
                        where_label=f"organisations interested in tender {row.id}",
                    ),
                    key=f"tender-cancelled:{row.id}:r{row.revision}",
                    label=f"tender {row.id} cancelled",
                )
                if await self._broadcast(spec) is not None:
                    told += len(contacts)
            async with self.sessions() as session, session.begin():
                await session.execute(
                    update(TenderProcess)
                    .where(col(TenderProcess.id) == row.id)
                    .values(cancel_told=True)
                )
        return told

    # ---- introductions ------------------------------------------------------------------------

    async def deliver_introductions(self) -> int:
        """Ask the other side of each new INTRODUCE, and tell each asker the answer (with
        the other side's contact details only when both said yes)."""
        done = 0
        async with self.sessions() as session:
            asks = (
                await session.execute(
                    select(TenderIntroduction).where(
                        col(TenderIntroduction.asked_sent).is_(False),
                        col(TenderIntroduction.status) == IntroductionStatus.ASKED,
                    )
                )
            ).scalars().all()
            answers = (
                await session.execute(
                    select(TenderIntroduction).where(
                        col(TenderIntroduction.result_sent).is_(False),
                        col(TenderIntroduction.status) != IntroductionStatus.ASKED,
                    )
                )
            ).scalars().all()
            orgs = {o.id: o for o in await store.orgs(session)}
            processes = {
                p.id: p
                for p in await store.processes(
                    session, ids=[i.process_id for i in [*asks, *answers]]
                )
            }
        for intro in asks:
            target = orgs[intro.to_org_id]
            spec = BroadcastSpec(
                flow_id=INTRO_FLOW,
                segment=Segment(
                    where=col(Contact.id) == target.contact_id, where_label="an introduction"
                ),
                key=f"tender-intro-ask:{intro.id}",
                label="tender introduction",
            )
            await self._broadcast(spec)
            await self._mark(intro.id, asked_sent=True)
            done += 1
        for intro in answers:
            asker, other = orgs[intro.from_org_id], orgs[intro.to_org_id]
            process = processes[intro.process_id]
            key = "tender_intro_accepted" if intro.status == "accepted" else "tender_intro_declined"
            text = self.catalogue.all(
                key,
                ref=process.id,
                name=other.name,
                details=other.contact_details,
            )
            spec = BroadcastSpec(
                text=text,
                segment=Segment(
                    where=col(Contact.id) == asker.contact_id, where_label="an introduction"
                ),
                key=f"tender-intro-result:{intro.id}",
                label="tender introduction",
            )
            await self._broadcast(spec)
            await self._mark(intro.id, result_sent=True)
            done += 1
        return done

    async def _mark(self, intro_id: int | None, **values: bool) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(TenderIntroduction)
                .where(col(TenderIntroduction.id) == intro_id)
                .values(**values)
            )

    # ---- for officers -------------------------------------------------------------------------

    async def matches_for_org(self, org_id: int) -> list[tuple[TenderSubscription, TenderProcess]]:
        """The open notices each of an organisation's subscriptions matches now."""
        now = self.clock.now()
        async with self.sessions() as session:
            org = await session.get(TenderOrg, org_id)
            if org is None:
                raise LookupError(f"no organisation {org_id}; see `civicbot tenders orgs`")
            subs = await store.subscriptions_of(session, org_id=org_id)
            rows = await store.processes(session, open_at=now)
        matcher = Matcher([criteria_of(s) for s in subs])
        by_id = {s.id: s for s in subs}
        found = []
        for row in rows:
            for sid in matcher.match(notice_of(row), now):
                found.append((by_id[sid], row))
        return found

