"""PostgreSQL fast path for the batch commit: COPY into a temporary staging table, then one
short INSERT ... SELECT ... ON CONFLICT merge.

Why: a multi-row INSERT of a whole batch is a ~100 KB statement that psycopg re-parses in
Python on every batch (its statement cache stops at 4 KB); COPY streams the rows and the
merge statement is short and constant. Same guarantees as the generic path: the sequence
guard is in the merge's WHERE, RETURNING says which rows were applied, and everything runs in
the caller's transaction (the staging tables are ON COMMIT DELETE ROWS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

USAGE_COLUMNS = ("resource_uuid", "component_type", "billing_period", "plan_period_uuid",
                 "amount", "description", "recurring", "missing_usage_policy", "date",
                 "report_id", "report_seq", "updated_at")
REPORT_COLUMNS = ("id", "seq", "customer_uuid", "resource_uuid", "billing_period",
                  "accepted_at", "token", "payload", "envelope", "state", "reason_code",
                  "reason", "deliveries", "committed_at")

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_usages (
    resource_uuid uuid, component_type text, billing_period date, plan_period_uuid uuid,
    amount numeric(20, 2), description text, recurring boolean, missing_usage_policy text,
    date timestamptz, report_id text, report_seq bigint, updated_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_reports (
    id text, seq bigint, customer_uuid uuid, resource_uuid uuid, billing_period date,
    accepted_at timestamptz, token text, payload text, envelope bytea, state text,
    reason_code text, reason text, deliveries integer, committed_at timestamptz
) ON COMMIT DELETE ROWS;
"""

_UPDATED = ("plan_period_uuid", "amount", "description", "recurring", "missing_usage_policy",
            "date", "report_id", "report_seq", "updated_at")

_MERGE_USAGES = f"""
INSERT INTO component_usages ({", ".join(USAGE_COLUMNS)})
SELECT {", ".join(USAGE_COLUMNS)} FROM stage_usages
ORDER BY resource_uuid, component_type, billing_period
ON CONFLICT (resource_uuid, component_type, billing_period) DO UPDATE
SET {", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED)}
WHERE component_usages.report_seq < EXCLUDED.report_seq
RETURNING resource_uuid, component_type, billing_period, report_seq
"""

_MERGE_REPORTS = f"""
INSERT INTO usage_reports ({", ".join(REPORT_COLUMNS)})
SELECT {", ".join(REPORT_COLUMNS)} FROM stage_reports
ON CONFLICT (id) DO UPDATE
SET state = EXCLUDED.state, reason_code = EXCLUDED.reason_code, reason = EXCLUDED.reason,
    deliveries = EXCLUDED.deliveries, committed_at = EXCLUDED.committed_at
WHERE usage_reports.state IN ('queued', 'quarantined')
"""


def _stage(conn: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    cursor = conn.cursor()
    if not conn.info.__dict__.get("_ingest_staging"):
        cursor.execute(_STAGING)
        conn.info.__dict__["_ingest_staging"] = True
    cursor.execute(f"DELETE FROM {table}")
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return cursor


def upsert_usages(conn: Any, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """``rows`` in USAGE_COLUMNS order; returns the (resource, component, period, seq) applied."""
    cursor = _stage(conn, "stage_usages", USAGE_COLUMNS, rows)
    cursor.execute(_MERGE_USAGES)
    return list(cursor.fetchall())


def record_reports(conn: Any, rows: Sequence[Sequence[Any]]) -> None:
    cursor = _stage(conn, "stage_reports", REPORT_COLUMNS, rows)
    cursor.execute(_MERGE_REPORTS)
