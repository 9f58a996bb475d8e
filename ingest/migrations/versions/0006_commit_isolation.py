"""a quarantined report holds no acceptance sequence against others

UNIQUE(seq) on usage_reports covered every row, quarantined ones included. When Redis handed
out a sequence again (an AOF that lost its last second, a failover), the report carrying it
collided with the committed report that first had it; the commit split the batch down to
that report and tried to quarantine it, and its quarantine record, carrying the same
sequence, collided too: the batch was abandoned, redelivered and abandoned again, for ever.

The uniqueness now covers only reports that applied or could apply usage (queued, committed,
superseded): a partial unique index where state <> 'quarantined'. A quarantined record keeps
its sequence (quarantine list orders by it, replay re-drives with it) but can always be
written; replaying it re-enters the index, so a sequence that still belongs to another report
keeps it quarantined (reason ``sequence_reused``) instead of committing it twice.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NOT_QUARANTINED = sa.text("state <> 'quarantined'")
QUARANTINED = sa.text("state = 'quarantined'")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite drops a table constraint by copying the table; the partial index of 0005 is
        # dropped and made again around the copy so that it keeps its WHERE clause
        op.drop_index("ix_usage_reports_quarantined", table_name="usage_reports")
        with op.batch_alter_table("usage_reports", recreate="always") as batch:
            batch.drop_constraint("uq_usage_reports_seq", type_="unique")
        op.create_index("ix_usage_reports_quarantined", "usage_reports", ["seq"], sqlite_where=QUARANTINED)
    else:
        op.drop_constraint("uq_usage_reports_seq", "usage_reports", type_="unique")
    op.create_index(
        "uq_usage_reports_seq_live",
        "usage_reports",
        ["seq"],
        unique=True,
        postgresql_where=NOT_QUARANTINED,
        sqlite_where=NOT_QUARANTINED,
    )


def downgrade() -> None:
    # fails while two records share a sequence (a quarantined reused one): purge or fix those
    op.drop_index("uq_usage_reports_seq_live", table_name="usage_reports")
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_usage_reports_quarantined", table_name="usage_reports")
        with op.batch_alter_table("usage_reports", recreate="always") as batch:
            batch.create_unique_constraint("uq_usage_reports_seq", ["seq"])
        op.create_index("ix_usage_reports_quarantined", "usage_reports", ["seq"], sqlite_where=QUARANTINED)
    else:
        op.create_unique_constraint("uq_usage_reports_seq", "usage_reports", ["seq"])
