"""The request-path service: authenticate, validate, make durable, answer.

Guarantee: when ``set_usage`` returns a Receipt, the report is in the Redis journal with its
acceptance sequence and billing period fixed; before that nothing was written anywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from ingest.config import Settings
from ingest.domain import signing
from ingest.domain.envelope import Envelope, parse_batch_envelope, parse_envelope
from ingest.domain.errors import Backpressure, RateLimited, Rejected, field_error, non_field_error
from ingest.domain.ids import new_report_id
from ingest.domain.model import Provider
from ingest.domain.validation import validate_report
from ingest.services.catalog_cache import CatalogCache
from ingest.services.journal_epoch import JournalHealth
from ingest.services.ports import ACCEPT_CLOCK_BEHIND, ACCEPT_FULL, ACCEPT_SEQ_MISSING, Accepted, Kicker
from ingest.services.pressure import MemoryReading, Pressure
from ingest.services.receipt import Receipt
from schemas import queue as wire

log = logging.getLogger(__name__)
TOKEN_REUSED = "This token has already been used."
NO_DATA = "No data provided"  # DRF's Serializer.errors for a body of JSON null
CLOCK_WARNING_EVERY = 60.0  # seconds between "clock behind the sequence" warnings


class Journal(Protocol):
    def claim_tokens(self, customer: str, digests: list[str], ttl: float) -> list[bool]: ...

    def forget_tokens(self, customer: str, digests: list[str]) -> None: ...

    def ensure_seq_at_least(self, floor: int) -> int: ...

    def note_floor(self, floor: int) -> None: ...

    def memory_reading(self) -> MemoryReading: ...

    def set_pending_cap(self, cap: int | None) -> None: ...

    def trim(self, retention_seconds: float) -> int: ...


# The accept for an event loop (adapters/redis/accept.py): reports, customer, rate, burst.
AsyncAccept = Callable[[list[tuple[str, bytes]], str, float, float], Awaitable[Accepted]]


def _claims_json(claims: dict[str, Any]) -> bytes:
    """The verified claims as JSON for the audit record. orjson refuses what Python's json
    reads from a signed payload (integers past 64 bits, lone surrogates in keys or unknown
    claims); the standard library writes those, escaped to ASCII."""
    try:
        return orjson.dumps(claims)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(claims, separators=(",", ":")).encode()


class Intake:
    def __init__(
        self,
        settings: Settings,
        catalog: CatalogCache,
        journal: Journal,
        kick: Kicker | None = None,
        clock: Callable[[], float] = time.time,
        sequence_floor: Callable[[], int] = lambda: 0,
        *,
        accept: AsyncAccept,
        journal_check: Callable[[], JournalHealth] | None = None,
        journal_check_interval: float = 5.0,
        on_clock_behind: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.tz = settings.tz
        self.catalog = catalog
        self.journal = journal
        self.kick = kick
        self.clock = clock
        self.sequence_floor = sequence_floor  # the highest sequence SQL has committed
        self.accept = accept
        self.pressure = Pressure(
            journal,
            settings.max_backlog,
            settings.redis_memory_high_water,
            window_trimmable=settings.archive_enabled,
        )
        # the journal epoch check (services/journal_epoch.py), run by its own thread
        self.journal_check = journal_check
        self.journal_check_interval = journal_check_interval
        self.journal_health = JournalHealth("unknown: not checked yet")
        self._check_soon = threading.Event()
        self.on_clock_behind = on_clock_behind
        self._clock_warned = -CLOCK_WARNING_EVERY

    def journal_status(self) -> str:
        """For /readyz: "ok", "degraded: ..." (Redis lost data lately) or "unknown: ..."."""
        return self.journal_health.status

    def pressure_status(self) -> str:
        """For /readyz: "ok", or "degraded: ..." while back-pressure refuses reports."""
        reason = self.pressure.reason
        return f"degraded: {reason}" if reason else "ok"

    def check_journal(self) -> JournalHealth:
        """One journal epoch check, also refreshing the sequence floor accepts pass."""
        try:
            if self.journal_check is None:
                self.journal.note_floor(self.sequence_floor())
                return self.journal_health
            before = self.journal_health.state
            self.journal_health = self.journal_check()
            after = self.journal_health.state
            if (
                self.journal_health.detected is None
                and before is not None
                and after is not None
                and after.losses > before.losses
            ):  # another process detected it (and logged the ERROR): say so here too
                log.warning("journal data loss recorded by another process: %s", after.last_loss)
        except Exception as exc:  # Redis or SQL unreachable: check again next time
            log.warning("journal epoch check failed: %s", exc)
            self.journal_health = JournalHealth(f"unknown: {type(exc).__name__}", self.journal_health.state)
        return self.journal_health

    def check_in_background(self, interval: float = 0.5) -> threading.Thread:
        """Sample back-pressure and check the catalog's version from a daemon thread, so the
        request path (an event loop) never waits on SQL or on a blocking Redis call for them.
        The catalog is checked every CATALOG_REFRESH seconds as before; a reload holds the
        GIL while it builds the snapshot, but the loop keeps running between its slices."""
        self.catalog.background = self.pressure.background = True

        def run() -> None:
            while True:
                self.pressure.sample()  # first: it decides 503s; it catches its own errors
                try:
                    self.catalog.check()
                except Exception as exc:  # the last snapshot keeps serving
                    log.warning("catalog check failed: %s", exc)
                time.sleep(interval)

        thread = threading.Thread(target=run, name="intake-checks", daemon=True)
        thread.start()
        if self.journal_check is not None:
            threading.Thread(target=self._journal_checks, name="journal-epoch", daemon=True).start()
        return thread

    def _journal_checks(self) -> None:
        """Its own thread: a check holds SQL's journal_state lock while it reads Redis, and
        must never delay the back-pressure samples."""
        while True:
            self.check_journal()
            self._check_soon.wait(self.journal_check_interval)
            self._check_soon.clear()

    def _accepted_flags(self, result: Accepted) -> None:
        if result.flags & ACCEPT_SEQ_MISSING:
            # a new or emptied Redis: the clock sequence is safe; check the epoch soon
            log.info("the journal's sequence key was missing: a new or emptied Redis")
            self._check_soon.set()
        if result.flags & ACCEPT_CLOCK_BEHIND:
            if self.on_clock_behind is not None:
                self.on_clock_behind(1)
            now = time.monotonic()
            if now - self._clock_warned >= CLOCK_WARNING_EVERY:
                self._clock_warned = now
                log.warning(
                    "Redis's clock is more than a second behind the acceptance sequence (it jumped "
                    "back, or sequences were raised above it): sequences continue from the last one"
                )

    def _authenticate(self, body: object) -> tuple[Envelope, Provider, dict[str, Any]]:
        if body is None:
            raise non_field_error(NO_DATA)
        snapshot = self.catalog.get()
        try:
            envelope = parse_envelope(body, snapshot.providers)
        except Rejected as exc:
            if "customer" in exc.body and isinstance(body, dict):
                # an unknown customer costs what a known one does: no oracle for valid UUIDs
                signing.burn(body.get("data"))
            raise
        provider = snapshot.providers[envelope.customer]
        return envelope, provider, self._verify(provider, envelope.data, self.clock())

    def _verify(self, provider: Provider, token: str, now: float) -> dict[str, Any]:
        keys = provider.secrets(dt.datetime.fromtimestamp(now, dt.UTC))
        if not keys:
            raise non_field_error(signing.SECRET_NOT_SET)
        return signing.verify(token, keys, now, self.settings.require_iat, self.settings.max_token_age)

    def check_signature(self, body: object) -> None:
        """Raise Rejected unless the envelope is valid and the token verifies."""
        self._authenticate(body)

    def _prepare(
        self, customer: uuid.UUID, token: str, claims: dict[str, Any], accepted_at: float
    ) -> wire.QueuedReport:
        """Validate verified claims against the catalog; the envelope to queue."""
        now = dt.datetime.fromtimestamp(accepted_at, dt.UTC)
        report = validate_report(
            claims,
            self.catalog.get(),
            customer,
            now,
            self.tz,
            self.settings.enforce_ownership,
            self.settings.max_usage_lines,
        )
        return wire.QueuedReport(
            id=new_report_id(accepted_at),
            customer=str(customer),
            resource=str(report.resource.uuid),
            plan_period=str(report.plan_period.uuid) if report.plan_period else None,
            billing_period=report.billing_period.isoformat(),
            date=report.date.isoformat(),
            accepted_at=accepted_at,
            usages=tuple(
                wire.UsageLine(
                    line.type, str(line.amount), line.description, line.recurring, line.missing_usage_policy
                )
                for line in report.lines
            ),
            token=token,
            claims=_claims_json(claims),
        )

    async def _enqueue(
        self, provider: Provider, reports: list[wire.QueuedReport], seen: list[str] | None = None
    ) -> tuple[int, dict[str, str]]:
        """Make reports durable in one round trip; the first sequence and rate headers.

        ``seen``: replay-guard digests the caller already claimed for these reports. The rare
        round trips (back-pressure sample, replay guard, kick) are blocking calls: only the
        accept itself is awaited, and shared with concurrent requests.
        """
        self.pressure.check()
        rate = provider.rate_limit if provider.rate_limit is not None else self.settings.rate_limit
        burst = self.settings.rate_burst or 2 * rate
        if seen is None:
            seen = self._claim_tokens(provider, reports)
        entries = [(r.id, wire.encode(r)) for r in reports]
        try:
            # the sequence comes from Redis's clock, above the floor SQL had (note_floor):
            # a missing sequence key (a new or emptied Redis) refuses nothing
            result = await self.accept(entries, str(provider.customer), rate, burst)
        except Exception as exc:  # Redis unreachable: we cannot keep it, so do not accept it
            log.warning("journal unavailable: %s", exc)
            self._forget_tokens(provider, seen)
            raise Backpressure(1, "journal unavailable") from exc
        if result.flags:
            self._accepted_flags(result)
        if result.first == ACCEPT_FULL:
            self._forget_tokens(provider, seen)
            raise Backpressure(1, "the journal's pending cap is reached")
        if result.first < 0:
            self._forget_tokens(provider, seen)
            raise RateLimited(rate, max(1, result.reset_seconds))
        headers = {}
        if result.tokens_left >= 0:
            headers = {
                "X-RateLimit-Limit": f"{rate:g}",
                "X-RateLimit-Remaining": str(result.tokens_left),
                "X-RateLimit-Reset": str(result.reset_seconds),
            }
        kick = result.kick
        if kick and self.kick is not None:
            try:
                self.kick()
            except Exception as exc:  # best effort: beat drains on its own schedule
                log.warning("kick failed: %s", exc)
        return result.first, headers

    def _claim_tokens(self, provider: Provider, reports: list[wire.QueuedReport]) -> list[str]:
        """The replay guard (TOKEN_REPLAY_WINDOW): refuse a token already accepted."""
        digests = self._claim_each(provider, reports)
        claimed = [d for d in digests if d]
        if any(d is None for d in digests):
            self._forget_tokens(provider, claimed)
            raise non_field_error(TOKEN_REUSED)
        return claimed

    def _claim_each(self, provider: Provider, reports: list[wire.QueuedReport]) -> list[str | None]:
        """Per report, in one round trip: the digest claimed ('' when the guard is off), or
        None when the token was already used."""
        window = self.settings.token_replay_window
        if window <= 0:
            return [""] * len(reports)
        digests = [signing.token_digest(r.token, r.claims) for r in reports]
        fresh = self.journal.claim_tokens(str(provider.customer), digests, window)
        return [d if ok else None for d, ok in zip(digests, fresh, strict=True)]

    def _forget_tokens(self, provider: Provider, digests: list[str]) -> None:
        self.journal.forget_tokens(str(provider.customer), digests)

    async def set_usage(self, body: object) -> Receipt:
        envelope, provider, claims = self._authenticate(body)
        queued = self._prepare(envelope.customer, envelope.data, claims, self.clock())
        if envelope.dry_run:
            return Receipt(None, None, queued.billing_period, True)
        seq, headers = await self._enqueue(provider, [queued])
        return Receipt(queued.id, seq, queued.billing_period, False, headers)

    async def set_usages(self, body: object) -> list[dict[str, Any]]:
        """Batch intake: each token verified and validated as by set_usage; every valid item
        is accepted (all in one Redis round trip) even when others fail. Results in order."""
        if body is None:  # as set_usage answers it
            raise non_field_error(NO_DATA)
        snapshot = self.catalog.get()
        batch = parse_batch_envelope(body, snapshot.providers, self.settings.batch_max_reports)
        provider = snapshot.providers[batch.customer]
        if not provider.secrets(dt.datetime.fromtimestamp(self.clock(), dt.UTC)):
            raise non_field_error(signing.SECRET_NOT_SET)
        results: list[dict[str, Any]] = []
        accepted: list[tuple[int, wire.QueuedReport]] = []
        now = self.clock()
        for index, token in enumerate(batch.reports):
            try:
                if not isinstance(token, str) or not token.strip():
                    raise field_error(
                        "data",
                        "This field may not be blank." if isinstance(token, str) else "Not a valid string.",
                    )
                claims = self._verify(provider, token.strip(), now)
                queued = self._prepare(batch.customer, token.strip(), claims, now)
            except Rejected as exc:
                results.append({"index": index, "status": exc.status, "errors": exc.body})
                continue
            accepted.append((len(results), queued))
            results.append({"index": index, "status": 201, "billing_period": queued.billing_period})
        if accepted and not batch.dry_run:
            seen: list[str] = []
            fresh: list[tuple[int, wire.QueuedReport]] = []
            digests = self._claim_each(provider, [q for _p, q in accepted])
            for (position, queued), digest in zip(accepted, digests, strict=True):
                if digest is None:  # a reused token fails its own item only
                    results[position] = {
                        "index": results[position]["index"],
                        "status": 400,
                        "errors": {"non_field_errors": [TOKEN_REUSED]},
                    }
                    continue
                if digest:
                    seen.append(digest)
                fresh.append((position, queued))
            accepted = fresh
        if accepted and not batch.dry_run:
            first, _headers = await self._enqueue(provider, [q for _i, q in accepted], seen)
            for offset, (position, queued) in enumerate(accepted):
                results[position].update(id=queued.id, sequence=first + offset)
        return results
