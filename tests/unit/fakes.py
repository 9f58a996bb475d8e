"""Small in-memory fakes of the ports, for unit tests of the services."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from ingest.domain.errors import Transient
from ingest.domain.model import UsageKey
from ingest.services.ports import Accepted, Delivery, ReportRecord, UsageRow


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


class FakeJournal:
    """The Journal port in memory: entries are new until claimed, pending until acked."""

    def __init__(self, entries: list[Delivery] | None = None) -> None:
        self.new: list[Delivery] = list(entries or [])
        self.pending: dict[str, Delivery] = {}
        self.acked: list[str] = []
        self.seq = 0
        self.heartbeats: list[str] = []
        self.reconciles: list[dict[str, int]] = []

    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        taken, self.new = self.new[:count], self.new[count:]
        self.pending.update({d.entry_id: d for d in taken})
        return taken

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 500) -> list[Delivery]:
        taken = [d._replace(deliveries=d.deliveries + 1) for d in list(self.pending.values())[:count]]
        self.pending.update({d.entry_id: d for d in taken})  # as Redis counts each delivery
        return taken

    def ack(self, entry_ids: list[str]) -> int:
        done = [i for i in entry_ids if self.pending.pop(i, None) is not None]
        self.acked += done
        return len(done)

    def heartbeat(self, consumer: str, ttl: int = 60) -> None:
        self.heartbeats.append(consumer)

    def trim(self, retention_seconds: float) -> int:
        return 0

    def ensure_seq_at_least(self, floor: int) -> int:
        self.seq = max(self.seq, floor)
        return self.seq

    def record_reconcile(self, summary: dict[str, int]) -> None:
        self.reconciles.append(summary)


class FakeMetrics:
    """The Metrics port, keeping what it was told."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int]] = []  # (size, committed, superseded)
        self.redelivered_total = 0
        self.reconciles = 0
        self.transient: list[str] = []

    def observe_batch(
        self,
        size: int,
        seconds: float,
        committed: int,
        superseded: int,
        quarantine_reasons: Sequence[str],
        delays: Sequence[float],
    ) -> None:
        self.batches.append((size, committed, superseded))

    def redelivered(self, count: int) -> None:
        self.redelivered_total += count

    def reconciled(self) -> None:
        self.reconciles += 1

    def transient_failure(self, task: str) -> None:
        self.transient.append(task)


async def refuse_accept(
    reports: list[tuple[str, bytes]], customer: str, rate: float, burst: float
) -> Accepted:
    """Intake's ``accept`` for a test that never accepts a report: fails if it is called."""
    raise AssertionError("this test accepts nothing")
