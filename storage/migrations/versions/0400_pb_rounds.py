"""participatory-budgeting rounds: rounds, their projects, residents' ideas and ballots

Revision ID: 0400
Revises: 0300
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0400"
down_revision: str | None = "0300"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "pb_rounds",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.JSON(), nullable=False),
        sa.Column("wards", sa.JSON(), nullable=True),
        sa.Column("budget", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("ballot", sa.JSON(), nullable=False),
        sa.Column("rule", sa.String(length=16), nullable=False),
        sa.Column("verification", sa.String(length=16), nullable=False),
        _ts("proposals_open"),
        _ts("proposals_close"),
        _ts("voting_open", nullable=False),
        _ts("voting_close", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("imported", sa.Boolean(), nullable=False),
        sa.Column("pabulib_meta", sa.JSON(), nullable=True),
        sa.Column("results", sa.JSON(), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("opened_at"),
        _ts("closed_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pb_rounds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pb_rounds_voting_open"), ["voting_open"])
        batch_op.create_index(batch_op.f("ix_pb_rounds_voting_close"), ["voting_close"])
        batch_op.create_index(batch_op.f("ix_pb_rounds_status"), ["status"])
    op.create_table(
        "pb_projects",
        sa.Column("round_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("ward_code", sa.String(length=32), nullable=True),
        sa.Column("category", sa.String(length=200), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.Column("proposal_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["round_id"], ["pb_rounds.id"]),
        sa.PrimaryKeyConstraint("round_id", "id"),
    )
    op.create_table(
        "pb_ballots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("voter_key", sa.String(length=64), nullable=False),
        sa.Column("vote", sa.JSON(), nullable=False),
        sa.Column("points", sa.JSON(), nullable=True),
        sa.Column("ward_code", sa.String(length=32), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("receipt", sa.String(length=16), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        _ts("cast_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["pb_rounds.id"]),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id", "contact_id", name="uq_pb_ballot_contact"),
        sa.UniqueConstraint("round_id", "voter_key", name="uq_pb_ballot_voter_key"),
    )
    with op.batch_alter_table("pb_ballots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pb_ballots_round_id"), ["round_id"])
        batch_op.create_index(batch_op.f("ix_pb_ballots_contact_id"), ["contact_id"])
    op.create_table(
        "pb_proposals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("ward_code", sa.String(length=32), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("content", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=True),
        _ts("created_at", nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["pb_rounds.id"]),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pb_proposals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pb_proposals_round_id"), ["round_id"])
        batch_op.create_index(batch_op.f("ix_pb_proposals_contact_id"), ["contact_id"])


def downgrade() -> None:
    op.drop_table("pb_proposals")
    op.drop_table("pb_ballots")
    op.drop_table("pb_projects")
    op.drop_table("pb_rounds")
