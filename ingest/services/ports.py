"""The ports the services talk to, and the plain records that cross them.

Adapters in ingest/adapters implement these; unit tests use small fakes of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import NamedTuple, Protocol, Self

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

    first: int  # first sequence (the rest follow in order); -1: rate limited; -2: no sequence
    kick: bool
    tokens_left: int  # -1: no rate limit applies
    reset_seconds: int  # until the bucket is full again, or until a retry can succeed


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


class Kicker(Protocol):
    def __call__(self) -> None:
        """Ask a worker to drain the journal soon (best effort; beat drains regardless)."""
