"""Every module that defines tables, imported here so that ``SQLModel.metadata`` (migrations,
the schema test) and the erasure registry (:mod:`storage.erasure`) know them all. A domain
that adds tables adds its module to this list."""

from __future__ import annotations

from storage import (
    admin,
    broadcasts,
    coordination,
    models,
    needs,
    pb_rounds,
    phone_links,
    polls,
    tenders,
)

TABLE_MODULES = (
    models, polls, broadcasts, needs, tenders, admin, pb_rounds, phone_links, coordination
)
