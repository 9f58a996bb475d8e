"""Back-pressure: refuse at intake what the journal cannot keep (a 503 with Retry-After)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from ingest.domain.errors import Backpressure

log = logging.getLogger(__name__)


class Gauges(Protocol):
    """The two readings back-pressure needs from the journal (a subset of intake's Journal)."""

    def backlog(self, limit: int) -> int: ...

    def memory(self) -> tuple[int, int]: ...


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
    ) -> None:
        self.journal = journal
        self.max_backlog = max_backlog
        self.high_water = high_water
        self.interval = interval
        self.clock = clock
        self._checked = -interval
        self._reason: str | None = None
        self.background = False  # sampled by Intake.check_in_background's thread instead

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
            used, limit = self.journal.memory()
            if limit and used > self.high_water * limit:
                return f"Redis memory {used} of {limit} bytes"
            backlog = self.journal.backlog(self.max_backlog)
        except Exception as exc:
            return f"journal unavailable: {type(exc).__name__}"
        if backlog > self.max_backlog:
            return f"backlog {backlog} over {self.max_backlog}"
        return None
