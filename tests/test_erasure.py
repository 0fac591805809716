"""The erasure registry: every table that points at a contact, or has a column that looks
personal, says what FORGET does to it. A new domain table without a rule fails here."""

from __future__ import annotations

from sqlmodel import SQLModel

from storage import erasure, schema


def personal_columns(table_name: str) -> set[str]:
    table = SQLModel.metadata.tables[table_name]
    found = set()
    for column in table.columns:
        points_at_contact = any(fk.column.table.name == "contacts" for fk in column.foreign_keys)
        if points_at_contact or column.name in erasure.PERSONAL_COLUMNS:
            found.add(column.name)
    return found


def test_every_table_with_personal_data_has_an_erasure_rule() -> None:
    assert schema.TABLE_MODULES  # every module with tables is imported
    covered: dict[str, set[str]] = {}
    for rule in erasure.rules():
        covered.setdefault(rule.table.name, set()).update(rule.covers())
    exempt = erasure.declared_not_personal()
    problems = []
    for name in sorted(SQLModel.metadata.tables):
        wanted = personal_columns(name)
        if name == "contacts":
            wanted |= {"postcode", "ward_code", "language", "consent_at", "opted_out_at"}
        if not wanted or name in exempt:
            continue
        missing = wanted - covered.get(name, set())
        if missing:
            problems.append(f"{name}: no erasure rule covers {sorted(missing)}")
    assert not problems, (
        "register what FORGET does with these (storage/erasure.py): " + "; ".join(problems)
    )


def test_exemptions_say_why_and_name_real_tables() -> None:
    for name, why in erasure.declared_not_personal().items():
        assert name in SQLModel.metadata.tables and len(why) > 20
