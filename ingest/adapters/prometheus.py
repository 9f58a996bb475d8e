"""Prometheus metrics, shared by gunicorn workers and Celery prefork children.

Multiprocess mode: when PROMETHEUS_MULTIPROC_DIR is set (``ingest run`` sets it to
var/prometheus), every process writes its samples there and ``/metrics`` aggregates them, so
the web endpoint also shows what the workers on the same host did.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter as Counter_
from collections.abc import Callable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest import config

ACCEPTED = Counter("ingest_reports_accepted_total", "Reports accepted (201, not dry runs)")
REJECTED = Counter("ingest_reports_rejected_total", "Requests answered 4xx/503", ["reason"])
COMMITTED = Counter("ingest_reports_committed_total", "Reports committed")
SUPERSEDED = Counter("ingest_reports_superseded_total", "Reports superseded by newer ones")
QUARANTINED = Counter("ingest_reports_quarantined_total", "Reports quarantined", ["reason"])
REDELIVERED = Counter("ingest_reports_redelivered_total", "Journal entries re-driven")
INTAKE_SECONDS = Histogram(
    "ingest_intake_seconds",
    "set_usage handling time",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
COMMIT_DELAY = Histogram(
    "ingest_accept_to_commit_seconds",
    "Acceptance to commit delay",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BATCH_SIZE = Histogram(
    "ingest_batch_size", "Reports per committed batch", buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500)
)
COMMIT_SECONDS = Histogram(
    "ingest_commit_seconds",
    "Batch transaction time",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RECONCILED = Gauge("ingest_reconcile_last_run_timestamp", "Last reconciler run", multiprocess_mode="max")
TRANSIENT = Counter(
    "ingest_transient_failures_total",
    "Tasks stopped by a transient failure (database down); their entries stay pending",
    ["task"],
)
for _task in ("drain", "reconcile"):  # exported at 0 from the start, so alerts see the series
    TRANSIENT.labels(_task)

JOURNAL_LOSS = Counter(
    "ingest_journal_loss_detected_total",
    "Times the journal epoch check found that Redis lost journal data (empty, another "
    "instance, or an older AOF/snapshot)",
)
CLOCK_BEHIND = Counter(
    "ingest_sequence_clock_behind_total",
    "Accepts whose sequence ran more than a second ahead of Redis's clock (the clock jumped back)",
)

# The Waldur bridge's forwarder (services/forward.py)
FORWARD_OUTCOMES = ("acked", "skipped_unchanged", "retried", "quarantined", "unauthorized")
FORWARDS = Counter(
    "ingest_waldur_forwards_total",
    "Outbox keys the forwarder finished, by outcome (acked: one set_usage 201; skipped_unchanged: "
    "equal to the last acknowledged values, no call; retried: a transient failure, backed off; "
    "quarantined: the forward quarantine; unauthorized: a 401/403 held forwarding)",
    ["outcome"],
)
for _outcome in FORWARD_OUTCOMES:
    FORWARDS.labels(_outcome)
FORWARD_ABSORBED = Histogram(
    "ingest_waldur_reports_per_forward",
    "Committed reports one forward (a set_usage, or a skip) absorbed",
    buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 10000),
)
FORWARD_LAG = Gauge(
    "ingest_waldur_forward_lag_seconds",
    "Age of the oldest dirty outbox key (0 when none), as of the last forward pass",
    multiprocess_mode="mostrecent",
)
WALDUR_SECONDS = Histogram(
    "ingest_waldur_set_usage_seconds",
    "Waldur set_usage latency, any outcome",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# the catalog sync from Waldur (services/waldur_sync.py): outcome is changed, unchanged,
# unauthorized (WALDUR_TOKEN refused: a configuration error) or failed
WALDUR_SYNC = Counter("ingest_waldur_sync_total", "Catalog syncs from Waldur, by outcome", ["outcome"])
for _outcome in ("changed", "unchanged", "unauthorized", "failed"):
    WALDUR_SYNC.labels(_outcome)
WALDUR_SYNC_SECONDS = Histogram(
    "ingest_waldur_sync_seconds",
    "Duration of a catalog sync from Waldur",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
WALDUR_SYNC_SUCCESS = Gauge(
    "ingest_waldur_sync_last_success_timestamp",
    "End of the last successful catalog sync from Waldur",
    multiprocess_mode="max",
)


def waldur_sync_outcome(outcome: str, seconds: float) -> None:
    WALDUR_SYNC.labels(outcome).inc()
    WALDUR_SYNC_SECONDS.observe(seconds)
    if outcome in ("changed", "unchanged"):
        WALDUR_SYNC_SUCCESS.set(time.time())


def observe_many(histogram: Histogram, values: list[float]) -> None:
    """``histogram.observe`` for each value, with one write per bucket touched: in
    multiprocess mode every write is an mmap update and a pid check."""
    bounds = histogram._upper_bounds  # noqa: SLF001 - no public bulk API
    counts = Counter_(bisect.bisect_left(bounds, v) for v in values)
    histogram._sum.inc(sum(values))  # noqa: SLF001
    for index, count in counts.items():
        histogram._buckets[index].inc(count)  # noqa: SLF001


class Tally:
    """The request path's counts, kept in the process and written to the metrics at most every
    ``interval`` seconds (and on flush). Three metric writes per accepted report were 4% of a
    web worker's CPU at full load. A scrape can lag by up to ``interval``."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._due = clock() + interval
        self._accepted = 0
        self._seconds: list[float] = []

    def accepted(self, count: int, seconds: float | None = None) -> None:
        self._accepted += count
        if seconds is not None:
            self._seconds.append(seconds)
        if self.clock() >= self._due:
            self.flush()

    def flush(self) -> None:
        self._due = self.clock() + self.interval
        if self._accepted:
            ACCEPTED.inc(self._accepted)
            self._accepted = 0
        if self._seconds:
            observe_many(INTAKE_SECONDS, self._seconds)
            self._seconds = []


