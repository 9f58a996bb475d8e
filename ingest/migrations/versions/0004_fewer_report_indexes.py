"""drop two usage_reports indexes the commit path paid for on every report

Filters by customer or resource run on quarantined reports, which the (state, accepted_at)
index already narrows; report lookups go by primary key.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_reports") as batch_op:
        batch_op.drop_index("ix_usage_reports_customer_uuid")
        batch_op.drop_index("ix_usage_reports_resource")


def downgrade() -> None:
    with op.batch_alter_table("usage_reports") as batch_op:
        batch_op.create_index("ix_usage_reports_resource", ["resource_uuid"])
        batch_op.create_index("ix_usage_reports_customer_uuid", ["customer_uuid"])
