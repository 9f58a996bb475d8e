"""What the journal reports about itself: backlog, pending entries, memory, worker heartbeats
and the reconciler's last run. Read by back-pressure, health checks and the ops CLI."""

from __future__ import annotations

import json
import time
from typing import Any

from ingest.adapters.redis.entries import GROUP, s


class JournalStats:
    """Part of RedisQueue."""

    client: Any
    stream: str
    accepted_key: str
    acked_key: str

    def ensure_group(self) -> None:
        raise NotImplementedError

    def pending_count(self) -> int:
        self.ensure_group()
        info = self.client.xpending(self.stream, GROUP)
        return int(info["pending"])

    def backlog(self, limit: int = 0) -> int:
        """Reports accepted but not yet committed (never delivered plus pending).

        Two counters kept by the accept and ack scripts: O(1) on every Redis version, so the
        back-pressure check costs the same whatever the backlog (``limit`` is ignored).
        """
        accepted, acked = self.client.mget(self.accepted_key, self.acked_key)
        return max(0, int(accepted or 0) - int(acked or 0))

    def memory(self) -> tuple[int, int]:
        """(used_memory, maxmemory) in bytes; maxmemory 0 means unbounded."""
        info = self.client.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    def oldest_pending_id(self) -> str | None:
        self.ensure_group()
        info = self.client.xpending(self.stream, GROUP)
        return s(info["min"]) if info.get("min") else None

    def journal_length(self) -> int:
        return int(self.client.xlen(self.stream))

    def heartbeat(self, consumer: str, ttl: int = 60) -> None:
        self.client.set(f"{self.stream}:worker:{consumer}", str(time.time()), ex=ttl)

    def workers_seen(self) -> list[str]:
        prefix = f"{self.stream}:worker:"
        return sorted(s(k)[len(prefix) :] for k in self.client.scan_iter(prefix + "*"))

    def record_reconcile(self, summary: dict[str, int]) -> None:
        self.client.set(f"{self.stream}:reconciled", json.dumps({"at": time.time(), **summary}))

    def last_reconcile(self) -> dict[str, Any] | None:
        raw = self.client.get(f"{self.stream}:reconciled")
        return json.loads(raw) if raw else None

    def ping(self) -> bool:
        return bool(self.client.ping())
