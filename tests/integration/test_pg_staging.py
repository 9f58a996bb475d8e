"""The PostgreSQL COPY path: its staging tables are created once per pooled connection, and
its COPY text and column lists stay what they were (the contract of the merge)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, text

from ingest.adapters.sql import pg_copy
from ingest.adapters.sql import tables as t
from ingest.adapters.sql.unit_of_work import SqlUnitOfWork, make_engine
from ingest.domain.model import UsageKey
from ingest.services.ports import ReportRecord, UsageRow
from tests.conftest import migrated_database

NOW = dt.datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=dt.UTC)
CUSTOMER = "3f2c1e4a-0000-4000-8000-0000000000cc"
RES1 = "3f2c1e4a-0000-4000-8000-000000000001"
RES2 = "3f2c1e4a-0000-4000-8000-000000000002"


def _rows() -> list[UsageRow]:
    when = "2026-11-27T12:00:00+00:00"
    return [
        UsageRow(UsageKey(RES1, "cpu_hours", "2026-11-01"), None, "12.50", "", False, "none", when, "r1", 7),
        UsageRow(
            UsageKey(RES2, "ram\tgb", "2026-11-01"),
            "3f2c1e4a-0000-4000-8000-0000000000aa",
            "4",
            "line\nbreak \\ back\rcr",
            True,
            "zero",
            when,
            "r2",
            8,
        ),
    ]


def _records() -> list[ReportRecord]:
    return [
        ReportRecord(
            "r1",
            7,
            CUSTOMER,
            RES1,
            "2026-11-01",
            NOW,
            "a.b.c",
            '{"x": 1}',
            "committed",
            None,
            None,
            1,
            NOW,
            b"\x00\xffenv",
        ),
        ReportRecord(
            "r\t2",
            8,
            CUSTOMER,
            None,
            None,
            NOW,
            "t\\ok",
            "p\nq",
            "quarantined",
            "bad",
            "why\tnot",
            3,
            None,
            b"",
        ),
    ]


# The COPY text the PostgreSQL path wrote before its column lists came from tables.py.
USAGE_COPY = (
    f"{RES1}\tcpu_hours\t2026-11-01\t\\N\t12.50\t\tf\tnone\t2026-11-27T12:00:00+00:00\tr1\t7\t"
    "2026-11-27T12:00:00.123456+00:00\n"
    f"{RES2}\tram\\tgb\t2026-11-01\t3f2c1e4a-0000-4000-8000-0000000000aa\t4\t"
    "line\\nbreak \\\\ back\\rcr\tt\tzero\t2026-11-27T12:00:00+00:00\tr2\t8\t"
    "2026-11-27T12:00:00.123456+00:00\n"
)
REPORT_COPY = (
    f"r1\t7\t{CUSTOMER}\t{RES1}\t2026-11-01\t2026-11-27T12:00:00.123456+00:00\ta.b.c\t"
    '{"x": 1}\t\\\\x00ff656e76\tcommitted\t\\N\t\\N\t1\t2026-11-27T12:00:00.123456+00:00\n'
    f"r\\t2\t8\t{CUSTOMER}\t\\N\t\\N\t2026-11-27T12:00:00.123456+00:00\tt\\\\ok\tp\\nq\t\\N\t"
    "quarantined\tbad\twhy\\tnot\t3\t\\N\n"
)


def test_copy_text_and_columns_are_unchanged() -> None:
    stamp = NOW.isoformat()
    assert "".join(pg_copy._usage_line(r, stamp) for r in _rows()) == USAGE_COPY  # noqa: SLF001
    assert "".join(pg_copy._report_line(r) for r in _records()) == REPORT_COPY  # noqa: SLF001
    assert pg_copy.USAGE_COLUMNS == (
        "resource_uuid",
        "component_type",
        "billing_period",
        "plan_period_uuid",
        "amount",
        "description",
        "recurring",
        "missing_usage_policy",
        "date",
        "report_id",
        "report_seq",
        "updated_at",
    )
    assert pg_copy.REPORT_COLUMNS == (
        "id",
        "seq",
        "customer_uuid",
        "resource_uuid",
        "billing_period",
        "accepted_at",
        "token",
        "payload",
        "envelope",
        "state",
        "reason_code",
        "reason",
        "deliveries",
        "committed_at",
    )


def test_one_list_of_updated_columns_for_both_paths() -> None:
    assert t.USAGE_KEY == ("resource_uuid", "component_type", "billing_period")
    assert t.USAGE_UPDATED == (
        "plan_period_uuid",
        "amount",
        "description",
        "recurring",
        "missing_usage_policy",
        "date",
        "report_id",
        "report_seq",
        "updated_at",
    )
    assert t.REPORT_UPDATED == ("state", "reason_code", "reason", "deliveries", "committed_at")
    # every column but the surrogate id is written by the commit
    assert set(t.USAGE_COLUMNS) == set(t.ComponentUsage.__table__.columns.keys()) - {"id"}
    assert set(t.REPORT_COLUMNS) == set(t.UsageReport.__table__.columns.keys())


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    yield from migrated_database("postgresql", tmp_path)


class _Counting(psycopg.Cursor[Any]):
    creates: list[str] = []

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        if "CREATE TEMP TABLE" in str(query).upper():
            _Counting.creates.append(str(query))
        return super().execute(query, *args, **kwargs)


def _counting_engine(url: str) -> Engine:
    engine = make_engine(url, pool_size=1)

    def count(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.cursor_factory = _Counting

    # first, so that whatever make_engine does on connect is counted too
    event.listen(engine, "connect", count, insert=True)
    return engine


def _batch(seq: int) -> tuple[list[UsageRow], list[ReportRecord]]:
    rid = f"r{seq:031d}"
    row = UsageRow(
        UsageKey(RES1, "cpu_hours", "2026-11-01"),
        None,
        f"{seq}.00",
        "",
        False,
        "none",
        NOW.isoformat(),
        rid,
        seq,
    )
    record = ReportRecord(
        rid, seq, CUSTOMER, RES1, "2026-11-01", NOW, "a.b.c", "{}", "committed", None, None, 1, NOW
    )
    return [row], [record]


@pytest.mark.postgres
def test_staging_tables_are_created_once_per_connection(pg_url: str) -> None:
    _Counting.creates = []
    engine = _counting_engine(pg_url)
    try:
        for seq in range(1, 6):
            rows, records = _batch(seq)
            with SqlUnitOfWork(engine) as uow:
                assert uow.upsert_usages(rows) == {seq}
                uow.record_reports(records)
                uow.commit()
        assert engine.pool.checkedin() == 1  # one pooled connection served every batch
        assert len(_Counting.creates) == 1, _Counting.creates
        with engine.connect() as conn:
            assert conn.execute(text("SELECT amount, report_seq FROM component_usages")).one() == (5, 5)
            assert conn.execute(text("SELECT count(*) FROM usage_reports")).scalar() == 5
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_staging_tables_survive_a_rolled_back_batch(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=1)
    try:
        rows, records = _batch(1)
        with pytest.raises(RuntimeError), SqlUnitOfWork(engine) as uow:
            uow.upsert_usages(rows)
            uow.record_reports(records)
            raise RuntimeError("the batch fails after staging")
        rows, records = _batch(2)
        with SqlUnitOfWork(engine) as uow:
            assert uow.upsert_usages(rows) == {2}
            uow.record_reports(records)
            uow.commit()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT report_seq FROM component_usages")).scalar() == 2
            # ON COMMIT DELETE ROWS: nothing staged is left behind for the next batch
            assert conn.execute(text("SELECT count(*) FROM stage_usages")).scalar() == 0
    finally:
        engine.dispose()


def test_staging_ddl_matches_the_tables() -> None:
    ddl = pg_copy.STAGING_DDL
    assert "CREATE TEMP TABLE IF NOT EXISTS stage_usages" in ddl
    assert "ON COMMIT DELETE ROWS" in ddl
    for name in t.USAGE_COLUMNS + t.REPORT_COLUMNS:
        assert f"{name} " in ddl
    assert " id BIGINT" not in ddl.split("stage_reports")[0]  # the surrogate key is not staged
