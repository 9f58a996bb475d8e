"""PostgreSQL fast path for the batch commit: COPY into a temporary staging table, then one
short INSERT ... SELECT ... ON CONFLICT merge.

Why: a multi-row INSERT of a whole batch is a ~100 KB statement that psycopg re-parses in
Python on every batch (its statement cache stops at 4 KB); COPY streams the rows and the
merge statement is short and constant. Same guarantees as the generic path: the sequence
guard is in the merge's WHERE, RETURNING says which rows were applied, and everything runs in
the caller's transaction (the staging tables are ON COMMIT DELETE ROWS). The column lists
come from tables.py, as the generic path's do.

The staging tables are created once per connection, when the pool opens it (make_engine).
The flag that used to say "created" lived on psycopg's ``conn.info``, which psycopg 3.3
builds anew on every access: the CREATE ran before every COPY.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import FromClause
from sqlalchemy.dialects import postgresql

from ingest.adapters.sql import tables as t
from ingest.services.ports import OutboxMark, ReportRecord, UsageRow

# The COPY fields, in the order _usage_line and _report_line write them.
USAGE_COLUMNS = t.USAGE_COLUMNS
REPORT_COLUMNS = t.REPORT_COLUMNS


def _staging_table(name: str, table: FromClause, columns: Sequence[str]) -> str:
    """A temporary table with the column types of ``table`` (its PostgreSQL types, from the
    SQLAlchemy model) and none of its constraints or defaults: the merge checks those."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    fields = ", ".join(f"{c} {table.c[c].type.compile(dialect=dialect)}" for c in columns)
    return f"CREATE TEMP TABLE IF NOT EXISTS {name} ({fields}) ON COMMIT DELETE ROWS;\n"


# Run once per connection (make_engine's connect event), in a transaction of its own: created
# inside a batch's transaction, the tables would vanish with a rolled-back batch.
STAGING_DDL = _staging_table("stage_usages", t.ComponentUsage.__table__, USAGE_COLUMNS) + _staging_table(
    "stage_reports", t.UsageReport.__table__, REPORT_COLUMNS
)

_MERGE_USAGES = f"""
INSERT INTO component_usages ({", ".join(USAGE_COLUMNS)})
SELECT {", ".join(USAGE_COLUMNS)} FROM stage_usages
ORDER BY {", ".join(t.USAGE_KEY)}
ON CONFLICT ({", ".join(t.USAGE_KEY)}) DO UPDATE
SET {", ".join(f"{c} = EXCLUDED.{c}" for c in t.USAGE_UPDATED)}
WHERE component_usages.report_seq < EXCLUDED.report_seq
RETURNING report_seq
"""

_MERGE_REPORTS = f"""
INSERT INTO usage_reports ({", ".join(REPORT_COLUMNS)})
SELECT {", ".join(REPORT_COLUMNS)} FROM stage_reports
ON CONFLICT (id) DO UPDATE
SET {", ".join(f"{c} = EXCLUDED.{c}" for c in t.REPORT_UPDATED)}
WHERE usage_reports.state IN ({", ".join(f"'{s}'" for s in t.REPORT_REPLACEABLE)})
"""


def create_staging(dbapi_conn: Any) -> None:
    """Create the staging tables on a new psycopg connection and commit (see STAGING_DDL)."""
    with dbapi_conn.cursor() as cursor:
        cursor.execute(STAGING_DDL)
    if not dbapi_conn.autocommit:
        dbapi_conn.commit()


# COPY text format: backslash, tab, newline and carriage return are escaped; \N is NULL.
NULL = "\\N"


def _special(value: str) -> bool:
    """Whether ``value`` has a character COPY text must escape. Four substring scans run in
    C and took 0.1 us for a report record's text; one regular expression took 1.7 us."""
    return "\\" in value or "\t" in value or "\n" in value or "\r" in value


def _text(value: str) -> str:
    if _special(value):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


# psycopg's write_row adapts every value through a dumper (10 us a row, the largest single
# cost of a worker); the rows arrive in text form already, so the lines are formatted here.
# The text fields of a row are checked for special characters together, and escaped one by
# one only when one of them has any.
def _escaped(*fields: str) -> tuple[str, ...]:
    return tuple(_text(f) for f in fields) if _special("".join(fields)) else fields


