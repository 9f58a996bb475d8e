"""Drain and reconcile against fakes: a database outage is never silent, and nothing that
was claimed is lost (it stays pending for the reconciler)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from ingest import bootstrap, config
from ingest.services.drain import drain_or_defer, reconcile
from ingest.services.journal_epoch import JournalHealth
from tests.unit.fakes import FakeJournal, FakeMetrics, FakeStore
from tests.unit.test_commit import delivery, make


def test_a_drain_commits_acks_and_observes_each_batch():
    store, journal, metrics = (
        FakeStore(),
        FakeJournal([delivery(1, cpu="1"), delivery(2, cpu="2")]),
        FakeMetrics(),
    )
    done = drain_or_defer(journal, make(store), "w", 10, 0.0, 5.0, metrics)
    assert done["committed"] == 1 and done["superseded"] == 1
    assert journal.acked == ["1-0", "2-0"] and not journal.pending
    assert metrics.batches == [(2, 1, 1)] and metrics.transient == []


def test_a_transient_failure_is_logged_counted_and_leaves_the_entries_pending(caplog):
    store, journal, metrics = FakeStore(), FakeJournal([delivery(1, cpu="1")]), FakeMetrics()
    store.transient_failures = 99
    with caplog.at_level(logging.WARNING, logger="ingest.services.drain"):
        done = drain_or_defer(journal, make(store, retry_attempts=2), "w", 10, 0.0, 5.0, metrics)
    assert "error" in done
    assert metrics.transient == ["drain"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "pending" in caplog.records[0].getMessage()
    assert list(journal.pending) == ["1-0"] and journal.acked == []  # for the reconciler

    store.transient_failures = 0  # the database is back: the reconciler commits them
    summary = reconcile(journal, make(store), "r", 0.0, 10, 3600, 0, True, metrics)
    assert summary["reclaimed"] == 1 and summary["committed"] == 1
    assert journal.acked == ["1-0"] and metrics.redelivered_total == 1 and metrics.reconciles == 1


@dataclasses.dataclass
class FakeRuntime:
    """What the tasks take from bootstrap.Runtime, over fakes."""

    journal: FakeJournal
    committer: Any
    metrics: FakeMetrics
    committed: int | None = 0
    settings: config.Settings = dataclasses.field(default_factory=config.Settings)
    consumer_name: str = "worker-1"
    archive: Any = None

    @property
    def queue(self) -> FakeJournal:
        return self.journal

    checks: int = 0

    def reachable_committed_sequence(self) -> int | None:
        return self.committed

    def check_journal(self) -> JournalHealth:
        self.checks += 1
        return JournalHealth("ok")


@pytest.fixture
def tasks(monkeypatch):
    from workers import tasks

    def use(rt: FakeRuntime) -> Any:
        monkeypatch.setattr(bootstrap, "runtime", lambda: rt)
        tasks._spacing.ended = float("-inf")  # each call a pass of its own (see PassSpacing)
        return tasks

    return use


def test_the_drain_task_counts_and_logs_a_transient_failure(tasks, caplog):
    store = FakeStore()
    store.transient_failures = 99
    rt = FakeRuntime(FakeJournal([delivery(1, cpu="1")]), make(store, retry_attempts=2), FakeMetrics())
    with caplog.at_level(logging.WARNING):
        done = tasks(rt).drain()
    assert "error" in done
    assert rt.metrics.transient == ["drain"]
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert list(rt.journal.pending) == ["1-0"]


def test_the_reconcile_task_re_drives_nothing_while_the_database_is_down(tasks):
    store = FakeStore()
    journal = FakeJournal([delivery(1, cpu="1")])
    journal.claim("w", 10, 0)  # claimed by a worker that died
    rt = FakeRuntime(journal, make(store), FakeMetrics(), committed=None)
    summary = tasks(rt).reconcile()
    assert summary["reclaimed"] == 0 and list(journal.pending) == ["1-0"]
    rt.committed = 0
    summary = tasks(rt).reconcile()
    assert summary["reclaimed"] == 1 and summary["committed"] == 1 and not journal.pending


def test_the_reconcile_task_ends_with_the_journal_epoch_check(tasks):
    rt = FakeRuntime(FakeJournal([]), make(FakeStore()), FakeMetrics())
    summary = tasks(rt).reconcile()
    assert rt.checks == 1 and summary["journal"] == "ok"
    assert rt.journal.reconciles == [summary]  # recorded with the pass


def test_a_reconcile_pass_records_the_check_s_status_after_trimming():
    journal, order = FakeJournal([]), []
    journal.trim = lambda retention: order.append("trim") or 0  # type: ignore[method-assign]

    def check() -> str:
        order.append("check")
        return "degraded: Redis lost journal data (...)"

    summary = reconcile(journal, make(FakeStore()), "r", 0.0, 10, 3600, 0, True, check_journal=check)
    assert order == ["trim", "check"]
    assert summary["journal"].startswith("degraded:") and journal.reconciles == [summary]


def test_a_failed_check_is_unknown_and_the_pass_still_ends_and_records(caplog):
    journal, metrics = FakeJournal([delivery(1, cpu="1")]), FakeMetrics()
    journal.claim("w", 10, 0)  # stale: re-driven by this pass

    def check() -> str:
        raise ConnectionError("SQL is gone")

    with caplog.at_level(logging.WARNING, logger="ingest.services.drain"):
        summary = reconcile(
            journal, make(FakeStore()), "r", 0.0, 10, 3600, 0, True, metrics, check_journal=check
        )
    assert summary["journal"] == "unknown: ConnectionError" and summary["committed"] == 1
    assert journal.reconciles == [summary] and metrics.reconciles == 1
    assert "journal epoch check failed" in caplog.text


def test_without_a_check_the_summary_has_no_journal_status():
    journal = FakeJournal([])
    summary = reconcile(journal, make(FakeStore()), "r", 0.0, 10, 3600, 0, True)
    assert "journal" not in summary and journal.reconciles == [summary]


def test_a_pass_right_after_another_is_skipped_so_a_drain_runs_in_between(tasks):
    rt = FakeRuntime(FakeJournal([]), make(FakeStore()), FakeMetrics())
    module = tasks(rt)
    first = module.reconcile()
    assert "not_run" not in first and rt.checks == 1
    second = module.reconcile()  # queued while the first ran: the worker polls passes first
    assert "not_run" in second and rt.checks == 1 and rt.journal.reconciles == [first]
    module._spacing.ended -= rt.settings.reconcile_interval / 2  # half an interval later
    third = module.reconcile()
    assert "not_run" not in third and rt.checks == 2
