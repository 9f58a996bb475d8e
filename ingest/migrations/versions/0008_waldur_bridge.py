"""the Waldur bridge: usage_outbox, forward_failures, waldur_sync_state

usage_outbox holds one row per (resource, billing period) whose usage Waldur must see,
marked by the commit transaction itself; forward_failures is the forward quarantine;
waldur_sync_state is one row about the last catalog sync.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_outbox",
        sa.Column("resource_uuid", sa.Uuid(), nullable=False),
        sa.Column("billing_period", sa.Date(), nullable=False),
        sa.Column("dirty_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("dirty_since", WHEN, nullable=True),
        sa.Column("pending_reports", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("acked_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("acked_values", sa.Text(), nullable=True),
        sa.Column("acked_at", WHEN, nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", WHEN, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", WHEN, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("resource_uuid", "billing_period", name="pk_usage_outbox"),
    )
    op.create_index(
        "ix_usage_outbox_dirty",
        "usage_outbox",
        ["dirty_since"],
        postgresql_where=sa.text("dirty_since IS NOT NULL"),
        sqlite_where=sa.text("dirty_since IS NOT NULL"),
    )
    op.create_table(
        "forward_failures",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("resource_uuid", sa.Uuid(), nullable=False),
        sa.Column("billing_period", sa.Date(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("request", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("resolved_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_forward_failures"),
    )
    op.create_index("ix_forward_failures_resource_uuid", "forward_failures", ["resource_uuid"])
    op.create_table(
        "waldur_sync_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("watermark", WHEN, nullable=True),
        sa.Column("last_sync_at", WHEN, nullable=True),
        sa.Column("last_full_at", WHEN, nullable=True),
        sa.Column("last_summary", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", WHEN, nullable=True),
        sa.Column("server_version", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_waldur_sync_state"),
    )


def downgrade() -> None:
    op.drop_table("waldur_sync_state")
    op.drop_index("ix_forward_failures_resource_uuid", table_name="forward_failures")
    op.drop_table("forward_failures")
    op.drop_index("ix_usage_outbox_dirty", table_name="usage_outbox")
    op.drop_table("usage_outbox")
