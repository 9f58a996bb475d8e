"""The ports the services talk to, and the plain records that cross them.

Adapters in ingest/adapters implement these; unit tests use small fakes of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol, Self

from ingest.domain.model import CatalogSnapshot, UsageKey


# The worker builds one UsageRow per usage line and one ReportRecord per report, so both are
# named tuples in the text forms the journal carries (canonical uuids, ISO dates, decimal
# strings): the PostgreSQL path writes them into COPY as they are, and only the generic SQL
# path parses them. Building frozen dataclasses of parsed values was a third of a worker.
class UsageRow(NamedTuple):
    key: UsageKey
    plan_period: str | None  # canonical uuid
    amount: str  # a decimal string, validated at acceptance
    description: str
    recurring: bool
    missing_usage_policy: str
    date: str  # ISO 8601 instant
    report_id: str
    seq: int


class OutboxMark(NamedTuple):
    """A (resource, billing period) a commit applied usage to: Waldur must see it (bridge)."""

    resource: str  # canonical uuid
    billing_period: str  # YYYY-MM-01
    seq: int  # the highest sequence applied to the key in this batch
    reports: int  # reports of this batch the key absorbed


class SequenceTaken(Exception):
    """Raised by ``UnitOfWork.record_reports`` when a report's acceptance sequence already
    belongs to another committed or superseded report: Redis lost acknowledged writes (an AOF
    that lost its last second, a failover) and handed the sequence out again. The committer
    quarantines the report with reason ``sequence_reused``; a quarantined record never
    holds a sequence against others, so that record can always be written."""


class Delivery(NamedTuple):
    """One journal entry as handed to a worker: its stream id, acceptance sequence, the v1
    queue envelope and how many times it has been delivered (a named tuple: one per report)."""

    entry_id: str
    seq: int
    raw: bytes
    deliveries: int = 1


class ReportRecord(NamedTuple):
    id: str
    seq: int
    customer: str  # uuid
    resource: str | None  # uuid
    billing_period: str | None  # YYYY-MM-01
    accepted_at: dt.datetime
    token: str
    payload: str
    state: str  # committed | superseded | quarantined
    reason_code: str | None
    reason: str | None
    deliveries: int
    committed_at: dt.datetime | None
    envelope: bytes = b""  # the v1 queue envelope, so quarantine replay needs no journal


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """What the journal says about reports it was handed in one round trip."""

    first: int  # first sequence (the rest follow in order); -1: rate limited
    kick: bool
    tokens_left: int  # -1: no rate limit applies
    reset_seconds: int  # until the bucket is full again, or until a retry can succeed
    # accept.lua's flags: 1 the clock is behind the sequence, 2 the sequence key was missing,
    # 4 the journal epoch was written (a new or emptied Redis)
    flags: int = 0


ACCEPT_CLOCK_BEHIND = 1  # Accepted.flags
ACCEPT_SEQ_MISSING = 2
ACCEPT_EPOCH_WRITTEN = 4
ACCEPT_FULL = -2  # Accepted.first: back-pressure's pending cap was reached (accept.lua)


class CatalogSource(Protocol):
    def version(self) -> int:
        """A number that changes whenever the catalog changes."""

    def snapshot(self) -> CatalogSnapshot:
        """The whole catalog, read consistently."""


class UnitOfWork(Protocol):
    """One transaction: nothing is visible to others until ``commit`` returns."""

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None: ...

    def commit(self) -> None: ...

    def final_report_ids(self, ids: list[str]) -> set[str]:
        """Ids among ``ids`` that already reached a final state (redeliveries)."""

    def upsert_usages(self, rows: list[UsageRow]) -> set[int]:
        """Apply rows only over lower sequences; return the sequences of the rows applied."""

    def record_reports(self, records: list[ReportRecord]) -> None:
        """Store each report's final state (idempotent per report id)."""

    def mark_outbox(self, marks: list[OutboxMark], now: dt.datetime) -> None:
        """Mark each key dirty for the Waldur forwarder, in this transaction, in one statement:
        ``dirty_seq = max(dirty_seq, seq)``, ``dirty_since = coalesce(dirty_since, now)``,
        ``pending_reports += reports``; a key in the forward quarantine becomes dirty again.
        ``marks`` come sorted by key (lock order: concurrent batches never deadlock)."""


