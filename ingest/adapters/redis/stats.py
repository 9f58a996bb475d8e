"""What the journal reports about itself: backlog, pending entries, memory, worker heartbeats
and the reconciler's last run. Read by back-pressure, health checks and the ops CLI."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from ingest.adapters.redis.entries import GROUP, id_key, s
from ingest.services.pressure import MemoryReading


class JournalStats:
    """Part of RedisQueue."""

    client: Any
    stream: str
    _group_ready: bool
    accepted_key: str
    acked_key: str
    cap_key: str

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

    def memory_reading(self) -> MemoryReading:
        """Memory, the journal's share of it and the pending count, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.info("memory")
        pipe.memory_usage(self.stream, samples=5)
        pipe.xlen(self.stream)
        pipe.mget(self.accepted_key, self.acked_key)
        info, journal_bytes, entries, (accepted, acked) = pipe.execute()
        return MemoryReading(
            int(info.get("used_memory", 0)),
            int(info.get("maxmemory", 0)),
            int(journal_bytes or 0),
            int(entries or 0),
            max(0, int(accepted or 0) - int(acked or 0)),
        )

    def set_pending_cap(self, cap: int | None) -> None:
        """The most pending reports the accept script lets in (accept.lua refuses a request
        once they are reached); kept for 5 s, so a cap no sampler renews goes away."""
        if cap is None:
            self.client.delete(self.cap_key)
        else:
            self.client.set(self.cap_key, int(cap), px=5000)

    def oldest_pending_id(self) -> str | None:
        self.ensure_group()
        info = self.client.xpending(self.stream, GROUP)
        return s(info["min"]) if info.get("min") else None

    def oldest_unfinished_ms(self) -> int | None:
        """The acceptance time (stream id ms) of the oldest entry not yet acknowledged --
        pending, or never delivered -- or None when every entry was acknowledged."""
        try:
            return self._oldest_unfinished_ms()
        except redis.ResponseError as exc:  # an emptied Redis: the group is gone
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            return self._oldest_unfinished_ms()

    def _oldest_unfinished_ms(self) -> int | None:
        self.ensure_group()
        times: list[int] = []
        oldest = self.oldest_pending_id()
        if oldest:
            times.append(id_key(oldest)[0])
        for group in self.client.xinfo_groups(self.stream):
            if s(group["name"]) == GROUP:
                after = self.client.xrange(self.stream, min="(" + s(group["last-delivered-id"]), count=1)
                if after:
                    times.append(id_key(s(after[0][0]))[0])
        return min(times) if times else None

    def journal_length(self) -> int:
        return int(self.client.xlen(self.stream))

    def heartbeat(self, consumer: str, ttl: int = 60) -> None:
        self.client.set(f"{self.stream}:worker:{consumer}", str(time.time()), ex=ttl)

    def workers_seen(self) -> list[str]:
        prefix = f"{self.stream}:worker:"
        return sorted(s(k)[len(prefix) :] for k in self.client.scan_iter(prefix + "*"))

    def record_reconcile(self, summary: dict[str, Any]) -> None:
        """Keep the reconciler pass's summary (with its "journal" status line, when it ran
        the epoch check), for ``ingest stats``."""
        record: dict[str, Any] = {"at": time.time(), **summary}
        self.client.set(f"{self.stream}:reconciled", json.dumps(record))

    def last_reconcile(self) -> dict[str, Any] | None:
        raw = self.client.get(f"{self.stream}:reconciled")
        return json.loads(raw) if raw else None

    def ping(self) -> bool:
        return bool(self.client.ping())
