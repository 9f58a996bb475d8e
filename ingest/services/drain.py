"""Drain and reconcile: move journal entries into SQL batch by batch.

A drain claims never-delivered entries, commits them in batches and acknowledges each batch
only after its transaction committed. A batch it could not commit because the database was
unavailable is held by the worker process (``Held``) and retried first by its next drain, so
it commits within one drain interval of the database answering again instead of waiting for
the reconciler; the hold ends well before RECONCILE_AFTER, when the reconciler may take the
entries over. The reconciler re-drives entries that were claimed but
never acknowledged (a worker died, the database was down) once they are older than
RECONCILE_AFTER, quarantines poison after MAX_DELIVERIES, keeps the sequence ahead of SQL and
trims the journal behind its retention window.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from ingest.domain.errors import Transient
from ingest.services.archive_ports import Archive
from ingest.services.commit import Committer, Outcome
from ingest.services.ports import Delivery, Journal, Metrics, NoMetrics

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


NO_METRICS: Metrics = NoMetrics()


@dataclasses.dataclass
class Held:
    """The batch a drain claimed and could not commit (Transient), kept by the process that
    claimed it. Only that consumer holds those entries, and holding them in memory, not
    reading them again from Redis, leaves their delivery counts alone: an outage does not
    bring them nearer to quarantine as poison. Retried while younger than ``hold_for``
    seconds (from the claim); after that they are the reconciler's."""

    entries: list[Delivery] = dataclasses.field(default_factory=list)
    queue: Journal | None = None
    consumer: str = ""
    since: float = 0.0  # time.monotonic() of the claim

    def keep(self, queue: Journal, consumer: str, entries: list[Delivery], since: float) -> None:
        self.entries, self.queue, self.consumer, self.since = entries, queue, consumer, since

    def clear(self) -> None:
        self.entries, self.queue = [], None

    def take(self, queue: Journal, consumer: str, hold_for: float) -> list[Delivery]:
        """The held entries still to retry by this consumer of this journal, else []."""
        if not self.entries:
            return []
        if self.queue is not queue or self.consumer != consumer:
            self.clear()  # another runtime's (a test's), not ours to commit
            return []
        age = time.monotonic() - self.since
        if age > hold_for:
            log.warning(
                "drain: %d claimed reports still uncommitted after %.0f s; left to the reconciler",
                len(self.entries),
                age,
            )
            self.clear()
            return []
        return self.entries


def commit_and_ack(
    queue: Journal,
    committer: Committer,
    entries: list[Delivery],
    fresh: bool = False,
    metrics: Metrics = NO_METRICS,
    archive: Archive | None = None,
) -> Outcome:
    """Commit one batch, archive the entries that reached a final state, then acknowledge
    them. An exception leaves every entry of the batch pending (unacknowledged).

    The archive (JOURNAL_ARCHIVE_DIR) is written, fsynced, before the acknowledgement: once
    Redis may trim an entry, the archive holds it for ``ingest replay``. An archive that
    refuses the write (a full disk) leaves the entries pending, logged and counted
    (ingest_transient_failures_total{task="archive"}); the reconciler re-drives them: they are
    final in SQL, so nothing is committed twice, and the archive is written again. A crash
    between the archive write and the acknowledgement appends them twice; readers of the
    archive drop the second copy.

    An acknowledgement Redis refuses (MISCONF, OOM, a lost connection) is logged and counted
    (ingest_transient_failures_total{task="ack"}) and does not raise: the batch is committed,
    its entries stay pending, and the reconciler finds them final and acknowledges them."""
    started = time.perf_counter()
    outcome = committer.commit(entries, fresh=fresh)
    if archive is not None and not _archived(archive, entries, outcome.done_entries, metrics):
        return outcome
    try:
        queue.ack(outcome.done_entries)
    except Exception as exc:  # redis errors: the services do not import redis
        log.warning(
            "ack of %d committed entries refused; they stay pending for the reconciler: %s",
            len(outcome.done_entries),
            exc,
        )
        metrics.transient_failure("ack")
    metrics.observe_batch(
        len(entries),
        time.perf_counter() - started,
        len(outcome.committed),
        len(outcome.superseded),
        outcome.reasons,
        outcome.delays,
    )
    return outcome


