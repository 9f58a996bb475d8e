"""secret rotation with overlap, per-provider rate limits, room for sealed secrets

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_providers") as batch_op:
        batch_op.alter_column("api_secret_code", type_=sa.String(512),
                              existing_type=sa.String(255), existing_nullable=True)
        batch_op.add_column(sa.Column("previous_secret", sa.String(512), nullable=True))
        batch_op.add_column(sa.Column("previous_secret_until", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("rate_limit", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("service_providers") as batch_op:
        batch_op.drop_column("rate_limit")
        batch_op.drop_column("previous_secret_until")
        batch_op.drop_column("previous_secret")
        batch_op.alter_column("api_secret_code", type_=sa.String(255),
                              existing_type=sa.String(512), existing_nullable=True)
