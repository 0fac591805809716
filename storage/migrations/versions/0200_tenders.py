"""tender alerts: OCDS releases and compiled processes, organisations, subscriptions, alerts,
interest, introductions, and where each live feed has got to

Revision ID: 0200
Revises: 0100
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0200"
down_revision: str | None = "0100"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tender_feed_state",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("next_page", sa.Text(), nullable=True),
        sa.Column("since", sa.String(length=40), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("releases", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )
    op.create_table(
        "tender_processes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ocid", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("buyer", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("value_amount", sa.Float(), nullable=True),
        sa.Column("value_min", sa.Float(), nullable=True),
        sa.Column("value_max", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("cpv", sa.JSON(), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("sme", sa.Boolean(), nullable=True),
        sa.Column("vcse", sa.Boolean(), nullable=True),
        sa.Column("reserved", sa.Boolean(), nullable=False),
        sa.Column("framework", sa.Boolean(), nullable=False),
        sa.Column("dps", sa.Boolean(), nullable=False),
        sa.Column("social_value", sa.Float(), nullable=True),
        sa.Column("procurement_method", sa.String(length=200), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("lots", sa.JSON(), nullable=False),
        sa.Column("compiled", sa.JSON(), nullable=False),
        sa.Column("release_count", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("alerted", sa.JSON(), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("cancel_told", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ocid"),
    )
    with op.batch_alter_table("tender_processes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tender_processes_deadline"), ["deadline"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_tender_processes_status"), ["status"], unique=False)
    op.create_table(
        "tender_releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ocid", sa.String(length=200), nullable=False),
        sa.Column("release_id", sa.String(length=200), nullable=False),
        sa.Column("date", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ocid", "release_id", name="uq_tender_release"),
    )
    with op.batch_alter_table("tender_releases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tender_releases_ocid"), ["ocid"], unique=False)
    op.create_table(
        "tender_orgs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=True),
        sa.Column("contact_details", sa.String(length=300), nullable=False),
        sa.Column("listed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("contact_id"),
    )
    op.create_table(
        "tender_interests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("process_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["tender_orgs.id"],
        ),
        sa.ForeignKeyConstraint(
            ["process_id"],
            ["tender_processes.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "process_id", name="uq_tender_interest"),
    )
    with op.batch_alter_table("tender_interests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tender_interests_org_id"), ["org_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_tender_interests_process_id"), ["process_id"], unique=False
        )
    op.create_table(
        "tender_introductions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("process_id", sa.Integer(), nullable=False),
        sa.Column("from_org_id", sa.Integer(), nullable=False),
        sa.Column("to_org_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("asked_sent", sa.Boolean(), nullable=False),
        sa.Column("result_sent", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["from_org_id"],
            ["tender_orgs.id"],
        ),
        sa.ForeignKeyConstraint(
            ["process_id"],
            ["tender_processes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["to_org_id"],
            ["tender_orgs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("process_id", "from_org_id", "to_org_id", name="uq_tender_intro"),
    )
    with op.batch_alter_table("tender_introductions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tender_introductions_from_org_id"), ["from_org_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tender_introductions_process_id"), ["process_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tender_introductions_to_org_id"), ["to_org_id"], unique=False
        )
    op.create_table(
        "tender_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("cpv", sa.JSON(), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("min_value", sa.Float(), nullable=True),
        sa.Column("max_value", sa.Float(), nullable=True),
        sa.Column("vcse_only", sa.Boolean(), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_digest_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["tender_orgs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tender_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tender_subscriptions_contact_id"), ["contact_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tender_subscriptions_next_digest_at"), ["next_digest_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tender_subscriptions_org_id"), ["org_id"], unique=False
        )
    op.create_table(
        "tender_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("process_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("broadcast_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["process_id"],
            ["tender_processes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["tender_subscriptions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id", "process_id", "revision", name="uq_tender_alert"),
    )
    with op.batch_alter_table("tender_alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tender_alerts_process_id"), ["process_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_tender_alerts_sent_at"), ["sent_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_tender_alerts_subscription_id"), ["subscription_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tender_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tender_alerts_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_tender_alerts_sent_at"))
        batch_op.drop_index(batch_op.f("ix_tender_alerts_process_id"))
    op.drop_table("tender_alerts")
    with op.batch_alter_table("tender_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tender_subscriptions_org_id"))
        batch_op.drop_index(batch_op.f("ix_tender_subscriptions_next_digest_at"))
        batch_op.drop_index(batch_op.f("ix_tender_subscriptions_contact_id"))
    op.drop_table("tender_subscriptions")
    with op.batch_alter_table("tender_introductions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tender_introductions_to_org_id"))
        batch_op.drop_index(batch_op.f("ix_tender_introductions_process_id"))
        batch_op.drop_index(batch_op.f("ix_tender_introductions_from_org_id"))
    op.drop_table("tender_introductions")
    with op.batch_alter_table("tender_interests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tender_interests_process_id"))
        batch_op.drop_index(batch_op.f("ix_tender_interests_org_id"))
    op.drop_table("tender_interests")
    op.drop_table("tender_orgs")
    with op.batch_alter_table("tender_releases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tender_releases_ocid"))
    op.drop_table("tender_releases")
    with op.batch_alter_table("tender_processes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tender_processes_status"))
        batch_op.drop_index(batch_op.f("ix_tender_processes_deadline"))
    op.drop_table("tender_processes")
    op.drop_table("tender_feed_state")
