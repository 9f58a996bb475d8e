"""Small in-memory fakes of the ports, for unit tests of the services."""

from __future__ import annotations

import copy

from ingest.domain.errors import Transient
from ingest.domain.model import UsageKey
from ingest.services.ports import Accepted, ReportRecord, UsageRow


class FakeStore:
    """Committed state; a FakeUnitOfWork copies it and writes back only on commit."""

    def __init__(self) -> None:
        self.usages: dict[UsageKey, UsageRow] = {}
        self.reports: dict[str, ReportRecord] = {}
        self.fail_on_report: str | None = None  # a report id whose rows raise on upsert
        self.transient_failures = 0  # how many next transactions fail transiently
        self.commits = 0

    def unit_of_work(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)


class FakeUnitOfWork:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.usages = copy.copy(store.usages)
        self.reports = copy.copy(store.reports)

    def __enter__(self) -> FakeUnitOfWork:
        if self.store.transient_failures:
            self.store.transient_failures -= 1
            raise Transient("database is down")
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        return None

    def commit(self) -> None:
        self.store.usages = self.usages
        self.store.reports = self.reports
        self.store.commits += 1

    def final_report_ids(self, ids: list[str]) -> set[str]:
        return {i for i in ids if i in self.reports and self.reports[i].state != "queued"}

    def upsert_usages(self, rows: list[UsageRow]) -> set[int]:
        applied = set()
        for row in rows:
            if row.report_id == self.store.fail_on_report:
                raise ValueError("value out of range for this column")
            current = self.usages.get(row.key)
            if current is None or current.seq < row.seq:
                self.usages[row.key] = row
                applied.add(row.seq)
        return applied

    def record_reports(self, records: list[ReportRecord]) -> None:
        for r in records:
            existing = self.reports.get(r.id)
            if existing is None or existing.state in ("queued", "quarantined"):
                self.reports[r.id] = r


async def refuse_accept(
    reports: list[tuple[str, bytes]], customer: str, rate: float, burst: float
) -> Accepted:
    """Intake's ``accept`` for a test that never accepts a report: fails if it is called."""
    raise AssertionError("this test accepts nothing")
