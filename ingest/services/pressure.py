"""Back-pressure: refuse at intake what the journal cannot keep (a 503 with Retry-After).

What counts is pending work: reports accepted and not yet committed. Committed reports the
journal keeps for its retention window are not pending: with the archive on they are on disk
too, so when Redis memory reaches the high-water mark the window is trimmed at once instead of
refusing reports (the wall that kept intake at 503 for a whole retention period). Without the
archive the window is all replay has, so it counts.

The sample (every ``interval`` seconds, a background thread of each web process) also sets
the journal's pending cap, which the accept script enforces atomically across every web
process: a burst between two samples cannot overshoot the mark by more than one request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from ingest.domain.errors import Backpressure

log = logging.getLogger(__name__)

# bytes a journal entry takes in Redis before there is one to measure (an envelope ~800 B)
DEFAULT_ENTRY_BYTES = 1200
# once refusing for memory, accept again only below the mark minus this fraction of maxmemory:
# Redis's other memory (client buffers, the broker) moves by ~100 KB, and without it intake
# flapped between 503 and 201 at the mark (201s with nothing pending and the window over it)
HYSTERESIS = 0.05


class MemoryReading(NamedTuple):
    """One round trip's worth of what back-pressure reads from Redis."""

    used: int  # used_memory
    limit: int  # maxmemory; 0: unbounded
    journal_bytes: int  # the journal stream (MEMORY USAGE, sampled)
    entries: int  # journal entries (XLEN)
    pending: int  # accepted and not yet committed


class Gauges(Protocol):
    """What back-pressure reads and sets on the journal (a subset of intake's Journal)."""

    def memory_reading(self) -> MemoryReading: ...

    def set_pending_cap(self, cap: int | None) -> None: ...

    def trim(self, retention_seconds: float) -> int: ...


class Pressure:
    """Refuse what we cannot keep: the backlog and Redis memory, sampled at most every
    ``interval`` seconds per process so the request path pays one round trip rarely."""

    def __init__(
        self,
        journal: Gauges,
        max_backlog: int,
        high_water: float,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        window_trimmable: bool = False,
    ) -> None:
        self.journal = journal
        self.max_backlog = max_backlog
        self.high_water = high_water
        self.interval = interval
        self.clock = clock
        # True with the archive on: committed entries may leave Redis whenever memory is short
        self.window_trimmable = window_trimmable
        self._checked = -interval
        self._reason: str | None = None
        self._memory_full = False  # the last judgement refused for memory (HYSTERESIS)
        self.background = False  # sampled by Intake.check_in_background's thread instead

    @property
    def reason(self) -> str | None:
        """Why intake refuses reports now, or None."""
        return self._reason

    def sample(self) -> None:
        self._set(self._sample())

    def _set(self, reason: str | None) -> None:
        """Keep the latest reading; log only the transitions (on: WARNING, off: INFO)."""
        if reason and not self._reason:
            log.warning("back-pressure on: %s; set_usage answers 503 + Retry-After", reason)
        elif self._reason and not reason:
            log.info("back-pressure off: accepting reports again (was: %s)", self._reason)
        self._reason = reason

    def check(self) -> None:
        if not self.background:
            now = self.clock()
            if now - self._checked >= self.interval:
                self._checked = now
                self._set(self._sample())
        if self._reason:
            raise Backpressure(max(1, int(self.interval + 0.999)), self._reason)

    def _sample(self) -> str | None:
        try:
            reading = self.journal.memory_reading()
            over = bool(reading.limit) and reading.used > self.high_water * reading.limit
            if over and self.window_trimmable:
                reading = self._relieve(reading)
                over = reading.used > self.high_water * reading.limit
            # still over the mark after the trim: what it could not take counts (an entry
            # pending for long holds every committed entry after it in the stream)
            reason, cap = self.judge(reading, window_counts=over or not self.window_trimmable)
            self.journal.set_pending_cap(cap)
        except Exception as exc:
            return f"journal unavailable: {type(exc).__name__}"
        return reason

    def _relieve(self, reading: MemoryReading) -> MemoryReading:
        """Over the mark with the archive on: drop the committed entries now."""
        if reading.entries <= reading.pending:
            return reading
        trimmed = self.journal.trim(0)
        if trimmed:
            log.info(
                "Redis memory %d of %d bytes: trimmed %d committed journal entries early (the "
                "archive holds them)",
                reading.used,
                reading.limit,
                trimmed,
            )
            return self.journal.memory_reading()
        return reading

    def judge(self, r: MemoryReading, window_counts: bool = True) -> tuple[str | None, int]:
        """(why to refuse or None, the pending cap for the accept script). ``window_counts``:
        the committed entries Redis keeps count as well (no archive, or a trim that could
        not take them)."""
        cap = self.max_backlog
        if r.pending > self.max_backlog:
            return f"backlog {r.pending} over {self.max_backlog}", cap
        if not r.limit:
            return None, cap
        per_entry = r.journal_bytes / r.entries if r.entries and r.journal_bytes else DEFAULT_ENTRY_BYTES
        window = max(0, r.entries - r.pending) * per_entry if window_counts else 0.0
        other = max(0, r.used - r.journal_bytes)  # everything in Redis but the journal
        mark = self.high_water - (HYSTERESIS if self._memory_full else 0.0)
        room = mark * r.limit - other - window
        cap = max(0, min(cap, int(room / per_entry)))
        self._memory_full = r.pending >= cap
        if self._memory_full:
            held = other + window + r.pending * per_entry
            return (
                f"Redis memory: {r.pending} pending reports, about {int(held)} of {r.limit} bytes "
                f"with what else Redis holds (high-water mark {self.high_water:g})"
            ), cap
        return None, cap
