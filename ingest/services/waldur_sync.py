"""Catalog sync from Waldur: read providers (and their secrets), offerings, resources and plan
periods through the WaldurCatalog port, compare with what the catalog holds, and apply the
difference in one transaction (the catalog version moves only when something changed).

Incremental runs read what Waldur says changed since the watermark (``modified >=``), and
never assume the filter narrowed anything; a full run reads everything and also removes what
Waldur no longer has (within WALDUR_OFFERINGS). All or nothing per run: a failure before the
write leaves the catalog as it was and is recorded in the sync state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from ingest.services import sync_diff
from ingest.services.sync_ports import (
    REJECTED,
    UNAUTHORIZED,
    CatalogStore,
    CatalogView,
    ChangeSet,
    NoProgress,
    Progress,
    RemoteOffering,
    RemoteProvider,
    RemoteResource,
    SecretRead,
    ServerInfo,
    SyncLock,
    SyncState,
    SyncStateStore,
    WaldurCatalog,
    WaldurError,
)

# the watermark is when a successful run started minus this: the clocks of Waldur and of this
# host differ (NTP keeps them within a second or so), and Waldur stamps ``modified`` when it
# saves a row, a moment before it commits it
SAFETY_MARGIN = dt.timedelta(seconds=60)
# vanished resources are confirmed one by one (a page walk can skip a row when another is
# deleted meanwhile); past this many, the listing is trusted
CONFIRM_LIMIT = 500


class ConfigurationError(Exception):
    """Waldur refused the token (401): WALDUR_TOKEN must be fixed; retrying will not help."""


class SyncFailed(Exception):
    """The run failed (Waldur unavailable after retries, an answer it could not use)."""


@dataclasses.dataclass(frozen=True)
class SyncSettings:
    scope: tuple[UUID, ...] = ()  # WALDUR_OFFERINGS
    grace: dt.timedelta = dt.timedelta(hours=1)  # WALDUR_SECRET_GRACE
    full_interval: dt.timedelta = dt.timedelta(hours=1)  # WALDUR_FULL_SYNC_INTERVAL
    secret_min_length: int = 0


def choose_mode(
    state: SyncState,
    now: dt.datetime,
    full_interval: dt.timedelta,
    forced: bool,
    scope: Sequence[UUID] = (),
) -> tuple[bool, str]:
    """(full?, why). A changed WALDUR_OFFERINGS needs a full run: an incremental one would
    not see the unchanged resources of an offering just added to the scope."""
    if forced:
        return True, "asked for (--full)"
    if state.watermark is None or state.last_full_at is None:
        return True, "first sync"
    before = (state.last_summary or {}).get("scope")
    if before is not None and sorted(before) != sorted(u.hex for u in scope):
        return True, "WALDUR_OFFERINGS changed"
    if now - state.last_full_at >= full_interval:
        return True, f"WALDUR_FULL_SYNC_INTERVAL ({full_interval.total_seconds():g} s) has passed"
    return False, f"changes since {utc_text(state.watermark)}"


def utc_text(moment: dt.datetime) -> str:
    """``2026-12-01T10:00:00.123Z``, as everything the command line prints."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def unauthorized_message(error: WaldurError) -> str:
    detail = error.detail.strip() or "401"
    try:
        import json

        parsed = json.loads(detail)
        if isinstance(parsed, dict) and "detail" in parsed:
            detail = str(parsed["detail"])
    except ValueError:
        pass
    return f"Waldur refused WALDUR_TOKEN ({detail}): set a valid token of a staff user"


@dataclasses.dataclass
class _Read:
    info: ServerInfo
    providers: list[RemoteProvider]
    secrets: dict[UUID, SecretRead]
    offerings: list[RemoteOffering]
    resources: list[RemoteResource]
    resource_filter: str
    all_providers: set[UUID]


