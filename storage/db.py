"""Database engine, sessions and migrations.

The caller owns the transaction: repositories take a session and never commit. On SQLite every
transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue on the database lock
instead of failing half-way through a read-then-write.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Connections each process keeps open, and how many more it may open for a burst. SQLAlchemy's
# default (5 kept) meant a web process under 16 concurrent webhooks opened and closed a
# connection per request beyond the fifth: a new PostgreSQL server process each time.
POOL_SIZE = 20
MAX_OVERFLOW = 10
# A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out
# (see _ping_when_idle); one in steady use is not.
IDLE_PING_SECONDS = 1.0


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, hide_parameters=True, **_pool(url, kwargs)
        )
        _configure_sqlite(engine)
        return engine
    # hide_parameters: an error's message never carries what people wrote or their numbers
    engine = create_async_engine(url, hide_parameters=True, **_pool(url, kwargs))
    _ping_when_idle(engine)
    return engine


def _pool(url: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The pool sizes unless the caller chose a pool (an in-memory SQLite database has its
    own single-connection pool, which takes no sizes)."""
    if "poolclass" in kwargs or url.database in (None, "", ":memory:"):
        return kwargs
    # pool_use_lifo: the connection last handed back is handed out next, so those a steady
    # load needs stay in use (and unpinged: see _ping_when_idle) and the rest idle
    return {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, "pool_use_lifo": True, **kwargs}


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection is alive before handing it out, if it has been idle for
    more than IDLE_PING_SECONDS; if it is not, drop every connection pooled before now and
    hand out a new one (PostgreSQL restarted, or a proxy closed idle connections).

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: with asyncpg that is three round
    trips (begin, ``;``, rollback) and 0.35 to 0.7 ms of CPU on each transaction, about a
    tenth of a webhook's CPU (docs/scale.md). Connections in steady use need no ping; one that
    breaks while in use is invalidated by SQLAlchemy, with the rest of the pool, when its
    error is seen."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # gone: the pool retries with a new connection
            raise InvalidatePoolError(f"idle connection failed its ping: {error}") from error


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (Alembic)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
