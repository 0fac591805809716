"""poll answers keep a keyed voter hash while the poll is open

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("telegram_poll_answers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("voter_key", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_poll_answer_voter_key", ["poll_id", "voter_key"])


def downgrade() -> None:
    with op.batch_alter_table("telegram_poll_answers", schema=None) as batch_op:
        batch_op.drop_constraint("uq_poll_answer_voter_key", type_="unique")
        batch_op.drop_column("voter_key")
