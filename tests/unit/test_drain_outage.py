"""A batch claimed during a database outage is retried by the worker's next drain, as soon
as the database answers, instead of waiting RECONCILE_AFTER for the reconciler."""

from __future__ import annotations

import time

from ingest.services.drain import Held, drain_or_defer
from tests.unit.fakes import FakeJournal, FakeMetrics, FakeStore
from tests.unit.test_commit import delivery, make


def test_the_next_drain_retries_the_held_batch_first_and_claims_nothing_new_meanwhile():
    store, metrics, held = FakeStore(), FakeMetrics(), Held()
    journal = FakeJournal([delivery(1, cpu="1"), delivery(2, cpu="2")])
    committer = make(store, retry_attempts=2)
    store.transient_failures = 99
    first = drain_or_defer(journal, committer, "w", 1, 0.0, 5.0, metrics, held, 30.0)
    assert "error" in first and [d.entry_id for d in held.entries] == ["1-0"]
    assert list(journal.pending) == ["1-0"] and [d.entry_id for d in journal.new] == ["2-0"]

    again = drain_or_defer(journal, committer, "w", 1, 0.0, 5.0, metrics, held, 30.0)
    assert "error" in again  # still down: still held, and nothing new was claimed
    assert [d.entry_id for d in held.entries] == ["1-0"] and [d.entry_id for d in journal.new] == ["2-0"]

    store.transient_failures = 0  # the database answers again
    done = drain_or_defer(journal, committer, "w", 1, 0.0, 5.0, metrics, held, 30.0)
    assert done["committed"] == 2 and done["batches"] == 2
    assert journal.acked == ["1-0", "2-0"] and not journal.pending and not held.entries
    # committed from memory: delivered once, never re-read (its delivery count did not grow)
    assert store.reports[next(iter(store.reports))].deliveries == 1


def test_a_batch_held_longer_than_the_hold_is_left_to_the_reconciler(caplog):
    store, metrics, held = FakeStore(), FakeMetrics(), Held()
    journal = FakeJournal([delivery(1, cpu="1")])
    committer = make(store, retry_attempts=1)
    store.transient_failures = 1
    drain_or_defer(journal, committer, "w", 10, 0.0, 5.0, metrics, held, 30.0)
    held.since = time.monotonic() - 31  # claimed 31 s ago
    done = drain_or_defer(journal, committer, "w", 10, 0.0, 5.0, metrics, held, 30.0)
    assert done["committed"] == 0 and not held.entries
    assert list(journal.pending) == ["1-0"] and not store.reports  # the reconciler's now
    assert "left to the reconciler" in caplog.text


def test_a_held_batch_is_only_retried_by_its_consumer_on_its_journal():
    store, metrics, held = FakeStore(), FakeMetrics(), Held()
    journal = FakeJournal([delivery(1, cpu="1")])
    committer = make(store, retry_attempts=1)
    store.transient_failures = 1
    drain_or_defer(journal, committer, "w", 10, 0.0, 5.0, metrics, held, 30.0)
    other = FakeJournal()
    drain_or_defer(other, committer, "w", 10, 0.0, 5.0, metrics, held, 30.0)
    assert not held.entries and not store.reports and list(journal.pending) == ["1-0"]


def test_without_a_hold_the_drain_behaves_as_before():
    store, metrics = FakeStore(), FakeMetrics()
    journal = FakeJournal([delivery(1, cpu="1")])
    store.transient_failures = 1
    held = Held()
    drain_or_defer(journal, make(store, retry_attempts=1), "w", 10, 0.0, 5.0, metrics, held, 0.0)
    assert not held.entries and list(journal.pending) == ["1-0"]
