"""outbox send attempts (attempt id, claiming dispatcher, in-flight time); digests of erased
messages' provider ids

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forgotten_provider_ids",
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    with op.batch_alter_table("forgotten_provider_ids", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_forgotten_provider_ids_forgotten_at"), ["forgotten_at"], unique=False
        )
    with op.batch_alter_table("outbound_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("in_flight_since", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_outbound_messages_attempt_id"), ["attempt_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outbound_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbound_messages_attempt_id"))
        batch_op.drop_column("in_flight_since")
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("attempt_id")
    with op.batch_alter_table("forgotten_provider_ids", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_forgotten_provider_ids_forgotten_at"))
    op.drop_table("forgotten_provider_ids")
