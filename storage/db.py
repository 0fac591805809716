"""Database engine, sessions and migrations.

The caller owns the transaction: repositories take a session and never commit. On SQLite every
transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue on the database lock
instead of failing half-way through a read-then-write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Connections each process keeps open, and how many more it may open for a burst. SQLAlchemy's
# default (5 kept) meant a web process under 16 concurrent webhooks opened and closed a
# connection per request beyond the fifth: a new PostgreSQL server process each time.
POOL_SIZE = 20
MAX_OVERFLOW = 10


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
    return create_async_engine(url, pool_pre_ping=True, hide_parameters=True, **_pool(url, kwargs))


def _pool(url: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The pool sizes unless the caller chose a pool (an in-memory SQLite database has its
    own single-connection pool, which takes no sizes)."""
    if "poolclass" in kwargs or url.database in (None, "", ":memory:"):
        return kwargs
    return {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, **kwargs}


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
