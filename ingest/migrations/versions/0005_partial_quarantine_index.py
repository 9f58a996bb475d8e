"""index only quarantined reports: the commit path no longer pays an index entry per report

Every read that filtered on state asks for quarantined reports (quarantine list, show,
replay, purge), ordered by sequence; committed and superseded reports, nearly all rows, were
in the (state, accepted_at) index only to be skipped. A partial index on seq where state is
'quarantined' serves those reads and costs the commit path nothing.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

QUARANTINED = sa.text("state = 'quarantined'")


def upgrade() -> None:
    op.create_index("ix_usage_reports_quarantined", "usage_reports", ["seq"],
                    postgresql_where=QUARANTINED, sqlite_where=QUARANTINED)
    op.drop_index("ix_usage_reports_state_accepted", table_name="usage_reports")


def downgrade() -> None:
    op.create_index("ix_usage_reports_state_accepted", "usage_reports", ["state", "accepted_at"])
    op.drop_index("ix_usage_reports_quarantined", table_name="usage_reports")
