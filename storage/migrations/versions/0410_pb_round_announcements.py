"""PB rounds: which announcements of a round have been sent (restart-safe
notifications), and an imported Pabulib file's PROJECTS and VOTES column order

Revision ID: 0410
Revises: 0400
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0410"
down_revision: str | None = "0400"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pb_rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("announced", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("pabulib_columns", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pb_rounds", schema=None) as batch_op:
        batch_op.drop_column("pabulib_columns")
        batch_op.drop_column("announced")