def _usage_line(r: UsageRow, now: str) -> str:
    k = r.key
    component, description, policy, amount, date, report_id = _escaped(
        k.component, r.description, r.missing_usage_policy, r.amount, r.date, r.report_id
    )
    return (
        f"{k.resource}\t{component}\t{k.billing_period}\t{r.plan_period or NULL}\t{amount}\t"
        f"{description}\t{'t' if r.recurring else 'f'}\t{policy}\t{date}\t{report_id}\t"
        f"{r.seq}\t{now}\n"
    )


def _report_line(r: ReportRecord) -> str:
    envelope = "\\\\x" + r.envelope.hex() if r.envelope else NULL
    report_id, customer, token, payload = _escaped(r.id, r.customer, r.token, r.payload)
    return (
        f"{report_id}\t{r.seq}\t{customer}\t{_text_or_null(r.resource)}\t"
        f"{_text_or_null(r.billing_period)}\t{r.accepted_at.isoformat()}\t"
        f"{token}\t{payload}\t{envelope}\t{r.state}\t"
        f"{_text_or_null(r.reason_code)}\t{_text_or_null(r.reason)}\t{r.deliveries}\t"
        f"{r.committed_at.isoformat() if r.committed_at else NULL}\n"
    )


def _text_or_null(value: str | None) -> str:
    return NULL if value is None else _text(value)


def _stage(conn: Any, table: str, columns: Sequence[str], data: str) -> Any:
    cursor = conn.cursor()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(data.encode())
    return cursor


def upsert_usages(conn: Any, rows: Sequence[UsageRow], now: dt.datetime) -> set[int]:
    """Returns the sequences of the rows applied (the merge's RETURNING)."""
    stamp = now.isoformat()
    cursor = _stage(conn, "stage_usages", USAGE_COLUMNS, "".join([_usage_line(r, stamp) for r in rows]))
    cursor.execute(_MERGE_USAGES)
    return {row[0] for row in cursor.fetchall()}


def record_reports(conn: Any, records: Sequence[ReportRecord]) -> None:
    cursor = _stage(conn, "stage_reports", REPORT_COLUMNS, "".join([_report_line(r) for r in records]))
    cursor.execute(_MERGE_REPORTS)


# The bridge's outbox marking: one statement per batch over arrays (constant text, no COPY
# for a few hundred keys), inserted in key order so concurrent batches lock rows in the same
# order. A key in the forward quarantine (failed) becomes dirty again, its attempts reset.
_MARK_OUTBOX = """
INSERT INTO usage_outbox (resource_uuid, billing_period, dirty_seq, dirty_since, pending_reports,
                          acked_seq, attempts, failed)
SELECT m.r, m.p, m.s, %s, m.n, 0, 0, false
FROM unnest(%s::uuid[], %s::date[], %s::bigint[], %s::int[]) AS m(r, p, s, n)
ORDER BY m.r, m.p
ON CONFLICT (resource_uuid, billing_period) DO UPDATE SET
  dirty_seq = GREATEST(usage_outbox.dirty_seq, EXCLUDED.dirty_seq),
  dirty_since = COALESCE(usage_outbox.dirty_since, EXCLUDED.dirty_since),
  pending_reports = usage_outbox.pending_reports + EXCLUDED.pending_reports,
  attempts = CASE WHEN usage_outbox.failed THEN 0 ELSE usage_outbox.attempts END,
  next_attempt_at = CASE WHEN usage_outbox.failed THEN NULL ELSE usage_outbox.next_attempt_at END,
  failed = false
"""


def mark_outbox(conn: Any, marks: Sequence[OutboxMark], now: dt.datetime) -> None:
    with conn.cursor() as cursor:
        cursor.execute(
            _MARK_OUTBOX,
            (
                now,
                [m.resource for m in marks],
                [m.billing_period for m in marks],
                [m.seq for m in marks],
                [m.reports for m in marks],
            ),
        )
