"""delivery reports that arrive before the send is recorded

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "held_delivery_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_status", sa.String(length=32), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("held_delivery_reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_held_delivery_reports_provider_id"), ["provider_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_held_delivery_reports_received_at"), ["received_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("held_delivery_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_held_delivery_reports_received_at"))
        batch_op.drop_index(batch_op.f("ix_held_delivery_reports_provider_id"))
    op.drop_table("held_delivery_reports")
