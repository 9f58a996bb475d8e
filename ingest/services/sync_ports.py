"""Ports of the catalog sync from Waldur (services/waldur_sync.py): what it reads from Waldur,
what the catalog holds, where runs are recorded, and the one-at-a-time lock. Plain data here;
the adapters (adapters/waldur/catalog_reader.py, adapters/sql/catalog.py, sql/sync_state.py)
do the I/O."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol
from uuid import UUID

# WaldurError.kind (the same words as adapters/waldur/client.py)
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
REJECTED = "rejected"
NOT_FOUND = "not_found"


class WaldurError(Exception):
    """A call to Waldur failed after the reader's own retries. ``kind`` is one of
    unauthorized, forbidden, rejected (a 4xx), throttled, server_error, transport."""

    def __init__(self, kind: str, status: int | None, detail: str, transient: bool = False) -> None:
        super().__init__(f"Waldur {kind} ({f'HTTP {status}' if status else 'no answer'}): {detail[:300]}")
        self.kind = kind
        self.status = status
        self.detail = detail
        self.transient = transient


@dataclasses.dataclass(frozen=True, slots=True)
class ServerInfo:
    version: str | None  # GET /api/version/, None when it could not be read
    is_staff: bool | None
    username: str | None = None

    @property
    def major(self) -> int | None:
        head = (self.version or "").lstrip("v").split(".", 1)[0]
        return int(head) if head.isdigit() else None


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteProvider:
    customer: UUID  # the catalog's key (the public API's ``customer``)
    service_provider: UUID | None  # the uuid api_secret_code is read by
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class SecretRead:
    """A provider's secret as Waldur gave it, or why it could not be read (a 403, a 404)."""

    secret: str | None
    problem: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteComponent:
    type: str
    billing_type: str
    measured_unit: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteOffering:
    uuid: UUID
    customer: UUID
    name: str
    components: tuple[RemoteComponent, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteResource:
    uuid: UUID
    offering: UUID
    name: str
    state: str  # Waldur's label as is: OK, Updating, Terminated ...
    plan: UUID | None


@dataclasses.dataclass(frozen=True, slots=True)
class RemotePlanPeriod:
    uuid: UUID
    resource: UUID
    start: dt.datetime | None
    end: dt.datetime | None


class Progress(Protocol):
    """Where a long read reports how far it is (the command's progress bar; or nothing)."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        return None


class WaldurCatalog(Protocol):
    """Reads the catalog from Waldur. Every method retries transient failures (5xx, 429,
    timeouts) a few times itself, then raises WaldurError; it never writes to Waldur."""

    def server(self) -> ServerInfo: ...

    def providers(self, since: dt.datetime | None) -> list[RemoteProvider]:
        """Service providers (``modified >= since`` where the server filters; it may not)."""
        ...

    def secrets(self, providers: Sequence[RemoteProvider]) -> dict[UUID, SecretRead]:
        """Each provider's api_secret_code by customer uuid (GET only, never a rotation). A
        provider whose secret the token may not read has a ``problem``, it does not raise."""
        ...

    def offerings(self, scope: Sequence[UUID], since: dt.datetime | None) -> list[RemoteOffering]:
        """Offerings with their components; only those in ``scope`` when it is not empty."""
        ...

    def resources(
        self, offerings: Sequence[UUID], since: dt.datetime | dt.date | None, progress: Progress
    ) -> list[RemoteResource]:
        """Resources (of ``offerings`` when not empty), ordered by creation. A server that
        refuses the ``modified`` filter raises WaldurError(kind="rejected", status=400)."""
        ...

    def resources_by_uuid(self, uuids: Sequence[UUID]) -> dict[UUID, RemoteResource]:
        """Those of ``uuids`` that Waldur still has (one retrieve each; 404: gone)."""
        ...

    def plan_periods(
        self, resources: Sequence[UUID], progress: Progress
    ) -> dict[UUID, list[RemotePlanPeriod] | None]:
        """Current and future plan periods of each resource (one request each, a few in
        parallel); None for a resource Waldur no longer has."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class HeldProvider:
    name: str
    secret: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class HeldOffering:
    customer: UUID
    name: str
    components: dict[str, tuple[str, str]]  # type -> (billing type, measured unit)


@dataclasses.dataclass(frozen=True, slots=True)
class HeldResource:
    offering: UUID
    name: str
    state: str
    plan: UUID | None


@dataclasses.dataclass(frozen=True)
class CatalogView:
    """What the catalog holds now, in the terms of a sync."""

    providers: dict[UUID, HeldProvider]
    offerings: dict[UUID, HeldOffering]
    resources: dict[UUID, HeldResource]
    plan_periods: dict[UUID, RemotePlanPeriod]


@dataclasses.dataclass
class ChangeSet:
    """What one sync changes in the catalog; applied in one transaction."""

    providers: list[RemoteProvider] = dataclasses.field(default_factory=list)  # insert or rename
    # (customer, secret, rotate): rotate keeps the current one verifying for the grace
    secrets: list[tuple[UUID, str, bool]] = dataclasses.field(default_factory=list)
    offerings: list[RemoteOffering] = dataclasses.field(default_factory=list)
    resources: list[RemoteResource] = dataclasses.field(default_factory=list)
    plan_periods: list[RemotePlanPeriod] = dataclasses.field(default_factory=list)
    remove_providers: list[UUID] = dataclasses.field(default_factory=list)
    remove_offerings: list[UUID] = dataclasses.field(default_factory=list)
    remove_resources: list[UUID] = dataclasses.field(default_factory=list)
    remove_plan_periods: list[UUID] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(dataclasses.astuple(self))


class CatalogStore(Protocol):
    def view(self, resources: Sequence[UUID] | None = None) -> CatalogView:
        """Providers and offerings, and the resources (with their plan periods): all of
        them, or only those of ``resources`` (an incremental run needs no more)."""
        ...

    def apply(self, changes: ChangeSet, grace: dt.timedelta) -> int:
        """Upsert, delete and rotate in one transaction that bumps the catalog version once;
        returns the new version. Provider fields Waldur does not know (rate_limit) are kept."""
        ...


@dataclasses.dataclass(frozen=True)
class SyncState:
    watermark: dt.datetime | None = None
    last_sync_at: dt.datetime | None = None
    last_full_at: dt.datetime | None = None
    last_summary: dict[str, Any] | None = None
    last_error: str | None = None
    last_error_at: dt.datetime | None = None
    server_version: str | None = None


class SyncStateStore(Protocol):
    """The one row of waldur_sync_state."""

    def read(self) -> SyncState: ...

    def succeeded(
        self,
        *,
        watermark: dt.datetime,
        at: dt.datetime,
        full: bool,
        summary: dict[str, Any],
        server_version: str | None,
    ) -> None:
        """Record a successful run (and clear last_error)."""
        ...

    def failed(self, *, at: dt.datetime, error: str, server_version: str | None) -> None:
        """Record a failed run; the watermark and the last success stay."""
        ...


class SyncLock(Protocol):
    """``lock()`` holds the sync for this run, across processes, or raises SyncBusy."""

    def __call__(self) -> AbstractContextManager[None]: ...


class SyncBusy(Exception):
    """Another catalog sync is running."""
