"""journal_state: the Redis journal epoch SQL trusts, to detect a Redis that lost data

One row, written by the epoch check (reconciler and web background thread). Acceptance
sequences need no migration: the clock sequence (accept.lua) starts far above every counter
sequence already in SQL, so old rows keep their order below the new ones.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journal_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.String(64), nullable=True),
        sa.Column("floor_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("committed_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("committed_accepted_at", sa.Float(), nullable=True),
        sa.Column("verified_id", sa.String(64), nullable=True),
        sa.Column("verified_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("safe_since", sa.Float(), nullable=True),
        sa.Column("checked_at", sa.Float(), nullable=True),
        sa.Column("adopted_at", sa.Float(), nullable=True),
        sa.Column("losses", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_loss_at", sa.Float(), nullable=True),
        sa.Column("last_loss", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_journal_state"),
    )


def downgrade() -> None:
    op.drop_table("journal_state")
