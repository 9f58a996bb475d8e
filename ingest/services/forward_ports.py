"""The ports of the Waldur forwarder (services/forward.py) and the records that cross them.

Adapters: ``adapters/sql/outbox.py`` (OutboxStore), ``adapters/waldur/sink.py`` (UsageSink),
``adapters/redis/forward_gate.py`` (ForwardGate), ``adapters/prometheus.py``
(ForwardMetrics). Unit tests use small fakes of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, NamedTuple, Protocol


class ComponentValue(NamedTuple):
    """The committed usage of one component of an outbox key, read from component_usages."""

    component: str
    amount: str  # a 2-decimal string, as Waldur takes it
    plan_period: uuid.UUID | None  # the plan period the provider named, if any
    seq: int  # the acceptance sequence of the report that set it


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    """A dirty (resource, billing period), leased to one forwarder, with every component's
    latest committed amount read in the same statement (so ``max_seq`` matches the values)."""

    resource: uuid.UUID
    billing_period: dt.date
    dirty_seq: int
    dirty_since: dt.datetime
    pending_reports: int
    acked_seq: int
    acked_values: dict[str, str] | None
    attempts: int
    values: tuple[ComponentValue, ...]

    @property
    def max_seq(self) -> int:
        return max((v.seq for v in self.values), default=0)

    @property
    def amounts(self) -> dict[str, str]:
        return {v.component: v.amount for v in self.values}


@dataclasses.dataclass(frozen=True)
class UsageCall:
    """One set_usage: every component of one resource and billing period."""

    resource: uuid.UUID
    plan_period: uuid.UUID | None  # sent instead of the resource when set
    date: dt.datetime
    usages: tuple[tuple[str, str], ...]  # (component type, amount)

    def as_json(self) -> dict[str, Any]:
        """The request body as the official client sends it (for the forward quarantine)."""
        doc: dict[str, Any] = {"usages": [{"type": c, "amount": a} for c, a in self.usages]}
        if self.plan_period is not None:
            doc["plan_period"] = str(self.plan_period)
        else:
            doc["resource"] = str(self.resource)
        doc["date"] = self.date.isoformat()
        return doc


# SinkFailure.kind (the same words as adapters/waldur/client.py's WaldurFailure)
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
REJECTED = "rejected"
THROTTLED = "throttled"
SERVER_ERROR = "server_error"
TRANSPORT = "transport"


class SinkFailure(Exception):
    """A set_usage (or version read) Waldur did not accept: what kind, its status and body."""

    def __init__(self, kind: str, status: int | None, body: str, retry_after: float | None = None) -> None:
        super().__init__(f"Waldur {kind} ({status if status is not None else 'no answer'}): {body[:300]}")
        self.kind = kind
        self.status = status
        self.body = body
        self.retry_after = retry_after


class UsageSink(Protocol):
    """Waldur's usage API. Both calls raise SinkFailure for anything but success."""

    def set_usage(self, call: UsageCall) -> None:
        """POST set_usage; returns on 201 (absolute values, last write wins in Waldur)."""

    def server_version(self) -> str:
        """Waldur's version string (``GET /api/version/``)."""


class OutboxStore(Protocol):
    """The outbox in SQL. Each method is its own short transaction; the outcome methods only
    act on a key still leased by ``owner`` (a lease that expired and was taken over belongs
    to the new owner, whose forward then decides)."""

    def lease(self, owner: str, limit: int, now: dt.datetime, until: dt.datetime) -> list[OutboxEntry]:
        """Lease up to ``limit`` dirty keys, oldest ``dirty_since`` first, that are due
        (``next_attempt_at``), not leased, and whose resource has no other key leased: never
        two forwards in flight for one resource. Returns them with their values."""

    def settle(
        self,
        entry: OutboxEntry,
        owner: str,
        seq: int,
        values: dict[str, str] | None,
        now: dt.datetime,
    ) -> bool:
        """Waldur holds the values of ``seq`` (acknowledged now, or already equal):
        ``acked_seq = max(acked_seq, seq)``, ``acked_values``/``acked_at`` set when ``values``
        is given; clean only if ``dirty_seq <= seq`` (a commit during the call keeps it dirty).
        Returns whether the lease was still ours."""

    def retry_later(self, entry: OutboxEntry, owner: str, attempts: int, at: dt.datetime, error: str) -> None:
        """Release the lease; try again at ``at`` (``attempts`` failed so far)."""

    def release(self, entry: OutboxEntry, owner: str) -> None:
        """Release the lease, changing nothing else (forwarding is on hold)."""

    def quarantine(
        self,
        entry: OutboxEntry,
        owner: str,
        reason: str,
        status: int | None,
        body: str,
        request: dict[str, Any] | None,
        attempts: int,
        now: dt.datetime,
    ) -> None:
        """The forward quarantine: a ``forward_failures`` row; the key is ``failed`` and clean
        unless a newer commit arrived meanwhile (then it stays dirty)."""

    def oldest_dirty(self) -> dt.datetime | None:
        """``dirty_since`` of the oldest dirty key (the forward lag)."""


class ForwardGate(Protocol):
    """What all forwarder processes share (Redis): the global rate and a hold."""

    def take(self, rate: float) -> float:
        """Take one token from the global bucket; 0.0 if taken, else seconds to wait."""

    def hold(self, seconds: float, kind: str, reason: str) -> None:
        """Stop every forwarder for ``seconds`` (a 401/403, a Retry-After)."""

    def held(self) -> dict[str, Any] | None:
        """The current hold (``kind``, ``reason``, ``until`` Unix time), or None."""

    def note(self, name: str, doc: dict[str, Any]) -> None:
        """Keep a small document for ``ingest waldur status`` (``last_error``, ``server``)."""


class ForwardMetrics(Protocol):
    """Best effort; never raises into a forward."""

    def forwarded(self, outcome: str) -> None: ...

    def absorbed(self, reports: int) -> None: ...

    def latency(self, seconds: float) -> None: ...

    def lag(self, seconds: float) -> None: ...


class NoForwardMetrics:
    def forwarded(self, outcome: str) -> None:
        return None

    def absorbed(self, reports: int) -> None:
        return None

    def latency(self, seconds: float) -> None:
        return None

    def lag(self, seconds: float) -> None:
        return None
