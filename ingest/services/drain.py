"""Drain and reconcile: move journal entries into SQL batch by batch.

A drain claims never-delivered entries, commits them in batches and acknowledges each batch
only after its transaction committed. The reconciler re-drives entries that were claimed but
never acknowledged (a worker died, the database was down) once they are older than
RECONCILE_AFTER, quarantines poison after MAX_DELIVERIES, keeps the sequence ahead of SQL and
trims the journal behind its retention window.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from ingest.adapters import prometheus as metrics
from ingest.adapters.redis.journal import RedisQueue
from ingest.domain.errors import Transient
from ingest.services.commit import Committer, Outcome
from ingest.services.ports import Delivery

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DrainStats:
    batches: int = 0
    committed: int = 0
    superseded: int = 0
    quarantined: int = 0
    skipped: int = 0

    def add(self, outcome: Outcome) -> None:
        self.batches += 1
        self.committed += len(outcome.committed)
        self.superseded += len(outcome.superseded)
        self.quarantined += len(outcome.quarantined)
        self.skipped += len(outcome.skipped)


def commit_and_ack(
    queue: RedisQueue, committer: Committer, entries: list[Delivery], fresh: bool = False
) -> Outcome:
    started = time.perf_counter()
    outcome = committer.commit(entries, fresh=fresh)
    queue.ack(outcome.done_entries)
    _observe(outcome, len(entries), time.perf_counter() - started)
    return outcome


def _observe(outcome: Outcome, size: int, seconds: float) -> None:
    metrics.BATCH_SIZE.observe(size)
    metrics.COMMIT_SECONDS.observe(seconds)
    metrics.COMMITTED.inc(len(outcome.committed))
    metrics.SUPERSEDED.inc(len(outcome.superseded))
    for reason in outcome.reasons:
        metrics.QUARANTINED.labels(reason).inc()
    for delay in outcome.delays:
        metrics.COMMIT_DELAY.observe(delay)


def drain(
    queue: RedisQueue,
    committer: Committer,
    consumer: str,
    batch_size: int,
    flush_interval: float,
    budget: float,
) -> DrainStats:
    """Claim and commit batches until the journal is empty or ``budget`` seconds passed.

    Raises Transient when the database stays unavailable: the claimed batch is then left
    pending (unacknowledged) for the reconciler.
    """
    stats = DrainStats()
    queue.heartbeat(consumer)
    deadline = time.monotonic() + budget
    block_ms = max(1, int(flush_interval * 1000))
    while time.monotonic() < deadline:
        entries = queue.claim(consumer, batch_size, block_ms)
        if not entries:
            break
        if len(entries) < batch_size:
            # FLUSH_INTERVAL: let a partial batch fill before paying a transaction for it.
            # Claiming whatever had arrived made batches of a few reports under a steady
            # load, and their fixed cost took the CPU the web needed.
            time.sleep(flush_interval)
            entries += queue.claim(consumer, batch_size - len(entries), 0)
        stats.add(commit_and_ack(queue, committer, entries, fresh=True))
    return stats


def reconcile(
    queue: RedisQueue,
    committer: Committer,
    consumer: str,
    stale_after: float,
    batch_size: int,
    retention_seconds: float,
    max_seq_committed: int,
    database_ok: bool,
) -> dict[str, int]:
    """One reconciler pass; returns what it did (also logged)."""
    report = {
        "reclaimed": 0,
        "committed": 0,
        "superseded": 0,
        "quarantined": 0,
        "skipped": 0,
        "trimmed": 0,
        "seq": queue.ensure_seq_at_least(max_seq_committed),
    }
    if database_ok:
        # only while SQL is reachable: redelivery counts must not grow during an outage
        while True:
            entries = queue.reclaim(consumer, int(stale_after * 1000), batch_size)
            if not entries:
                break
            report["reclaimed"] += len(entries)
            metrics.REDELIVERED.inc(len(entries))
            try:
                outcome = commit_and_ack(queue, committer, entries)
            except Transient as exc:
                log.warning("reconcile: database unavailable, will retry: %s", exc)
                break
            report["committed"] += len(outcome.committed)
            report["superseded"] += len(outcome.superseded)
            report["quarantined"] += len(outcome.quarantined)
            report["skipped"] += len(outcome.skipped)
    report["trimmed"] = queue.trim(retention_seconds)
    queue.record_reconcile(report)
    metrics.RECONCILED.set(time.time())
    log.info("reconcile %s", report)
    return report
