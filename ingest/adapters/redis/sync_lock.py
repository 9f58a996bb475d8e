"""The SyncLock port in Redis: one catalog sync at a time across every process and host that
shares REDIS_URL (the beat's task, a redelivered copy of it, ``ingest waldur sync``).

The key expires ``ttl`` seconds after its last renewal; a thread renews it while the sync
runs, so a process that dies frees it within ``ttl``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis
from redis.exceptions import LockError

from ingest.services.sync_ports import SyncBusy


class RedisSyncLock:
    def __init__(self, client: redis.Redis, key: str, ttl: float = 60.0) -> None:
        self.client = client
        self.key = key
        self.ttl = ttl

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        lock = self.client.lock(self.key, timeout=self.ttl, blocking=False, thread_local=False)
        if not lock.acquire(blocking=False):
            raise SyncBusy("another catalog sync is running (Redis key " + self.key + ")")
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl / 3):
                # Redis away for a moment: try again; expiry frees the key at worst
                with contextlib.suppress(LockError, redis.RedisError):
                    lock.extend(self.ttl, replace_ttl=True)

        keeper = threading.Thread(target=renew, name="waldur-sync-lock", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join(timeout=5)
            with contextlib.suppress(LockError, redis.RedisError):
                lock.release()
