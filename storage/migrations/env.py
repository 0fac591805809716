"""Alembic environment. Used by ``civicbot db upgrade`` (which passes a connection in) and by
``alembic -c storage/alembic.ini ...`` for writing new revisions (which reads the URL from
``CIVICBOT_DATABASE_URL``, default ``./civicbot.db``)."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

import storage.schema  # noqa: F401  (registers every table on SQLModel.metadata)

DEFAULT_URL = "sqlite+aiosqlite:///./civicbot.db"  # as bot.settings.Settings.database_url

config = context.config
target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_new_engine() -> None:
    # Read the URL straight from the environment: storage never imports the application.
    from storage.db import create_engine

    engine = create_engine(os.environ.get("CIVICBOT_DATABASE_URL", DEFAULT_URL))
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_with_new_engine())
