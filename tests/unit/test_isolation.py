"""One entry can never wedge a batch (fakes): whatever makes a report fail -- a reused
sequence, a value the database refuses, a failure that keeps coming back -- the rest of its
batch commits, the culprit is quarantined with a reason (or, if not even that can be written,
left pending alone), the entries are acknowledged and a reconciler pass always ends."""

from __future__ import annotations

import pytest

from ingest.domain.errors import Transient
from ingest.services.drain import commit_and_ack, drain_or_defer, reconcile
from ingest.services.ports import Delivery, ReportRecord, SequenceTaken, UsageRow
from schemas import queue as wire
from tests.unit.fakes import FakeJournal, FakeMetrics, FakeStore, FakeUnitOfWork
from tests.unit.test_commit import R1, R2, delivery, make

pytestmark = pytest.mark.timeout(30)  # a wedged pass loops: fail it instead of hanging


class Refused(Exception):
    """What a database raises for a value it refuses (an IntegrityError, a DataError)."""


class PickyStore(FakeStore):
    """A FakeStore whose transactions refuse some reports.

    ``refuse_rows``: report ids whose usage rows raise ``row_error``.
    ``refuse_full_record``: report ids whose record raises unless it is the minimal form
    (no token, no payload: what the quarantine fallback writes).
    ``refuse_any_record``: report ids whose record never can be written.
    ``seq_taken``: sequences that belong to another report; a non-quarantined record with one
    raises SequenceTaken (the partial unique index of migration 0006).
    """

    def __init__(self) -> None:
        super().__init__()
        self.refuse_rows: set[str] = set()
        self.row_error: type[Exception] = Refused
        self.refuse_full_record: set[str] = set()
        self.refuse_any_record: set[str] = set()
        self.seq_taken: set[int] = set()
        self.attempts = 0

    def unit_of_work(self) -> FakeUnitOfWork:
        self.attempts += 1
        return PickyUnitOfWork(self)


class PickyUnitOfWork(FakeUnitOfWork):
    store: PickyStore

    def upsert_usages(self, rows: list[UsageRow]) -> set[int]:
        for row in rows:
            if row.report_id in self.store.refuse_rows:
                raise self.store.row_error(f"row of {row.report_id} refused")
        return super().upsert_usages(rows)

    def record_reports(self, records: list[ReportRecord]) -> None:
        for r in records:
            if r.id in self.store.refuse_any_record:
                raise Refused(f"record of {r.id} refused")
            if r.id in self.store.refuse_full_record and (r.payload or r.token):
                raise Refused(f"full record of {r.id} refused")
            if r.seq in self.store.seq_taken and r.state != "quarantined":
                raise SequenceTaken(f"UNIQUE constraint failed: usage_reports.seq ({r.seq})")
        super().record_reports(records)


def batch(n: int = 50, deliveries: int = 1) -> list[Delivery]:
    """n reports alternating between two keys: only the last two reach the usage upsert
    (the batch keeps the newest per key), so a row-level culprit must be one of them."""
    return [delivery(i, R1 if i % 2 else R2, deliveries, cpu=str(i)) for i in range(1, n + 1)]


def rid(d: Delivery) -> str:
    return wire.decode(d.raw).id


def assert_rest_final(store: FakeStore, entries: list[Delivery], culprit: str) -> None:
    for d in entries:
        report = store.reports.get(rid(d))
        if rid(d) == culprit:
            continue
        assert report is not None and report.state in ("committed", "superseded"), rid(d)


def test_a_reused_sequence_is_quarantined_as_such_and_the_rest_commits():
    store = PickyStore()
    entries = batch()
    culprit = rid(entries[20])
    store.seq_taken.add(entries[20].seq)
    out = make(store).commit(entries)
    assert out.quarantined == [culprit]
    assert store.reports[culprit].reason_code == "sequence_reused"
    assert str(entries[20].seq) in (store.reports[culprit].reason or "")
    assert_rest_final(store, entries, culprit)
    assert sorted(out.done_entries) == sorted(d.entry_id for d in entries)


def test_a_culprit_whose_full_quarantine_record_is_refused_gets_a_minimal_one():
    """The measured wedge: the quarantine record failed like the report, and that error
    abandoned the rest of the batch."""
    store = PickyStore()
    entries = batch()
    culprit = rid(entries[49])
    store.refuse_rows.add(culprit)
    store.refuse_full_record.add(culprit)
    out = make(store).commit(entries)
    assert out.quarantined == [culprit]
    record = store.reports[culprit]
    assert record.state == "quarantined" and record.reason_code == "commit_failed"
    assert "Refused" in (record.reason or "")
    assert record.envelope == entries[49].raw  # replay still has what it needs
    assert_rest_final(store, entries, culprit)
    assert len(out.done_entries) == 50


def test_an_entry_that_cannot_be_recorded_at_all_stays_pending_alone():
    store = PickyStore()
    entries = batch()
    culprit = rid(entries[48])
    store.refuse_rows.add(culprit)
    store.refuse_any_record.add(culprit)
    out = make(store).commit(entries)  # does not raise
    assert culprit not in store.reports
    assert_rest_final(store, entries, culprit)
    assert sorted(out.done_entries) == sorted(d.entry_id for d in entries if d is not entries[48])


def test_a_poison_record_that_is_refused_in_full_is_still_written():
    store = PickyStore()
    entries = batch(10, deliveries=4)  # over the cap (3): quarantined without a try
    culprit = rid(entries[3])
    store.refuse_full_record.add(culprit)
    out = make(store).commit(entries)
    assert len(out.quarantined) == 10 and store.reports[culprit].reason_code == "poison"
    assert len(out.done_entries) == 10


