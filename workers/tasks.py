"""Thin tasks: each calls one service. Idempotent: running one twice, or concurrently on two
workers, commits nothing twice (consumer-group claims + sequence-guarded upserts)."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.signals import worker_process_shutdown

from ingest import bootstrap, logs
from ingest.services.drain import Held, drain_or_defer
from ingest.services.drain import reconcile as reconcile_journal
from workers.app import app

# INFO: what the drains of this process committed, at most one line a minute (none when idle)
commits = logs.Summary(logging.getLogger("workers.tasks.drain"), logs.commit_line)

# The batch this worker process claimed and could not commit (the database was down): its
# next drain retries it first, so it commits as soon as the database answers again.
_held = Held()


class PassSpacing:
    """The worker polls the reconciler's queue before the drains' (ingest.bootstrap): passes
    that took longer than RECONCILE_INTERVAL would follow one another and hold every drain
    off. A pass that would start less than half an interval after this process's last one
    ended is skipped (the next comes within an interval); a drain runs in between."""

    def __init__(self) -> None:
        self.ended = float("-inf")  # time.monotonic()

    def too_soon(self, interval: float) -> bool:
        return time.monotonic() - self.ended < interval / 2


_spacing = PassSpacing()


@app.task(name="workers.tasks.drain", acks_late=True, ignore_result=True)
def drain() -> dict[str, Any]:
    """Commit what the journal holds, for up to DRAIN_BUDGET seconds. A database outage is
    logged and counted (ingest_transient_failures_total{task="drain"}); the claimed batch
    stays pending, held for the next drain of this process for up to DRAIN_RETRY_BUDGET
    seconds (at most 3/4 of RECONCILE_AFTER, so never while the reconciler may take it), then
    left to the reconciler."""
    rt = bootstrap.runtime()
    s = rt.settings
    done = drain_or_defer(
        rt.journal,
        rt.committer,
        rt.consumer_name,
        s.batch_size,
        s.flush_interval,
        s.drain_budget,
        rt.metrics,
        _held,
        min(s.drain_retry_budget, 0.75 * s.reconcile_after),
        rt.archive,
    )
    commits.add(**{k: done.get(k, 0) for k in ("batches", "committed", "superseded", "quarantined")})
    if s.bridge_enabled and done.get("committed"):
        try:
            rt.kick_forward()  # the outbox has news for Waldur (at most once a second)
        except Exception as exc:  # the broker is down: beat's forward runs anyway
            logging.getLogger(__name__).warning("cannot kick a forward: %s", exc)
    return done


@app.task(name="workers.tasks.reconcile", acks_late=True, ignore_result=True)
def reconcile() -> dict[str, Any]:
    """Re-drive stale pending entries (only while SQL answers), keep the sequence ahead of
    SQL, trim the journal, and end with the journal epoch check (did Redis lose data?)."""
    rt = bootstrap.runtime()
    s = rt.settings
    if _spacing.too_soon(s.reconcile_interval):
        return {"not_run": "this process's last pass ended less than half an interval ago"}
    try:
        return _reconcile(rt)
    finally:
        _spacing.ended = time.monotonic()


def _reconcile(rt: bootstrap.Runtime) -> dict[str, Any]:
    s = rt.settings
    max_seq = rt.reachable_committed_sequence()
    return reconcile_journal(
        rt.journal,
        rt.committer,
        rt.consumer_name,
        s.reconcile_after,
        s.batch_size,
        s.journal_retention_seconds,
        max_seq or 0,
        max_seq is not None,
        rt.metrics,
        check_journal=lambda: rt.check_journal().status,
        archive=rt.archive,
    )


@worker_process_shutdown.connect
def _last_summary(**_: Any) -> None:
    commits.flush()