class CatalogSync:
    """One run at a time (``lock``); ``run`` is the whole service."""

    def __init__(
        self,
        reader: WaldurCatalog,
        store: CatalogStore,
        state: SyncStateStore,
        lock: SyncLock,
        settings: SyncSettings,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        on_outcome: Callable[[str, float], None] = lambda outcome, seconds: None,
    ) -> None:
        self.reader = reader
        self.store = store
        self.state = state
        self.lock = lock
        self.settings = settings
        self.clock = clock
        self.on_outcome = on_outcome

    def due(self) -> bool:
        """True when a full sync is due (for a caller that wants to say so)."""
        state, now = self.state.read(), self.clock()
        return choose_mode(state, now, self.settings.full_interval, False, self.settings.scope)[0]

    def run(
        self, full: bool = False, dry_run: bool = False, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Sync once; returns the summary (mode and why, per-kind counts of what changed,
        secrets set/rotated/unreadable, seconds). Raises ConfigurationError on a 401,
        SyncFailed on any other Waldur failure, SyncBusy when another sync holds the lock;
        anything else (the database) is recorded as the last error too, and re-raised."""
        with self.lock():
            begun = time.monotonic()
            try:
                return self._run(full, dry_run, progress or NoProgress())
            except (ConfigurationError, SyncFailed):
                raise
            except Exception as exc:
                self.on_outcome("failed", time.monotonic() - begun)
                with contextlib.suppress(Exception):  # the database may be what failed
                    self._failed(dry_run, self.clock(), f"{type(exc).__name__}: {exc}", None)
                raise

    def _run(self, forced: bool, dry_run: bool, progress: Progress) -> dict[str, Any]:
        started = self.clock()
        begun = time.monotonic()
        previous = self.state.read()
        full, reason = choose_mode(
            previous, started, self.settings.full_interval, forced, self.settings.scope
        )
        version: str | None = previous.server_version
        try:
            info = self.reader.server()
            version = info.version or version
            held = self.store.view(resources=())  # providers and offerings: few
            try:
                read = self._read(info, None if full else previous.watermark, progress, held)
            except _FilterRefused as refused:
                full, reason = True, f"Waldur refused the modified filter ({refused})"
                read = self._read(info, None, progress, held)
            view = self.store.view(None if full else [r.uuid for r in read.resources])
            diff = self._compare(view, read, read.resources, full, started)
            if full and diff.vanished_resources:
                diff = self._confirm_vanished(diff, view, read, started)
            fetched = (
                self.reader.plan_periods(diff.fetch_plan_periods, progress) if diff.fetch_plan_periods else {}
            )
            sync_diff.add_plan_periods(diff, view, fetched, now=started)
        except WaldurError as error:
            seconds = time.monotonic() - begun
            if error.kind == UNAUTHORIZED:
                message = unauthorized_message(error)
                self._failed(dry_run, started, message, version)
                self.on_outcome("unauthorized", seconds)
                raise ConfigurationError(message) from None
            self._failed(dry_run, started, str(error), version)
            self.on_outcome("failed", seconds)
            raise SyncFailed(str(error)) from None
        changes = diff.changes
        catalog_version = None
        if not dry_run and not changes.empty:
            catalog_version = self.store.apply(changes, self.settings.grace)
        summary = {
            "mode": "full" if full else "incremental",
            "reason": reason,
            "dry_run": dry_run,
            "server_version": info.version,
            "is_staff": info.is_staff,
            "resource_filter": read.resource_filter,
            "scope": sorted(u.hex for u in self.settings.scope),
            "changed": not changes.empty,
            "catalog_version": catalog_version,
            **diff.summary,
            **({"would_change": preview(changes)} if dry_run else {}),
            "started_at": utc_text(started),
            "seconds": round(time.monotonic() - begun, 3),
        }
        if not dry_run:
            self.state.succeeded(
                watermark=started - SAFETY_MARGIN,
                at=self.clock(),
                full=full,
                summary=summary,
                server_version=info.version,
            )
        self.on_outcome("changed" if not changes.empty else "unchanged", summary["seconds"])
        return summary

    def _failed(self, dry_run: bool, at: dt.datetime, message: str, version: str | None) -> None:
        if not dry_run:
            self.state.failed(at=at, error=message, server_version=version)

    def _read(
        self, info: ServerInfo, since: dt.datetime | None, progress: Progress, view: CatalogView
    ) -> _Read:
        # 7.x filters resources by day only and providers/offerings not at all (it ignores the
        # parameter): ask 7.x for a day, 8.x for a moment, and fall back on a 400
        old = info.major is not None and info.major < 8
        progress.phase("service providers", None)
        providers = self._filtered(self.reader.providers, None if old else since)
        progress.advance(len(providers))
        progress.phase("offerings", None)
        offerings = self._filtered(
            lambda when: self.reader.offerings(self.settings.scope, when), None if old else since
        )
        progress.advance(len(offerings))
        held = view.offerings
        listed = {p.customer for p in providers}
        in_scope = set(self.settings.scope)
        owners = {o.customer for o in offerings} | {
            o.customer for u, o in held.items() if not in_scope or u in in_scope
        }
        if in_scope:  # only the providers of the offerings synced: hold no other secret
            providers = [p for p in providers if p.customer in owners]
        progress.phase("secrets", len(providers))
        secrets = self.reader.secrets(providers)
        progress.advance(len(providers))
        scope = list(self.settings.scope)
        attempts: list[tuple[str, dt.datetime | dt.date | None]]
        if since is None:
            attempts = [("none", None)]
        elif old:
            attempts = [("date", since.date())]
        else:
            attempts = [("date-time", since), ("date", since.date())]
        refused: WaldurError | None = None
        for label, when in attempts:
            try:
                resources = self.reader.resources(scope, when, progress)
            except WaldurError as error:
                if error.kind == REJECTED and error.status == 400:
                    refused = error
                    continue
                raise
            return _Read(info, providers, secrets, offerings, resources, label, listed)
        raise _FilterRefused(refused.detail if refused else "400")

    @staticmethod
    def _filtered(call: Callable[[dt.datetime | None], list[Any]], since: dt.datetime | None) -> list[Any]:
        if since is None:
            return call(None)
        try:
            return call(since)
        except WaldurError as error:
            if error.kind == REJECTED and error.status == 400:
                return call(None)
            raise

    def _compare(
        self, view: CatalogView, read: _Read, resources: list[RemoteResource], full: bool, now: dt.datetime
    ) -> sync_diff.Diff:
        return sync_diff.compare(
            view,
            read.providers,
            read.secrets,
            read.offerings,
            resources,
            full=full,
            scope=self.settings.scope,
            secret_min_length=self.settings.secret_min_length,
            now=now,
            all_providers=read.all_providers,
        )

    def _confirm_vanished(
        self, diff: sync_diff.Diff, view: CatalogView, read: _Read, now: dt.datetime
    ) -> sync_diff.Diff:
        """A page walk can skip a row when another one is deleted meanwhile: before removing
        a resource, ask Waldur for it (past CONFIRM_LIMIT of them, trust the listing)."""
        vanished = diff.vanished_resources
        if len(vanished) > CONFIRM_LIMIT:
            diff.summary["vanished_confirmed"] = False
            return diff
        alive = self.reader.resources_by_uuid(vanished)
        if alive:
            diff = self._compare(view, read, read.resources + list(alive.values()), True, now)
        diff.summary["vanished_confirmed"] = True
        diff.summary["vanished_but_listed_again"] = len(alive)
        return diff


PREVIEW = 20  # uuids per list in a dry run's ``would_change``


def preview(changes: ChangeSet) -> dict[str, dict[str, dict[str, Any]]]:
    """What a dry run would write: per kind and action, how many and the first PREVIEW
    uuids (never a secret)."""

    def ids(values: Sequence[Any]) -> dict[str, Any]:
        return {"count": len(values), "first": [str(v) for v in values[:PREVIEW]]}

    return {
        "service_providers": {
            "upsert": ids([p.customer for p in changes.providers]),
            "remove": ids(changes.remove_providers),
        },
        "secrets": {
            "set": ids([c for c, _s, rotate in changes.secrets if not rotate]),
            "rotate": ids([c for c, _s, rotate in changes.secrets if rotate]),
        },
        "offerings": {
            "upsert": ids([o.uuid for o in changes.offerings]),
            "remove": ids(changes.remove_offerings),
        },
        "resources": {
            "upsert": ids([f"{r.uuid} {r.state}" for r in changes.resources]),
            "remove": ids(changes.remove_resources),
        },
        "plan_periods": {
            "upsert": ids([p.uuid for p in changes.plan_periods]),
            "remove": ids(changes.remove_plan_periods),
        },
    }


class _FilterRefused(Exception):
    pass


def hex_scope(values: Sequence[str]) -> tuple[UUID, ...]:
    """WALDUR_OFFERINGS (hex strings) as uuids."""
    return tuple(UUID(v) for v in values)