TALLY = Tally()


class JournalCollector(Collector):
    """Gauges sampled at scrape time from Redis, so they are right whichever process answers:
    the backlog, the age of the oldest report not yet committed, the workers whose heartbeat
    is fresh, and Redis's memory against its limit. A sample that fails is left out."""

    FAMILIES = (
        ("backlog", "ingest_backlog_reports", "Reports accepted and not yet committed"),
        (
            "oldest_age",
            "ingest_oldest_unfinished_age_seconds",
            "Age of the oldest accepted report not yet committed (0 when none)",
        ),
        ("workers", "ingest_workers_alive", "Workers whose heartbeat is fresh (last 60 s)"),
        ("memory_used", "ingest_redis_memory_used_bytes", "Redis used_memory"),
        ("memory_max", "ingest_redis_memory_max_bytes", "Redis maxmemory (0: unbounded)"),
    )

    def __init__(
        self,
        backlog: Callable[[], float],
        oldest_age: Callable[[], float],
        workers: Callable[[], float],
        memory_used: Callable[[], float],
        memory_max: Callable[[], float],
    ) -> None:
        self.samplers = {
            "backlog": backlog,
            "oldest_age": oldest_age,
            "workers": workers,
            "memory_used": memory_used,
            "memory_max": memory_max,
        }

    def collect(self):  # type: ignore[no-untyped-def]
        for key, name, documentation in self.FAMILIES:
            try:
                value = float(self.samplers[key]())
            except Exception:  # Redis unreachable: /readyz says so; the scrape goes on
                continue
            family = GaugeMetricFamily(name, documentation)
            family.add_metric([], value)
            yield family


def render(journal: JournalCollector | None = None, flush: bool = True) -> tuple[bytes, str]:
    """The exposition. ``flush=False`` from any thread but the one that tallies (the web's
    event loop flushes before it hands the rendering to a thread): Tally is not locked."""
    if flush:
        TALLY.flush()
    registry = CollectorRegistry()
    if config.prometheus_multiproc_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    if journal is not None:
        scrape = CollectorRegistry()
        scrape.register(journal)
        return generate_latest(registry) + generate_latest(scrape), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    if config.prometheus_multiproc_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class PrometheusMetrics:
    """The services' Metrics port (ingest.services.ports.Metrics), written to the counters
    and histograms above."""

    def observe_batch(
        self,
        size: int,
        seconds: float,
        committed: int,
        superseded: int,
        quarantine_reasons: Sequence[str],
        delays: Sequence[float],
    ) -> None:
        BATCH_SIZE.observe(size)
        COMMIT_SECONDS.observe(seconds)
        COMMITTED.inc(committed)
        SUPERSEDED.inc(superseded)
        for reason in quarantine_reasons:
            QUARANTINED.labels(reason).inc()
        for delay in delays:
            COMMIT_DELAY.observe(delay)

    def redelivered(self, count: int) -> None:
        REDELIVERED.inc(count)

    def reconciled(self) -> None:
        RECONCILED.set(time.time())

    def transient_failure(self, task: str) -> None:
        TRANSIENT.labels(task).inc()


class PrometheusForwardMetrics:
    """The forwarder's metrics port (ingest.services.forward_ports.ForwardMetrics)."""

    def forwarded(self, outcome: str) -> None:
        FORWARDS.labels(outcome).inc()

    def absorbed(self, reports: int) -> None:
        FORWARD_ABSORBED.observe(reports)

    def latency(self, seconds: float) -> None:
        WALDUR_SECONDS.observe(seconds)

    def lag(self, seconds: float) -> None:
        FORWARD_LAG.set(seconds)