def _archived(archive: Archive, entries: list[Delivery], done: list[str], metrics: Metrics) -> bool:
    """Append the final entries to the archive; False (logged, counted) when it refused."""
    if not done:
        return True
    wanted = set(done)
    try:
        archive.append([e for e in entries if e.entry_id in wanted])
    except OSError as exc:
        log.error(
            "journal archive refused %d final entries (they stay pending in Redis until it "
            "takes them; back-pressure follows if it does not): %s",
            len(done),
            exc,
        )
        metrics.transient_failure("archive")
        return False
    return True


def drain(
    queue: Journal,
    committer: Committer,
    consumer: str,
    batch_size: int,
    flush_interval: float,
    budget: float,
    metrics: Metrics = NO_METRICS,
    held: Held | None = None,
    hold_for: float = 0.0,
    archive: Archive | None = None,
) -> DrainStats:
    """Claim and commit batches until the journal is empty or ``budget`` seconds passed.

    Raises Transient when the database stays unavailable: the claimed batch is then left
    pending (unacknowledged) for the reconciler, and, given ``held`` and ``hold_for``, kept
    there to be retried first by the next drain (which claims nothing new until it commits).
    """
    stats = DrainStats()
    queue.heartbeat(consumer)
    if held is not None:
        retry = held.take(queue, consumer, hold_for)
        if retry:
            # not fresh: a commit whose answer was lost may have reached SQL
            stats.add(commit_and_ack(queue, committer, retry, metrics=metrics, archive=archive))
            held.clear()
    deadline = time.monotonic() + budget
    block_ms = max(1, int(flush_interval * 1000))
    while time.monotonic() < deadline:
        claimed_at = time.monotonic()
        entries = queue.claim(consumer, batch_size, block_ms)
        if not entries:
            break
        if len(entries) < batch_size:
            # FLUSH_INTERVAL: let a partial batch fill before paying a transaction for it.
            # Claiming whatever had arrived made batches of a few reports under a steady
            # load, and their fixed cost took the CPU the web needed.
            time.sleep(flush_interval)
            entries += queue.claim(consumer, batch_size - len(entries), 0)
        try:
            stats.add(commit_and_ack(queue, committer, entries, fresh=True, metrics=metrics, archive=archive))
        except Transient:
            if held is not None and hold_for > 0:
                held.keep(queue, consumer, entries, claimed_at)
            raise
    return stats


def drain_or_defer(
    queue: Journal,
    committer: Committer,
    consumer: str,
    batch_size: int,
    flush_interval: float,
    budget: float,
    metrics: Metrics = NO_METRICS,
    held: Held | None = None,
    hold_for: float = 0.0,
    archive: Archive | None = None,
) -> dict[str, Any]:
    """``drain`` for the drain task: a Transient (the database stays down) is logged and
    counted, and the claimed entries stay pending for the reconciler (and ``held`` for the
    next drain); returns what was done. Anything else (Redis refusing writes or gone, a bug)
    is logged with its traceback and counted the same way, and never raised into the worker:
    the entries stay pending."""
    try:
        stats = drain(
            queue, committer, consumer, batch_size, flush_interval, budget, metrics, held, hold_for, archive
        )
    except Transient as exc:
        log.warning("drain: database unavailable; claimed entries stay pending for the reconciler: %s", exc)
        metrics.transient_failure("drain")
        return {"error": str(exc)}
    except Exception as exc:
        log.exception("drain failed; claimed entries stay pending for the reconciler: %s", exc)
        metrics.transient_failure("drain")
        return {"error": f"{type(exc).__name__}: {exc}"}
    return dataclasses.asdict(stats)


