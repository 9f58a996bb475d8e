"""The paths through the journal archive, over fakes: a drain archives what it finalises
before it acknowledges it, replay merges the archive with the Redis window, and
back-pressure counts pending reports, not the replay window."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from ingest.domain.ids import stream_id_key
from ingest.services import operations
from ingest.services.archive_ports import ArchiveProblem
from ingest.services.drain import drain_or_defer, reconcile
from ingest.services.ports import Delivery
from ingest.services.pressure import MemoryReading, Pressure
from tests.unit.fakes import FakeJournal, FakeMetrics, FakeStore
from tests.unit.test_commit import delivery, make
from tests.unit.test_operations_fakes import FakeOperatorJournal, FakePorts, FakeReadModel

SINCE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class MemoryArchive:
    """An Archive in memory: what was appended, in order; a refusal on demand."""

    def __init__(self, entries: Sequence[Delivery] = (), problem: ArchiveProblem | None = None) -> None:
        self.appended: list[Delivery] = list(entries)
        self.refuse = False
        self.problem = problem

    def append(self, entries: Sequence[Delivery]) -> None:
        if self.refuse:
            raise OSError(28, "No space left on device")
        self.appended += entries

    def read(
        self,
        start_ms: int | None = None,
        end_ms: int | None = None,
        start_after: str | None = None,
        on_problem: Callable[[ArchiveProblem], None] | None = None,
    ) -> Iterator[Delivery]:
        if self.problem and on_problem:
            on_problem(self.problem)
        seen = set()
        for e in sorted(self.appended, key=lambda d: (stream_id_key(d.entry_id), d.seq)):
            if (e.entry_id, e.seq) in seen:
                continue
            seen.add((e.entry_id, e.seq))
            if start_after and stream_id_key(e.entry_id) <= stream_id_key(start_after):
                continue
            yield e._replace(deliveries=1)

    def prune(self, now: float | None = None) -> int:
        return 0


def test_a_drain_archives_final_entries_before_it_acknowledges_them():
    journal, archive = FakeJournal([delivery(1, cpu="1"), delivery(2, cpu="2")]), MemoryArchive()
    done = drain_or_defer(journal, make(FakeStore()), "w", 10, 0.0, 5.0, FakeMetrics(), archive=archive)
    assert done["committed"] == 1 and done["superseded"] == 1
    assert [e.entry_id for e in archive.appended] == ["1-0", "2-0"] == journal.acked


def test_an_archive_that_refuses_leaves_the_entries_pending_and_the_reconciler_archives_them():
    store, metrics = FakeStore(), FakeMetrics()
    journal, archive = FakeJournal([delivery(1, cpu="1")]), MemoryArchive()
    archive.refuse = True
    drain_or_defer(journal, make(store), "w", 10, 0.0, 5.0, metrics, archive=archive)
    assert journal.acked == [] and list(journal.pending) == ["1-0"]  # committed, not acknowledged
    assert metrics.transient == ["archive"] and len(store.reports) == 1

    archive.refuse = False  # the disk has room again: the reconciler's redelivery archives it
    summary = reconcile(journal, make(store), "r", 0.0, 10, 3600, 0, True, metrics, archive=archive)
    assert summary["skipped"] == 1 and summary["committed"] == 0  # final in SQL: not again
    assert journal.acked == ["1-0"] and [e.entry_id for e in archive.appended] == ["1-0"]


def _ports(journal: list[Delivery], archived: list[Delivery], problem: ArchiveProblem | None = None) -> Any:
    return FakePorts(
        FakeOperatorJournal(journal), FakeReadModel({}), make(FakeStore()), MemoryArchive(archived, problem)
    )


def test_replay_reads_the_archive_and_the_redis_window_once_each_in_acceptance_order():
    a, b, c, d = (delivery(n, cpu=str(n)) for n in (1, 2, 3, 4))
    # a and b only in the archive (trimmed from Redis), b and c in both, d only in Redis
    ports = _ports([b, c, d], [c, a, b, a])
    got = [e.entry_id for e in operations.window_entries(ports, SINCE, None)]
    assert got == ["1-0", "2-0", "3-0", "4-0"]
    outcome = operations.replay(ports, SINCE)
    assert len(outcome.committed) + len(outcome.superseded) == 4


def test_an_unreadable_part_of_the_archive_is_reported_and_the_rest_replays():
    problem = ArchiveProblem("/archive/2026-12-01/10/w-0.seg", 4096, "checksum mismatch")
    found: list[ArchiveProblem] = []
    ports = _ports([delivery(2, cpu="2")], [delivery(1, cpu="1")], problem)
    outcome = operations.replay(ports, SINCE, on_problem=found.append)
    assert found == [problem] and "w-0.seg at byte 4096" in str(problem)
    assert len(outcome.committed) + len(outcome.superseded) == 2


@dataclasses.dataclass
class Gauges:
    reading: MemoryReading
    cap: int | None = None
    trims: int = 0

    def memory_reading(self) -> MemoryReading:
        return self.reading

    def set_pending_cap(self, cap: int | None) -> None:
        self.cap = cap

    def trim(self, retention_seconds: float) -> int:
        assert retention_seconds == 0
        self.trims += 1
        gone = self.reading.entries - self.reading.pending
        per_entry = self.reading.journal_bytes // max(1, self.reading.entries)
        self.reading = self.reading._replace(
            used=self.reading.used - gone * per_entry,
            journal_bytes=self.reading.journal_bytes - gone * per_entry,
            entries=self.reading.pending,
        )
        return gone


MB = 1 << 20


def test_with_the_archive_a_full_window_is_trimmed_and_nothing_is_refused():
    # 9 MB of 10 used, 8 MB of it the journal: 8,000 entries of 1 KB, only 100 pending
    gauges = Gauges(MemoryReading(9 * MB, 10 * MB, 8000 * 1024, 8000, 100))
    pressure = Pressure(gauges, max_backlog=1_000_000, high_water=0.8, window_trimmable=True)
    pressure.sample()
    assert pressure.reason is None and gauges.trims == 1
    pressure.check()
    # room left under the mark, besides what is not the journal, in 1 KB entries
    other = 9 * MB - 8000 * 1024
    assert gauges.cap == int((0.8 * 10 * MB - other) / 1024)


def test_without_the_archive_the_window_counts_and_intake_refuses_above_the_mark():
    gauges = Gauges(MemoryReading(9 * MB, 10 * MB, 8000 * 1024, 8000, 100))
    pressure = Pressure(gauges, max_backlog=1_000_000, high_water=0.8)
    pressure.sample()
    assert gauges.trims == 0 and pressure.reason and "Redis memory" in pressure.reason
    assert gauges.cap == 0


def test_pending_work_over_the_mark_is_refused_even_with_the_archive():
    gauges = Gauges(MemoryReading(9 * MB, 10 * MB, 8000 * 1024, 8000, 8000))  # all pending
    pressure = Pressure(gauges, max_backlog=1_000_000, high_water=0.8, window_trimmable=True)
    pressure.sample()
    assert pressure.reason and "8000 pending reports" in pressure.reason
    with pytest.raises(Exception, match="pending"):
        pressure.check()


def test_the_cap_is_the_backlog_limit_without_maxmemory():
    gauges = Gauges(MemoryReading(9 * MB, 0, 8000 * 1024, 8000, 10))
    pressure = Pressure(gauges, max_backlog=500, high_water=0.8)
    pressure.sample()
    assert pressure.reason is None and gauges.cap == 500


def test_committed_entries_a_trim_cannot_take_count_even_with_the_archive():
    """One entry pending for long holds every committed entry after it in the stream (XTRIM
    MINID stops there): over the mark after the trim, they count, and intake refuses."""
    gauges = Gauges(MemoryReading(9 * MB, 10 * MB, 8000 * 1024, 8000, 100))
    gauges.trim = lambda retention_seconds: 0  # type: ignore[method-assign]
    pressure = Pressure(gauges, max_backlog=1_000_000, high_water=0.8, window_trimmable=True)
    pressure.sample()
    assert pressure.reason and "Redis memory" in pressure.reason and gauges.cap == 0


def test_refusing_for_memory_lasts_until_the_mark_less_the_hysteresis():
    full = MemoryReading(int(8.2 * MB), 10 * MB, 7000 * 1024, 7000, 0)  # over the mark: refuse
    gauges = Gauges(full)
    pressure = Pressure(gauges, max_backlog=1_000_000, high_water=0.8)
    pressure.sample()
    assert pressure.reason and gauges.cap == 0
    gauges.reading = full._replace(used=int(7.9 * MB))  # just under the mark: still refusing
    pressure.sample()
    assert pressure.reason and gauges.cap == 0
    gauges.reading = full._replace(used=int(7.0 * MB), journal_bytes=5800 * 1024, entries=5800)
    pressure.sample()  # well under the mark less 5%: accepting again
    assert pressure.reason is None and gauges.cap and gauges.cap > 0
