"""State the worker processes share through the database when civicbot is scaled out on
PostgreSQL: the leader lease (scheduled jobs run in one process at a time), the send-rate
buckets (a channel's limit holds across every worker together), and worker heartbeats (the
health endpoint's "is anything dispatching?").

Each change is one atomic statement, so two processes racing for a lease or a send slot never
both win. Repositories take a session and never commit. None of these rows is about a
resident: a per-chat rate key names a Telegram chat id, which is forgotten within a day
(:func:`purge_rate_buckets`), and FORGET leaves these tables alone (``not_personal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, case, delete, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from storage.erasure import not_personal, table_of
from storage.types import UTCDateTime

NAME_MAX = 128


class Lease(SQLModel, table=True):
    """A named lease (``scheduler``): who holds it and until when. The holder renews it well
    before ``expires_at``; once that passes, any other process may take it."""

    __tablename__ = "coordination_leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=NAME_MAX)
    acquired_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class RateBucket(SQLModel, table=True):
    """A send-rate bucket as a reservation: ``tat`` (the "theoretical arrival time" of the
    generic cell rate algorithm, seconds since the epoch by the database's clock) is when the
    next send may go. Taking a slot moves it on by one interval; a taker sleeps until its slot.
    Equivalent to a token bucket whose tokens may go into bounded debt."""

    __tablename__ = "coordination_rate_buckets"

    key: str = Field(primary_key=True, max_length=200)
    tat: float = Field(default=0.0)


class WorkerHeartbeat(SQLModel, table=True):
    """A worker process (or a single-process ``serve``) that runs the dispatcher: refreshed every
    few seconds while it runs; the health endpoint reads the newest."""

    __tablename__ = "coordination_heartbeats"

    name: str = Field(primary_key=True, max_length=NAME_MAX)
    started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    seen_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    leader: bool = Field(default=False)


not_personal(
    table_of(RateBucket),
    "send-rate slots per channel, chat or group (a key names a chat id only as a rate limit "
    "key, purged a day after its last send)",
)
not_personal(table_of(Lease), "which worker process holds a lease, never a resident")
not_personal(table_of(WorkerHeartbeat), "worker process names and when they last ran")


# ---- the leader lease ---------------------------------------------------------------------------


async def take_lease(
    session: AsyncSession, *, name: str, holder: str, now: datetime, until: datetime
) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``until``, in one statement: it
    succeeds when nobody holds it, ``holder`` already does, or the holder's time ran out
    (``expires_at`` <= ``now``). True if ``holder`` holds it afterwards."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = table_of(Lease)
    stmt = insert(Lease).values(
        name=name, holder=holder[:NAME_MAX], acquired_at=now, expires_at=until
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "holder": stmt.excluded.holder,
            "expires_at": stmt.excluded.expires_at,
            # a renewal keeps the time it was first taken; a takeover starts a new one
            "acquired_at": case(
                (table.c.holder == stmt.excluded.holder, table.c.acquired_at),
                else_=stmt.excluded.acquired_at,
            ),
        },
        where=(table.c.holder == stmt.excluded.holder) | (table.c.expires_at <= now),
    ).returning(table.c.holder)
    row = (await session.execute(upsert)).first()
    return row is not None


async def release_lease(session: AsyncSession, *, name: str, holder: str) -> None:
    """Give the lease up (a clean shutdown), so another process need not wait for it to run
    out."""
    await session.execute(
        delete(Lease).where(col(Lease.name) == name, col(Lease.holder) == holder)
    )


async def lease_holder(session: AsyncSession, *, name: str, now: datetime) -> str | None:
    """Who holds lease ``name`` now (None when nobody, or the holder's time ran out)."""
    lease = await session.get(Lease, name, populate_existing=True)
    if lease is None or lease.expires_at <= now:
        return None
    return lease.holder


# ---- send-rate buckets (PostgreSQL) --------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """The answer to :func:`reserve_slot`: ``granted`` and how long to wait for the slot, or
    not granted (the wait would have been longer than allowed) and how long until one is free."""

    granted: bool
    wait: float
    at: float | None = None  # the granted slot, seconds since the epoch (database clock)


_RESERVE = text(
    """
    WITH n AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)
    INSERT INTO coordination_rate_buckets AS b (key, tat)
    SELECT :key, n.t + :interval FROM n
    ON CONFLICT (key) DO UPDATE
        SET tat = GREATEST(b.tat, (SELECT t FROM n)) + :interval
        WHERE GREATEST(b.tat, (SELECT t FROM n)) - :tau - (SELECT t FROM n) <= :max_wait
    RETURNING GREATEST(0.0, b.tat - :interval - :tau - (SELECT t FROM n)) AS wait,
        GREATEST(b.tat - :interval - :tau, (SELECT t FROM n)) AS at
    """
)
_WAIT = text(
    """
    SELECT GREATEST(0.0, b.tat - :tau - extract(epoch FROM clock_timestamp())::float8)
    FROM coordination_rate_buckets AS b WHERE b.key = :key
    """
)


async def reserve_slot(
    session: AsyncSession, *, key: str, interval: float, burst: int = 1, max_wait: float
) -> Slot:
    """Reserve the next send slot of bucket ``key`` (one send every ``interval`` seconds, up
    to ``burst`` at once), by the database's clock, in one statement: several processes taking
    slots at once each get a different one. Not granted when the slot would be more than
    ``max_wait`` seconds away (the bucket's debt is bounded); nothing is reserved then.
    PostgreSQL only (SQLite runs one process, whose buckets live in memory)."""
    params = {
        "key": key[:200],
        "interval": float(interval),
        "tau": float(max(0, burst - 1) * interval),
        "max_wait": float(max_wait),
    }
    row = (await session.execute(_RESERVE, params)).first()
    if row is not None:
        return Slot(granted=True, wait=float(row[0]), at=float(row[1]))
    again = (await session.execute(_WAIT, params)).first()
    return Slot(granted=False, wait=float(again[0]) if again is not None else 0.0)


async def purge_rate_buckets(session: AsyncSession, *, idle_seconds: float) -> int:
    """Drop buckets unused for ``idle_seconds`` (their slot long past: a fresh row behaves the
    same). Keeps per-chat keys from piling up."""
    result = await session.execute(
        text(
            "DELETE FROM coordination_rate_buckets "
            "WHERE tat < extract(epoch FROM clock_timestamp())::float8 - :idle"
        ),
        {"idle": float(idle_seconds)},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---- heartbeats ----------------------------------------------------------------------------------


async def beat(
    session: AsyncSession, *, name: str, started_at: datetime, now: datetime, leader: bool
) -> None:
    """Record that worker ``name`` is alive now."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(WorkerHeartbeat).values(
        name=name[:NAME_MAX], started_at=started_at, seen_at=now, leader=leader
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "started_at": stmt.excluded.started_at,
                "seen_at": stmt.excluded.seen_at,
                "leader": stmt.excluded.leader,
            },
        )
    )


async def live_workers(session: AsyncSession, *, since: datetime) -> list[WorkerHeartbeat]:
    """Workers seen at or after ``since``, most recently seen first."""
    query = (
        select(WorkerHeartbeat)
        .where(col(WorkerHeartbeat.seen_at) >= since)
        .order_by(col(WorkerHeartbeat.seen_at).desc())
    )
    return list((await session.execute(query)).scalars())


async def forget_worker(session: AsyncSession, *, name: str) -> None:
    """A worker that stopped cleanly says so (the health check then does not wait for it to
    go stale)."""
    await session.execute(delete(WorkerHeartbeat).where(col(WorkerHeartbeat.name) == name))


async def purge_heartbeats(session: AsyncSession, *, before: datetime) -> int:
    result = await session.execute(
        delete(WorkerHeartbeat).where(col(WorkerHeartbeat.seen_at) < before)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
