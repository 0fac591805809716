"""needs assessments, census populations, responses and "about you" answers; a group poll
linked to an assessment

Revision ID: 0100
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0100"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "needs_assessments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.JSON(), nullable=False),
        sa.Column("wards", sa.JSON(), nullable=True),
        _ts("opens_at", nullable=False),
        _ts("closes_at", nullable=False),
        sa.Column("picks", sa.Integer(), nullable=False),
        sa.Column("ask_free_text", sa.Boolean(), nullable=False),
        sa.Column("about_you", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("announce", sa.Boolean(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("opened_at"),
        _ts("closed_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("needs_assessments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_needs_assessments_opens_at"), ["opens_at"])
        batch_op.create_index(batch_op.f("ix_needs_assessments_closes_at"), ["closes_at"])
    op.create_table(
        "census_populations",
        sa.Column("ward_code", sa.String(length=32), nullable=False),
        sa.Column("dimension", sa.String(length=64), nullable=False),
        sa.Column("group_name", sa.String(length=100), nullable=False),
        sa.Column("group_cy", sa.String(length=100), nullable=True),
        sa.Column("population", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["ward_code"], ["wards.code"]),
        sa.PrimaryKeyConstraint("ward_code", "dimension", "group_name"),
    )
    op.create_table(
        "needs_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assessment_id", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("respondent_key", sa.String(length=32), nullable=True),
        sa.Column("ward_code", sa.String(length=32), nullable=True),
        sa.Column("picks", sa.JSON(), nullable=False),
        sa.Column("free_text", sa.String(length=500), nullable=True),
        sa.Column("demographics", sa.JSON(), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.ForeignKeyConstraint(["assessment_id"], ["needs_assessments.id"]),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assessment_id", "contact_id", name="uq_needs_response_contact"),
    )
    with op.batch_alter_table("needs_responses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_needs_responses_assessment_id"), ["assessment_id"])
        batch_op.create_index(batch_op.f("ix_needs_responses_contact_id"), ["contact_id"])
    op.create_table(
        "needs_profiles",
        sa.Column("contact_id", sa.Integer(), nullable=False),
        _ts("consent_at"),
        _ts("declined_at"),
        _ts("updated_at", nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.PrimaryKeyConstraint("contact_id"),
    )
    op.create_table(
        "needs_profile_answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("dimension", sa.String(length=64), nullable=False),
        sa.Column("group_name", sa.String(length=100), nullable=False),
        _ts("answered_at", nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("contact_id", "dimension", name="uq_needs_profile_dimension"),
    )
    with op.batch_alter_table("needs_profile_answers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_needs_profile_answers_contact_id"), ["contact_id"])
    with op.batch_alter_table("telegram_polls", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("needs_assessment_id", sa.String(length=64), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_telegram_polls_needs_assessment_id"), ["needs_assessment_id"]
        )
        batch_op.create_foreign_key(
            "fk_telegram_polls_needs_assessment_id",
            "needs_assessments",
            ["needs_assessment_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("telegram_polls", schema=None) as batch_op:
        batch_op.drop_constraint("fk_telegram_polls_needs_assessment_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_telegram_polls_needs_assessment_id"))
        batch_op.drop_column("needs_assessment_id")
    with op.batch_alter_table("needs_profile_answers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_needs_profile_answers_contact_id"))
    op.drop_table("needs_profile_answers")
    op.drop_table("needs_profiles")
    with op.batch_alter_table("needs_responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_needs_responses_contact_id"))
        batch_op.drop_index(batch_op.f("ix_needs_responses_assessment_id"))
    op.drop_table("needs_responses")
    op.drop_table("census_populations")
    with op.batch_alter_table("needs_assessments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_needs_assessments_closes_at"))
        batch_op.drop_index(batch_op.f("ix_needs_assessments_opens_at"))
    op.drop_table("needs_assessments")
