"""SQL engine and the usage store: the transaction in which a batch of reports is committed."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, case, create_engine, event, func, make_url, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from ingest.adapters.sql import pg_copy
from ingest.adapters.sql import tables as t
from ingest.domain.errors import Transient
from ingest.domain.ids import uuid_or_none
from ingest.services.ports import OutboxMark, ReportRecord, SequenceTaken, UsageRow


def make_engine(url: str, pool_size: int = 5) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    engine = create_engine(
        url, pool_size=pool_size, pool_pre_ping=True, pool_recycle=1800, connect_args=pg_connect_args(url)
    )

    @event.listens_for(engine, "connect")
    def _staging(dbapi_conn: Any, _record: Any) -> None:
        pg_copy.create_staging(dbapi_conn)  # once per connection, committed on its own

    return engine


# libpq's defaults wait for ever: a connect to a server that does not answer (a firewall
# drops the packets, a host gone) would hang a web or worker process instead of failing as a
# transient error, and a connection whose server vanished would wait for TCP's ~2-hour
# timeout. A DATABASE_URL query (``?connect_timeout=10``) overrides each of them.
PG_CONNECT_DEFAULTS = {
    "connect_timeout": 5,  # seconds for the whole connection start-up
    "keepalives": 1,
    "keepalives_idle": 30,  # then a probe every 10 s; 3 unanswered: the connection is dead
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def pg_connect_args(url: str) -> dict[str, Any]:
    """PG_CONNECT_DEFAULTS less what the URL's query sets; none with a libpq service
    (``?service=``: its file decides). An argument given here overrides libpq's PG*
    environment variables too: set those in the URL instead."""
    given = make_url(url).query
    if "service" in given:
        return {}
    return {key: value for key, value in PG_CONNECT_DEFAULTS.items() if key not in given}


def dialect_insert(session: Session, table: Any) -> Any:
    name = session.get_bind().dialect.name
    module = postgresql if name == "postgresql" else sqlite
    return module.insert(table)


TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08003", "08006"}


def is_transient(exc: BaseException) -> bool:
    """Connection loss, server shutdown, deadlock, serialization failure, SQLite busy.

    The PostgreSQL COPY path talks to psycopg directly, so its errors arrive unwrapped
    (``psycopg.OperationalError``, not SQLAlchemy's): those are recognised too."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    return type(orig).__module__.startswith("psycopg") and any(
        cls.__name__ == "OperationalError" for cls in type(orig).__mro__
    )


def sequence_taken(exc: BaseException) -> bool:
    """Whether ``exc`` is a violation of the unique index on usage_reports.seq (a sequence
    Redis handed out twice). PostgreSQL names the index; SQLite names the column."""
    orig = getattr(exc, "orig", None) or exc
    constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
    if constraint is not None:
        return bool(constraint == t.SEQ_INDEX)
    text_ = str(orig)
    return t.SEQ_INDEX in text_ or "UNIQUE constraint failed: usage_reports.seq" in text_