def reconcile(
    queue: Journal,
    committer: Committer,
    consumer: str,
    stale_after: float,
    batch_size: int,
    retention_seconds: float,
    max_seq_committed: int,
    database_ok: bool,
    metrics: Metrics = NO_METRICS,
    budget: float = 60.0,
    check_journal: Callable[[], str] | None = None,
    archive: Archive | None = None,
) -> dict[str, Any]:
    """One reconciler pass; returns what it did (also logged and recorded in the journal).

    The pass always ends, trims and records itself: it takes each stale entry at most once
    (an entry it could not settle is left for the next pass), stops after ``budget`` seconds,
    and a failure of one step (the database, Redis refusing writes, a bug) is logged and
    counted, and ends the re-driving, not the pass.

    ``check_journal`` (the journal epoch check, services/journal_epoch.py) runs at the end of
    the pass; the status line it returns is kept in the summary under "journal" ("unknown:
    ..." when it raised: Redis or SQL unreachable, the next pass checks again)."""
    report: dict[str, Any] = {
        "reclaimed": 0,
        "committed": 0,
        "superseded": 0,
        "quarantined": 0,
        "skipped": 0,
        "trimmed": 0,
        "seq": -1,
    }
    try:
        report["seq"] = queue.ensure_seq_at_least(max_seq_committed)
    except Exception as exc:
        log.warning("reconcile: could not raise the sequence floor to %d: %s", max_seq_committed, exc)
        metrics.transient_failure("reconcile")
    if database_ok:
        # only while SQL is reachable: redelivery counts must not grow during an outage
        _redrive(queue, committer, consumer, stale_after, batch_size, budget, metrics, report, archive)
    try:
        report["trimmed"] = queue.trim(retention_seconds)
    except Exception as exc:
        log.warning("reconcile: trim refused: %s", exc)
        metrics.transient_failure("reconcile")
    if archive is not None:
        try:
            report["archive_pruned"] = archive.prune()
        except OSError as exc:
            log.warning("reconcile: archive prune failed: %s", exc)
            metrics.transient_failure("archive")
    if check_journal is not None:
        try:
            report["journal"] = check_journal()
        except Exception as exc:
            log.warning("journal epoch check failed: %s", exc)
            report["journal"] = f"unknown: {type(exc).__name__}"
    try:
        queue.record_reconcile(report)
    except Exception as exc:
        log.warning("reconcile: summary refused: %s", exc)
        metrics.transient_failure("reconcile")
    metrics.reconciled()
    changed = any(v for k, v in report.items() if k not in ("seq", "journal"))  # INFO if it changed something
    log.log(logging.INFO if changed else logging.DEBUG, "reconcile %s", report)
    return report


def _redrive(
    queue: Journal,
    committer: Committer,
    consumer: str,
    stale_after: float,
    batch_size: int,
    budget: float,
    metrics: Metrics,
    report: dict[str, Any],
    archive: Archive | None = None,
) -> None:
    seen: set[str] = set()
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        try:
            entries = [
                e
                for e in queue.reclaim(consumer, int(stale_after * 1000), batch_size)
                if e.entry_id not in seen
            ]
        except Exception as exc:
            log.warning("reconcile: reclaim refused, will retry: %s", exc)
            metrics.transient_failure("reconcile")
            return
        if not entries:  # nothing stale, or only entries this pass already tried
            return
        seen.update(e.entry_id for e in entries)
        report["reclaimed"] += len(entries)
        metrics.redelivered(len(entries))
        try:
            outcome = commit_and_ack(queue, committer, entries, metrics=metrics, archive=archive)
        except Transient as exc:
            log.warning("reconcile: database unavailable, will retry: %s", exc)
            metrics.transient_failure("reconcile")
            return
        except Exception as exc:
            log.exception("reconcile: commit failed, entries stay pending: %s", exc)
            metrics.transient_failure("reconcile")
            return
        report["committed"] += len(outcome.committed)
        report["superseded"] += len(outcome.superseded)
        report["quarantined"] += len(outcome.quarantined)
        report["skipped"] += len(outcome.skipped)
