"""Forwarding committed usage to Waldur (the bridge, part 2): drain the outbox.

Guarantees:
- one set_usage per dirty (resource, billing period), carrying the latest committed amount
  of every component of that key: many reports become one call;
- never two forwards in flight for one resource (a lease in SQL), and never a value older
  than what Waldur acknowledged (``acked_seq``): Waldur is last-write-wins with no sequence;
- a key is clean only once Waldur acknowledged its newest committed sequence; a commit that
  lands during the call keeps it dirty, and the next pass sends the newer values;
- keys whose values equal the last acknowledged forward are settled without a call;
- every process shares one rate (WALDUR_FORWARD_RATE, a Redis token bucket), oldest keys
  first, at most WALDUR_FORWARD_CONCURRENCY calls in flight per process;
- transient failures (transport, 429, 5xx) are retried with exponential back-off and jitter,
  honouring Retry-After; a 4xx, or a 5xx that keeps repeating, goes to the forward
  quarantine with Waldur's status and body; a 401/403 holds all forwarding (configuration).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from ingest.domain.model import CatalogSnapshot
from ingest.services import forward_policy as policy
from ingest.services.forward_ports import (
    FORBIDDEN,
    REJECTED,
    SERVER_ERROR,
    THROTTLED,
    UNAUTHORIZED,
    ForwardGate,
    ForwardMetrics,
    NoForwardMetrics,
    OutboxEntry,
    OutboxStore,
    SinkFailure,
    UsageCall,
    UsageSink,
)

log = logging.getLogger(__name__)

# outcomes of one key (the ``outcome`` label of ingest_waldur_forwards_total)
ACKED = "acked"
SKIPPED_UNCHANGED = "skipped_unchanged"
RETRIED = "retried"
QUARANTINED = "quarantined"
HELD = "unauthorized"  # a 401/403: forwarding is held
NOT_YET = "not_yet"  # the first minute of a month (see forward_policy.usage_date)
RELEASED = "released"  # forwarding was put on hold while the key waited for a token
ERROR = "error"  # a bug or SQL trouble; the lease expires and the key is taken again


class Forwarder:
    """One process's forwarder. ``run`` is one pass; the Celery task calls it."""

    def __init__(
        self,
        outbox: OutboxStore,
        sink: UsageSink,
        gate: ForwardGate,
        catalog: Callable[[], CatalogSnapshot],
        owner: str,
        rate: float,
        concurrency: int,
        tz: ZoneInfo,
        call_timeout: float,
        metrics: ForwardMetrics | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        max_server_errors: int = 6,
        auth_hold: float = 120.0,
        version_ttl: float = 600.0,
    ) -> None:
        self.outbox = outbox
        self.sink = sink
        self.gate = gate
        self.catalog = catalog
        self.owner = owner
        self.rate = rate
        self.concurrency = max(1, concurrency)
        self.tz = tz
        # a lease outlives any call (the client's timeout applies per phase) and its wait for
        # a token, so it never expires under a forward that is still running
        self.lease_for = dt.timedelta(seconds=3 * call_timeout + 60)
        self.metrics = metrics or NoForwardMetrics()
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic
        self.rng = rng or random.Random()
        self.max_server_errors = max_server_errors
        self.auth_hold = auth_hold
        self.version_ttl = version_ttl
        self._version: tuple[str | None, float] | None = None  # (version, read at, monotonic)
        self._version_lock = threading.Lock()
        self._version_retry_at = 0.0  # after a failed read, not before this (monotonic)

    # -- one pass ------------------------------------------------------------------------

    def run(self, budget: float) -> dict[str, int]:
        """Forward dirty keys for up to ``budget`` seconds (calls in flight then finish).
        Returns how many keys ended in each outcome."""
        done: collections.Counter[str] = collections.Counter()
        deadline = self.monotonic() + budget
        try:
            catalog = self.catalog()
        except Exception as exc:  # SQL unavailable: the next pass retries
            log.warning("forward pass stopped: %s: %s", type(exc).__name__, exc)
            return {"stopped": 1}
        try:
            self._server_version()  # once per process (and TTL): for the 7.x rule and for status
        except Exception as exc:  # Redis unavailable for the note: the pass goes on
            log.warning("forward: cannot note Waldur's version: %s", exc)
        with cf.ThreadPoolExecutor(self.concurrency, thread_name_prefix="forward") as pool:
            running: set[cf.Future[str]] = set()
            more = True
            while True:
                if more and self.monotonic() < deadline and len(running) < self.concurrency:
                    try:
                        entries = self._lease(self.concurrency - len(running))
                    except Exception as exc:  # SQL or Redis unavailable: the next pass retries
                        log.warning("forward pass stopped: %s: %s", type(exc).__name__, exc)
                        done["stopped"] += 1
                        entries = []
                    if entries is None:
                        done["held"] += 1
                    else:
                        done["leased"] += len(entries)
                    more = bool(entries)
                    running |= {pool.submit(self._guarded, e, catalog) for e in entries or ()}
                if not running:
                    break
                finished, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    done[future.result()] += 1
        self._observe_lag()
        return dict(done)

    def _lease(self, count: int) -> list[OutboxEntry] | None:
        """Up to ``count`` keys to forward now; None while forwarding is held."""
        if self.gate.held() is not None:
            return None
        now = self.clock()
        return self.outbox.lease(self.owner, count, now, now + self.lease_for)

    def _observe_lag(self) -> None:
        try:
            oldest = self.outbox.oldest_dirty()
        except Exception as exc:  # the database is down: the next pass says it
            log.warning("forward: cannot read the outbox lag: %s", exc)
            return
        age = 0.0 if oldest is None else max(0.0, (self.clock() - oldest).total_seconds())
        self.metrics.lag(age)

    def _guarded(self, entry: OutboxEntry, catalog: CatalogSnapshot) -> str:
        try:
            outcome = self._forward(entry, catalog)
        except Exception as exc:
            log.exception("forward of %s %s failed: %s", entry.resource, entry.billing_period, exc)
            outcome = ERROR
        self.metrics.forwarded(outcome)
        return outcome

    # -- one key -------------------------------------------------------------------------

    def _forward(self, entry: OutboxEntry, catalog: CatalogSnapshot) -> str:
        now = self.clock()
        if entry.resource not in catalog.resources:
            # a staff token could write it anyway: only what our catalog holds is forwarded
            self._quarantine(entry, "not_in_catalog", None, "resource is not in our catalog", None)
            return QUARANTINED
        values = entry.amounts
        seq = entry.max_seq
        if not values:  # no usage rows (deleted by hand): nothing to send
            self.outbox.settle(entry, self.owner, max(entry.dirty_seq, entry.acked_seq), None, now)
            return SKIPPED_UNCHANGED
        if seq < entry.acked_seq or (entry.acked_values is not None and values == entry.acked_values):
            # Waldur holds these values (or newer ones): no call, the key is clean
            self.outbox.settle(entry, self.owner, max(seq, entry.acked_seq), None, now)
            self.metrics.absorbed(entry.pending_reports)
            return SKIPPED_UNCHANGED
        if policy.is_past(entry.billing_period, now, self.tz):
            problem = self._past_month_problem()
            if problem == "unknown":
                self.outbox.retry_later(
                    entry,
                    self.owner,
                    entry.attempts,
                    now + dt.timedelta(seconds=30),
                    "server version unknown",
                )
                return RETRIED
            if problem is not None:
                self._quarantine(entry, "past_month_on_7x", None, problem, None)
                return QUARANTINED
        date = policy.usage_date(entry.billing_period, now, self.tz)
        if date is None:
            self.outbox.retry_later(
                entry, self.owner, entry.attempts, policy.not_before(entry.billing_period, self.tz), "not yet"
            )
            return NOT_YET
        # By resource, never by plan period: intake stores the period it resolved from our catalog
        # when the provider named none, so a stored period is not the provider's choice; Waldur
        # resolves the period in force at ``date`` from its own, current data.
        call = UsageCall(entry.resource, None, date, tuple(sorted(values.items())))
        if not self._token():
            self.outbox.release(entry, self.owner)
            return RELEASED
        started = self.monotonic()
        try:
            self.sink.set_usage(call)
        except SinkFailure as failure:
            self.metrics.latency(self.monotonic() - started)
            return self._failed(entry, call, failure)
        self.metrics.latency(self.monotonic() - started)
        self.outbox.settle(entry, self.owner, seq, values, self.clock())
        self.metrics.absorbed(entry.pending_reports)
        return ACKED

    def _token(self) -> bool:
        """Wait for a token of the global bucket; False if forwarding is put on hold."""
        while True:
            if self.gate.held() is not None:
                return False
            wait = self.gate.take(self.rate)
            if wait <= 0:
                return True
            self.sleep(min(wait, 1.0))

    def _server_version(self) -> tuple[bool, str | None]:
        """(known, Waldur's version), read once per process and again after ``version_ttl``;
        not known while it cannot be read (then read again on the next call)."""
        with self._version_lock:
            if self._version is None or self.monotonic() - self._version[1] > self.version_ttl:
                if self.monotonic() < self._version_retry_at:
                    return False, None
                try:
                    version: str | None = self.sink.server_version()
                except SinkFailure as failure:
                    if failure.kind != REJECTED:
                        log.warning("forward: cannot read Waldur's version: %s", failure)
                        self._version_retry_at = self.monotonic() + 30.0
                        return False, None
                    version = None  # no usable /api/version/: an old server
                self._version = (version, self.monotonic())
                self.gate.note("server", {"version": version, "at": time.time()})
            return True, self._version[0]

    def _past_month_problem(self) -> str | None:
        """None if the server files a past month's usage under the month of ``date``;
        "unknown" while its version cannot be read; else why not."""
        known, version = self._server_version()
        if not known:
            return "unknown"
        if policy.honours_date(version):
            return None
        return (
            f"Waldur {version or '(version unknown)'} ignores set_usage's date and would file a "
            "past month's usage under the current month; not forwarded"
        )

    # -- failures ------------------------------------------------------------------------

    def _failed(self, entry: OutboxEntry, call: UsageCall, failure: SinkFailure) -> str:
        now = self.clock()
        self.gate.note(
            "last_error",
            {
                "at": now.timestamp(),
                "kind": failure.kind,
                "status": failure.status,
                "body": failure.body[:500],
                "resource": str(entry.resource),
                "billing_period": entry.billing_period.isoformat(),
            },
        )
        if failure.kind in (UNAUTHORIZED, FORBIDDEN):
            log.error(
                "forward: Waldur answered %s (%s): forwarding held for %.0f s; check WALDUR_TOKEN, its roles",
                failure.status,
                failure.body[:200],
                self.auth_hold,
            )
            self.gate.hold(self.auth_hold, failure.kind, failure.body[:300])
            self.outbox.release(entry, self.owner)
            return HELD
        reason = policy.rejection_reason(failure.body) if failure.kind == REJECTED else failure.kind
        attempts = entry.attempts + 1
        if failure.kind == REJECTED and reason != "future_date":
            self._quarantine(entry, reason, failure.status, failure.body, call.as_json(), attempts)
            return QUARANTINED
        if failure.kind in (SERVER_ERROR, REJECTED) and attempts >= self.max_server_errors:
            # a 5xx that keeps repeating is Waldur refusing this input (bridge §7 row 7)
            self._quarantine(entry, reason, failure.status, failure.body, call.as_json(), attempts)
            return QUARANTINED
        if failure.kind == THROTTLED:
            # a 429 is about our rate as a whole (a proxy's limit): every forwarder waits; a
            # 5xx is about this call, so only this key backs off (honouring its Retry-After)
            self.gate.hold(
                min(failure.retry_after or policy.BACKOFF_BASE, policy.BACKOFF_CAP), failure.kind, "429"
            )
        delay = policy.backoff(attempts, failure.retry_after, self.rng)
        log.warning(
            "forward of %s %s failed (attempt %d), retrying in %.1f s: %s",
            entry.resource,
            entry.billing_period,
            attempts,
            delay,
            failure,
        )
        self.outbox.retry_later(entry, self.owner, attempts, now + dt.timedelta(seconds=delay), str(failure))
        return RETRIED

    def _quarantine(
        self,
        entry: OutboxEntry,
        reason: str,
        status: int | None,
        body: str,
        request: dict[str, Any] | None,
        attempts: int | None = None,
    ) -> None:
        log.warning(
            "forward of %s %s quarantined (%s): %s", entry.resource, entry.billing_period, reason, body[:200]
        )
        self.outbox.quarantine(
            entry,
            self.owner,
            reason,
            status,
            body,
            request,
            attempts if attempts is not None else entry.attempts + 1,
            self.clock(),
        )
