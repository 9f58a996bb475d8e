"""The UnitOfWork port's contract, run against the in-memory fake the unit tests use and the
real SQL adapter on SQLite and PostgreSQL: a fake that drifts from the adapter would let unit
tests pass on behaviour production does not have."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingest.adapters.sql.unit_of_work import SqlUnitOfWork, make_engine
from ingest.domain.model import UsageKey
from ingest.services.ports import ReportRecord, UnitOfWork, UsageRow
from tests.conftest import migrated_database
from tests.unit.fakes import FakeStore

RESOURCE = "7f3e2a10-0000-4000-8000-000000000100"
CUSTOMER = "7f3e2a10-0000-4000-8000-000000000001"
PERIOD = "2026-11-01"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def row(component: str, amount: str, seq: int, report_id: str | None = None) -> UsageRow:
    return UsageRow(
        UsageKey(RESOURCE, component, PERIOD),
        None,
        amount,
        "",
        False,
        "none",
        NOW.isoformat(),
        report_id or f"r{seq:031d}",
        seq,
    )


def record(seq: int, state: str, report_id: str | None = None) -> ReportRecord:
    return ReportRecord(
        report_id or f"r{seq:031d}",
        seq,
        CUSTOMER,
        RESOURCE,
        PERIOD,
        NOW,
        "token",
        "{}",
        state,
        "poison" if state == "quarantined" else None,
        "why" if state == "quarantined" else None,
        1,
        NOW,
        b"envelope" if state == "quarantined" else b"",
    )


Factory = Callable[[], UnitOfWork]


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_uow(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    if request.param == "fake":
        store = FakeStore()
        yield store.unit_of_work
        return
    for url in migrated_database(request.param, tmp_path):
        engine = make_engine(url)
        try:
            yield lambda engine=engine: SqlUnitOfWork(engine)  # type: ignore[misc]
        finally:
            engine.dispose()


def committed(new_uow: Factory, rows: list[UsageRow], records: list[ReportRecord] | None = None) -> set[int]:
    with new_uow() as uow:
        applied = uow.upsert_usages(rows)
        uow.record_reports(records or [])
        uow.commit()
    return applied


def test_a_higher_sequence_wins_and_a_lower_one_is_never_applied(new_uow: Factory) -> None:
    assert committed(new_uow, [row("cpu", "1.00", 10)]) == {10}
    assert committed(new_uow, [row("cpu", "2.00", 12)]) == {12}
    assert committed(new_uow, [row("cpu", "0.50", 11)]) == set()  # an older report, late
    assert committed(new_uow, [row("cpu", "2.00", 12)]) == set()  # a redelivery: equal is not higher


def test_keys_are_independent(new_uow: Factory) -> None:
    assert committed(new_uow, [row("cpu", "1.00", 5), row("ram", "3.00", 6)]) == {5, 6}
    assert committed(new_uow, [row("cpu", "9.00", 4), row("ram", "4.00", 7)]) == {7}


def test_nothing_is_visible_without_commit(new_uow: Factory) -> None:
    with new_uow() as uow:
        uow.upsert_usages([row("cpu", "1.00", 3)])
        uow.record_reports([record(3, "committed")])
    with new_uow() as uow:
        assert uow.final_report_ids([record(3, "committed").id]) == set()
        assert uow.upsert_usages([row("cpu", "1.00", 3)]) == {3}


def test_a_final_state_is_kept_and_only_a_quarantined_one_is_replaced(new_uow: Factory) -> None:
    committed(new_uow, [], [record(1, "committed"), record(2, "quarantined")])
    committed(new_uow, [], [record(1, "superseded"), record(2, "committed")])
    with new_uow() as uow:
        assert uow.final_report_ids([record(1, "x").id, record(2, "x").id, "unknown"]) == {
            record(1, "x").id,
            record(2, "x").id,
        }
    # redelivery of the same record changes nothing and raises nothing
    committed(new_uow, [], [record(1, "committed")])
