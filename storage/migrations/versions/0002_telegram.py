"""telegram groups and native polls

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "telegram_groups",
        sa.Column("chat_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ward_code", sa.String(length=32), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ward_code"], ["wards.code"]),
        sa.PrimaryKeyConstraint("chat_id"),
    )
    op.create_table(
        "telegram_polls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.String(length=32), nullable=False),
        sa.Column("question", sa.String(length=300), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("multiple", sa.Boolean(), nullable=False),
        sa.Column("telegram_poll_id", sa.String(length=64), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["chat_id"], ["telegram_groups.chat_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("telegram_poll_id"),
    )
    with op.batch_alter_table("telegram_polls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_telegram_polls_chat_id"), ["chat_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_telegram_polls_closes_at"), ["closes_at"], unique=False
        )

    op.create_table(
        "telegram_poll_answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("poll_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("option_ids", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.ForeignKeyConstraint(["poll_id"], ["telegram_polls.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("poll_id", "contact_id", name="uq_poll_answer_contact"),
    )
    with op.batch_alter_table("telegram_poll_answers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_telegram_poll_answers_contact_id"), ["contact_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_telegram_poll_answers_poll_id"), ["poll_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("telegram_poll_answers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_telegram_poll_answers_poll_id"))
        batch_op.drop_index(batch_op.f("ix_telegram_poll_answers_contact_id"))
    op.drop_table("telegram_poll_answers")
    with op.batch_alter_table("telegram_polls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_telegram_polls_closes_at"))
        batch_op.drop_index(batch_op.f("ix_telegram_polls_chat_id"))
    op.drop_table("telegram_polls")
    op.drop_table("telegram_groups")
