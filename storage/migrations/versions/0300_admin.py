"""admin web app: staff accounts, sessions and the login throttle; Telegram names on
identities; finished days' dashboard counts; the indexes the admin pages read through; an
append-only audit log

Revision ID: 0300
Revises: 0200
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0300"
down_revision: str | None = "0200"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, columns)
INDEXES = (
    (
        "ix_outbound_created_channel_status",
        "outbound_messages",
        ["created_at", "channel", "status"],
    ),
    ("ix_outbound_contact_id_id", "outbound_messages", ["contact_id", "id"]),
    ("ix_outbound_status_created", "outbound_messages", ["status", "created_at"]),
    ("ix_inbound_received_channel", "inbound_messages", ["received_at", "channel"]),
    ("ix_inbound_contact_id_id", "inbound_messages", ["contact_id", "id"]),
    ("ix_contacts_created_at", "contacts", ["created_at"]),
    ("ix_contacts_consent_at", "contacts", ["consent_at"]),
    ("ix_contacts_opted_out_at", "contacts", ["opted_out_at"]),
    ("ix_contacts_ward_language", "contacts", ["ward_code", "language", "erased_at"]),
    ("ix_identities_channel_contact", "channel_identities", ["channel", "contact_id"]),
    ("ix_identities_address_channel", "channel_identities", ["address", "channel"]),
    (
        "ix_broadcast_recipients_broadcast_outbound",
        "broadcast_recipients",
        ["broadcast_id", "outbound_id"],
    ),
    ("ix_outbound_id_status", "outbound_messages", ["id", "status"]),
    ("ix_audit_log_action_at", "audit_log", ["action", "at"]),
    ("ix_audit_log_actor_at", "audit_log", ["actor", "at"]),
)

# The audit log is append-only: the database itself refuses to change or delete an entry.
PG_TRIGGER = (
    """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only';
    END;
    $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
)
SQLITE_TRIGGERS = (
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=190), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["admin_users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("admin_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_sessions_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_admin_sessions_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "admin_login_throttle",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "admin_daily_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "metric"),
    )
    with op.batch_alter_table("channel_identities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_name", sa.String(length=128), nullable=True))
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column(
            "actor", existing_type=sa.String(length=64), type_=sa.String(length=200)
        )
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)
    op.create_index(
        "ix_outbound_errors_updated",
        "outbound_messages",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("error IS NOT NULL"),
        sqlite_where=sa.text("error IS NOT NULL"),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in PG_TRIGGER if postgresql else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    op.drop_index("ix_outbound_errors_updated", table_name="outbound_messages")
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column(
            "actor", existing_type=sa.String(length=200), type_=sa.String(length=64)
        )
    with op.batch_alter_table("channel_identities", schema=None) as batch_op:
        batch_op.drop_column("display_name")
    op.drop_table("admin_daily_counts")
    op.drop_table("admin_login_throttle")
    with op.batch_alter_table("admin_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_admin_sessions_user_id"))
    op.drop_table("admin_sessions")
    op.drop_table("admin_users")
