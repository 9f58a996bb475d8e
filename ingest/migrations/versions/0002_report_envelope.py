"""keep each report's queue envelope in SQL, so quarantine replay needs no journal

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_reports") as batch_op:
        batch_op.add_column(sa.Column("envelope", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_reports") as batch_op:
        batch_op.drop_column("envelope")