def test_a_report_failing_transiently_every_time_is_poison_at_the_cap_and_only_it():
    store = PickyStore()
    store.row_error = Transient
    culprit_at = 48  # the newest for its key: its row reaches the database
    below = batch(deliveries=2)
    store.refuse_rows.add(rid(below[culprit_at]))
    with pytest.raises(Transient):  # below the cap: retried later, nothing written
        make(store, retry_attempts=2).commit(below)
    assert not store.reports
    at_cap = [d._replace(deliveries=3) for d in below]
    out = make(store, retry_attempts=2).commit(at_cap)
    culprit = rid(below[culprit_at])
    assert out.quarantined == [culprit]
    assert store.reports[culprit].reason_code == "poison"
    assert "row of" in (store.reports[culprit].reason or "")  # the last error is kept
    assert_rest_final(store, at_cap, culprit)
    assert len(out.done_entries) == 50


def test_a_database_down_at_the_cap_quarantines_nothing_and_gives_up_quickly():
    store = PickyStore()
    store.transient_failures = 10**6
    entries = batch(deliveries=3)
    with pytest.raises(Transient):
        make(store, retry_attempts=2).commit(entries)
    assert not store.reports
    assert store.attempts < 20  # not one attempt per entry


class StickyJournal(FakeJournal):
    """Reclaim hands out every pending entry every time (an idle time of zero), and counts."""

    def __init__(self, entries: list[Delivery]) -> None:
        super().__init__(entries)
        self.reclaims = 0
        self.trims = 0

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 500) -> list[Delivery]:
        self.reclaims += 1
        if self.reclaims > 100:
            raise AssertionError("the reconciler pass never ends")
        return super().reclaim(consumer, min_idle_ms, count)

    def trim(self, retention_seconds: float) -> int:
        self.trims += 1
        return 0


def test_a_reconcile_pass_ends_and_trims_even_with_an_entry_that_stays_pending():
    store = PickyStore()
    entries = batch()
    culprit = rid(entries[49])
    store.refuse_rows.add(culprit)
    store.refuse_any_record.add(culprit)
    journal = StickyJournal(entries)
    journal.claim("w", 50, 0)  # a worker claimed them and died
    metrics = FakeMetrics()
    summary = reconcile(journal, make(store), "r", 0.0, 20, 3600, 0, True, metrics)
    assert journal.trims == 1 and journal.reconciles == [summary] and metrics.reconciles == 1
    assert list(journal.pending) == [entries[49].entry_id]
    assert summary["committed"] + summary["superseded"] == 49
    again = reconcile(journal, make(store), "r", 0.0, 20, 3600, 0, True, metrics)
    assert again["committed"] + again["superseded"] + again["quarantined"] == 0
    assert journal.trims == 2


def test_a_reconcile_pass_quarantines_the_culprit_acks_all_and_a_second_pass_finds_nothing():
    store = PickyStore()
    entries = batch()
    culprit = rid(entries[5])
    store.seq_taken.add(entries[5].seq)
    journal = StickyJournal(entries)
    journal.claim("w", 50, 0)
    summary = reconcile(journal, make(store), "r", 0.0, 500, 3600, 0, True, FakeMetrics())
    assert summary["quarantined"] == 1 and store.reports[culprit].reason_code == "sequence_reused"
    assert not journal.pending and len(journal.acked) == 50
    again = reconcile(journal, make(store), "r", 0.0, 500, 3600, 0, True, FakeMetrics())
    assert again["reclaimed"] == 0


class BrokenCommitter:
    """A committer with a bug: every commit raises something unexpected."""

    def commit(self, deliveries: list[Delivery], revive: bool = False, fresh: bool = False) -> None:
        raise KeyError("a bug")


def test_a_committer_bug_ends_the_pass_cleanly_and_leaves_the_entries_pending():
    journal = StickyJournal(batch(5))
    journal.claim("w", 5, 0)
    metrics = FakeMetrics()
    summary = reconcile(journal, BrokenCommitter(), "r", 0.0, 20, 3600, 0, True, metrics)  # type: ignore[arg-type]
    assert journal.trims == 1 and len(journal.pending) == 5 and summary["reclaimed"] == 5
    assert metrics.reconciles == 1 and metrics.transient == ["reconcile"]


class RefusingJournal(FakeJournal):
    """Redis refusing writes (MISCONF, OOM) or gone: claim and/or ack raise."""

    def __init__(self, entries: list[Delivery], claim_fails: bool = False) -> None:
        super().__init__(entries)
        self.claim_fails = claim_fails

    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        if self.claim_fails:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return super().claim(consumer, count, block_ms)

    def ack(self, entry_ids: list[str]) -> int:
        raise RuntimeError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable")


def test_an_ack_refused_by_redis_is_logged_counted_and_leaves_the_entries_pending():
    store, metrics = FakeStore(), FakeMetrics()
    journal = RefusingJournal(batch(4))
    out = commit_and_ack(journal, make(store), journal.claim("w", 4, 0), fresh=True, metrics=metrics)
    assert len(out.committed) + len(out.superseded) == 4  # SQL has them
    assert len(journal.pending) == 4 and metrics.transient == ["ack"]


@pytest.mark.parametrize("claim_fails", [False, True])
def test_a_drain_survives_redis_refusing_or_gone(claim_fails):
    store, metrics = FakeStore(), FakeMetrics()
    journal = RefusingJournal(batch(4), claim_fails)
    done = drain_or_defer(journal, make(store), "w", 10, 0.0, 1.0, metrics)  # does not raise
    assert ("error" in done) == claim_fails
    assert metrics.transient and metrics.transient[-1] in ("ack", "drain")