class SqlUnitOfWork:
    """One database transaction; ``commit`` makes every write of the batch visible at once."""

    def __init__(self, engine: Engine) -> None:
        self.session = Session(engine, expire_on_commit=False)
        self.is_postgres = engine.dialect.name == "postgresql"

    def __enter__(self) -> SqlUnitOfWork:
        self.session.begin()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if self.session.in_transaction():
                self.session.rollback()
            self.session.close()
        except DBAPIError:
            pass  # the connection is gone; the pool discards it
        if exc is not None and not isinstance(exc, Transient) and is_transient(exc):
            raise Transient(str(exc)) from exc

    def commit(self) -> None:
        try:
            self.session.commit()
        except DBAPIError as exc:
            if is_transient(exc):
                raise Transient(str(exc.orig)) from exc
            raise

    def final_report_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        if not wanted:
            return set()
        if self.is_postgres:  # one array parameter instead of a 500-item IN list
            rows = self.session.execute(
                text("SELECT id FROM usage_reports WHERE id = ANY(:ids) AND state <> 'queued'"),
                {"ids": wanted},
            )
        else:
            rows = self.session.execute(
                select(t.UsageReport.id).where(t.UsageReport.id.in_(wanted), t.UsageReport.state != "queued")
            )
        return {row[0] for row in rows}

    def upsert_usages(self, rows: list[UsageRow]) -> set[int]:
        """Insert or overwrite rows whose stored sequence is lower; return the sequences of
        the rows applied."""
        if not rows:
            return set()
        now = dt.datetime.now(dt.UTC)
        if self.is_postgres:  # the merge inserts in key order: no deadlock between batches
            return pg_copy.upsert_usages(self._driver(), rows, now)
        table = t.ComponentUsage.__table__
        stmt = dialect_insert(self.session, table)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=list(t.USAGE_KEY),
            set_={name: excluded[name] for name in t.USAGE_UPDATED},
            where=table.c.report_seq < excluded.report_seq,
        ).returning(table.c.report_seq)
        params = [
            dict(zip(t.USAGE_COLUMNS, _usage_values(r, now), strict=True))
            for r in sorted(rows, key=lambda r: r.key)
        ]
        return {int(row.report_seq) for row in self.session.execute(stmt, params)}

    def _driver(self) -> Any:
        """The psycopg connection under this transaction (for COPY)."""
        return self.session.connection().connection.driver_connection

    def record_reports(self, records: list[ReportRecord]) -> None:
        """Write each report's final state; a report already recorded keeps its first outcome
        unless it was quarantined and is now being re-driven (replay)."""
        if not records:
            return
        try:
            self._record_reports(records)
        except Exception as exc:
            if sequence_taken(exc):
                raise SequenceTaken(str(getattr(exc, "orig", None) or exc).strip()[:500]) from exc
            raise

    def _record_reports(self, records: list[ReportRecord]) -> None:
        if self.is_postgres:
            pg_copy.record_reports(self._driver(), records)
            return
        table = t.UsageReport.__table__
        stmt = dialect_insert(self.session, table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={name: stmt.excluded[name] for name in t.REPORT_UPDATED},
            # no IN (...) here: expanding parameters cannot be used with executemany
            where=or_(*[table.c.state == state for state in t.REPORT_REPLACEABLE]),
        )
        params = [dict(zip(t.REPORT_COLUMNS, _report_values(r), strict=True)) for r in records]
        self.session.execute(stmt, params)

    def mark_outbox(self, marks: list[OutboxMark], now: dt.datetime) -> None:
        """Mark keys dirty for the Waldur forwarder (see ports.UnitOfWork.mark_outbox)."""
        if not marks:
            return
        if self.is_postgres:
            pg_copy.mark_outbox(self._driver(), marks, now)
            return
        table = t.UsageOutbox.__table__
        stmt = dialect_insert(self.session, table)
        new, old = stmt.excluded, table.c
        stmt = stmt.on_conflict_do_update(
            index_elements=["resource_uuid", "billing_period"],
            set_={
                "dirty_seq": func.max(old.dirty_seq, new.dirty_seq),  # SQLite's scalar max
                "dirty_since": func.coalesce(old.dirty_since, new.dirty_since),
                "pending_reports": old.pending_reports + new.pending_reports,
                "attempts": case((old.failed, 0), else_=old.attempts),
                "next_attempt_at": case((old.failed, None), else_=old.next_attempt_at),
                "failed": False,
            },
        )
        params = [
            {
                "resource_uuid": uuid.UUID(m.resource),
                "billing_period": dt.date.fromisoformat(m.billing_period),
                "dirty_seq": m.seq,
                "dirty_since": now,
                "pending_reports": m.reports,
                "acked_seq": 0,
                "attempts": 0,
                "failed": False,
            }
            for m in marks
        ]
        self.session.execute(stmt, params)

    def max_seq(self) -> int:
        value = self.session.execute(select(func.max(t.UsageReport.seq))).scalar()
        return int(value or 0)


def _usage_values(r: UsageRow, now: dt.datetime) -> tuple[Any, ...]:
    """A usage row's values in the order of tables.USAGE_COLUMNS (pg_copy's COPY fields)."""
    return (
        uuid.UUID(r.key.resource),
        r.key.component,
        dt.date.fromisoformat(r.key.billing_period),
        uuid_or_none(r.plan_period),
        Decimal(r.amount),
        r.description,
        r.recurring,
        r.missing_usage_policy,
        dt.datetime.fromisoformat(r.date),
        r.report_id,
        r.seq,
        now,
    )


def _report_values(r: ReportRecord) -> tuple[Any, ...]:
    """A report record's values in the order of tables.REPORT_COLUMNS."""
    return (
        r.id,
        r.seq,
        uuid.UUID(r.customer),
        uuid_or_none(r.resource),
        dt.date.fromisoformat(r.billing_period) if r.billing_period else None,
        r.accepted_at,
        r.token,
        r.payload,
        r.envelope,
        r.state,
        r.reason_code,
        r.reason,
        r.deliveries,
        r.committed_at,
    )
