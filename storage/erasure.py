"""The erasure registry: what FORGET does to each table that holds personal data.

Each module that defines a table with personal data registers a :class:`Rule` for it next to
the table (``register(Rule(...))``), saying which rows belong to the person and whether they
are deleted or kept detached (with which columns blanked). :func:`erase` applies every rule
in one transaction. ``tests/test_erasure.py`` lists every table with a column that points at
a contact or looks personal (:data:`PERSONAL_COLUMNS`) and fails if a rule does not cover it,
so a new domain cannot silently leave personal data behind. A table whose personal-looking
columns are not about a resident says so with :func:`not_personal`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession

# Column names that hold, or could hold, something about a person.
PERSONAL_COLUMNS = frozenset(
    {
        "contact_id",
        "address",
        "postcode",
        "phone",
        "phone_number",
        "text",
        "free_text",
        "raw",
        "content",
        "provider_id",
        "user_id",
        "voter_key",
        "error",
        "email",
        "value",
        "demographics",
        "receipt",
        "display_name",
    }
)


@dataclass(frozen=True)
class Via:
    """Rows linked to the person through another table: ``column`` here holds an id of
    ``table`` (its ``id`` column), whose ``link`` column holds the contact id."""

    column: str
    table: Table
    link: str = "contact_id"


@dataclass(frozen=True)
class Rule:
    """What FORGET does to ``table``'s rows that belong to the person (``link`` = contact id,
    or :class:`Via` another table): delete them (``delete``), or keep them with ``blank``'s
    columns set (detached: ``blank`` includes the link column). ``delete_where`` deletes only
    the matching rows and blanks the rest. ``keeps`` names personal-looking columns kept on
    purpose, and why. Rules run in ``order`` (lower first)."""

    table: Table
    link: str = "contact_id"
    via: Via | None = None
    delete: bool = False
    delete_where: ColumnElement[bool] | None = None
    blank: Mapping[str, Any] = field(default_factory=dict)
    keeps: Mapping[str, str] = field(default_factory=dict)
    order: int = 50
    # Runs first, with the person's rows still there (to keep something anonymous of them).
    before: Callable[[AsyncSession, ColumnElement[bool], datetime], Awaitable[None]] | None = None

    def covers(self) -> set[str]:
        """The columns this rule takes care of."""
        if self.delete and self.delete_where is None:
            return {c.name for c in self.table.columns}
        return {self.via.column if self.via else self.link, *self.blank, *self.keeps}


def table_of(model: type[Any]) -> Table:
    """A SQLModel class's table."""
    table = inspect(model).local_table
    assert isinstance(table, Table)
    return table


_RULES: list[Rule] = []
_NOT_PERSONAL: dict[str, str] = {}


def register(rule: Rule) -> None:
    """Add a rule (at import time of the module defining the table)."""
    _RULES.append(rule)


def not_personal(table: Table, why: str) -> None:
    """Declare that ``table``'s personal-looking columns are not about a resident."""
    _NOT_PERSONAL[table.name] = why


def rules() -> list[Rule]:
    return sorted(_RULES, key=lambda r: r.order)


def declared_not_personal() -> dict[str, str]:
    return dict(_NOT_PERSONAL)


async def erase(session: AsyncSession, *, contact_id: int, now: datetime) -> None:
    """FORGET: apply every rule to the person's rows. The caller owns the transaction."""
    for rule in rules():
        table = rule.table
        if rule.via is not None:
            other = rule.via.table
            ids = select(other.c.id).where(other.c[rule.via.link] == contact_id)
            mine: ColumnElement[bool] = table.c[rule.via.column].in_(ids)
        else:
            mine = table.c[rule.link] == contact_id
        if rule.before is not None:
            await rule.before(session, mine, now)
        if rule.delete:
            condition = mine if rule.delete_where is None else mine & rule.delete_where
            await session.execute(delete(table).where(condition))
        if rule.blank:
            values = {k: (now if v is ERASED_AT else v) for k, v in rule.blank.items()}
            await session.execute(update(table).where(mine).values(**values))


class _ErasedAt:
    """Placeholder in ``blank``: the time of the erasure."""


ERASED_AT: Any = _ErasedAt()
