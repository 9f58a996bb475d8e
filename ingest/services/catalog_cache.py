"""An in-process catalog cache: the request path never waits on SQL once it is warm."""

from __future__ import annotations

import threading
import time

from ingest.domain.model import CatalogSnapshot
from ingest.services.ports import CatalogSource


class CatalogCache:
    """Serves a whole-catalog snapshot; checks the version at most every ``refresh`` seconds
    and reloads only when it changed. If SQL is down, the last snapshot keeps serving."""

    def __init__(self, source: CatalogSource, refresh: float) -> None:
        self.source = source
        self.refresh = refresh
        self._snapshot: CatalogSnapshot | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.background = False  # an event loop's process refreshes from a thread

    def get(self) -> CatalogSnapshot:
        snap = self._snapshot
        if snap is not None and (self.background or time.monotonic() - self._checked < self.refresh):
            return snap
        return self.check()

    def check(self) -> CatalogSnapshot:
        """Compare versions if ``refresh`` seconds have passed, reload if it changed. With
        ``background`` set, only the thread that calls this does (``get`` never waits)."""
        with self._lock:
            if self._snapshot is not None and time.monotonic() - self._checked < self.refresh:
                return self._snapshot
            try:
                version = self.source.version()
                if self._snapshot is None or version != self._snapshot.version:
                    self._snapshot = self.source.snapshot()
            except Exception:
                if self._snapshot is None:
                    raise
            self._checked = time.monotonic()
            return self._snapshot

    def invalidate(self) -> None:
        self._checked = 0.0