class Kicker(Protocol):
    def __call__(self) -> None:
        """Ask a worker to drain the journal soon (best effort; beat drains regardless)."""


class Journal(Protocol):
    """The accepted-report journal as drain and reconcile use it. Entries stay pending after
    a claim until ``ack``; an entry never acknowledged is re-driven by ``reclaim``."""

    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """Claim up to ``count`` never-delivered entries for ``consumer``."""

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 500) -> list[Delivery]:
        """Take over entries pending longer than ``min_idle_ms`` (crashed or stuck workers)."""

    def ack(self, entry_ids: list[str]) -> int:
        """Acknowledge entries whose batch committed; returns how many were still pending."""

    def heartbeat(self, consumer: str, ttl: int = 60) -> None:
        """Record that ``consumer`` is alive (shown by ``ingest stats``)."""

    def trim(self, retention_seconds: float) -> int:
        """Drop entries older than the retention window and behind every consumer."""

    def ensure_seq_at_least(self, floor: int) -> int:
        """Never hand out a sequence at or below ``floor``; returns the current sequence."""

    def record_reconcile(self, summary: dict[str, int]) -> None:
        """Keep the last reconciler pass's summary for operators."""


class OperatorJournal(Protocol):
    """The journal as the operator services read it: lookups, windows and counts."""

    def find(self, report_id: str, accepted_ms: int) -> Delivery | None:
        """A report's entry, reading only a bounded stretch around its acceptance time."""

    def is_pending_or_new(self, entry_id: str) -> bool: ...

    def read_journal(self, start: str = "-", end: str = "+", page: int = 1000) -> Iterator[Delivery]: ...

    def backlog(self, limit: int = 0) -> int: ...

    def oldest_pending_id(self) -> str | None: ...

    def pending_count(self) -> int: ...

    def journal_length(self) -> int: ...

    def workers_seen(self) -> list[str]: ...

    def last_reconcile(self) -> dict[str, Any] | None: ...


class ReadModel(Protocol):
    """Read-only queries over committed state (SQL), for operators. Values are JSON-ready."""

    def report(self, report_id: str) -> dict[str, Any] | None:
        """A report's row (any state), or None."""

    def committed_values(self, report_id: str) -> list[dict[str, Any]]:
        """The usage values a report currently holds."""

    def final_report_ids(self, ids: list[str]) -> set[str]:
        """Ids among ``ids`` that reached a final state."""

    def current_usage(self, keys: list[UsageKey]) -> dict[UsageKey, tuple[str, int]]:
        """(amount, sequence) of the committed value of each key that has one."""

    def state_counts(self) -> dict[str, Any]:
        """Reports per state, and per second over the last minute."""


class Metrics(Protocol):
    """What drain and reconcile report; best effort, never raises into a commit."""

    def observe_batch(
        self,
        size: int,
        seconds: float,
        committed: int,
        superseded: int,
        quarantine_reasons: Sequence[str],
        delays: Sequence[float],
    ) -> None:
        """One committed batch: its size, transaction time and what became of its reports."""

    def redelivered(self, count: int) -> None:
        """Entries the reconciler re-drove."""

    def reconciled(self) -> None:
        """A reconciler pass finished (now)."""

    def transient_failure(self, task: str) -> None:
        """A task stopped on a transient failure; its entries stay pending."""


class NoMetrics:
    """A Metrics that records nothing (tests and tools that drain by hand)."""

    def observe_batch(
        self,
        size: int,
        seconds: float,
        committed: int,
        superseded: int,
        quarantine_reasons: Sequence[str],
        delays: Sequence[float],
    ) -> None:
        return None

    def redelivered(self, count: int) -> None:
        return None

    def reconciled(self) -> None:
        return None

    def transient_failure(self, task: str) -> None:
        return None
