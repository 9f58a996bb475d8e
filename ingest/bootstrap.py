"""The one place that builds engines, pools and clients -- once per process, after any fork.

gunicorn and Celery prefork both fork; nothing here runs at import time. Call ``runtime()``
from inside the process that will use the connections.
"""

from __future__ import annotations

import functools
import gc
import os
import socket
from typing import Any

import redis
import redis.asyncio
from sqlalchemy import Engine

from ingest import config, logs
from ingest.adapters.redis.accept import AcceptPipeline
from ingest.adapters.redis.journal import RedisQueue
from ingest.adapters.secretbox import SecretBox
from ingest.adapters.sql.catalog import SqlCatalog
from ingest.adapters.sql.unit_of_work import SqlUnitOfWork, make_engine
from ingest.services.catalog_cache import CatalogCache
from ingest.services.commit import Committer
from ingest.services.intake import Intake

DRAIN_TASK = "workers.tasks.drain"


def tune_gc() -> None:
    """Call once a process has imported and loaded what it keeps (after a fork, after the
    warm-up). A worker allocates a few tuples per usage line; with the default thresholds the
    cyclic collector ran every 700 allocations and its full passes walked the whole catalog
    and caches: a sixth of a worker's profile. Objects alive now are frozen out of collection
    and young collections run every 50,000 allocations. Nothing here relies on cycles being
    freed promptly."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Runtime:
    """Everything a process needs, built lazily from one Settings object."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings

    @functools.cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @functools.cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.settings.redis_url,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
        )

    @functools.cached_property
    def queue(self) -> RedisQueue:
        q = RedisQueue(
            self.redis, self.settings.redis_prefix, kick_ms=max(1, int(self.settings.flush_interval * 1000))
        )
        return q

    @functools.cached_property
    def accept_pipeline(self) -> AcceptPipeline:
        """The web's accept path: one pipelined Redis write per event-loop turn."""
        pool = redis.asyncio.ConnectionPool.from_url(
            self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
        return AcceptPipeline(self.queue, pool.make_connection)

    @functools.cached_property
    def catalog_source(self) -> SqlCatalog:
        return SqlCatalog(self.engine, SecretBox(self.settings.secret_encryption_key or None))

    @functools.cached_property
    def catalog(self) -> CatalogCache:
        return CatalogCache(self.catalog_source, self.settings.catalog_refresh)

    @functools.cached_property
    def producer(self) -> Any:
        from celery import Celery  # imported here: only processes that send tasks pay for it

        return Celery("ingest-producer", broker=self.settings.redis_url, set_as_current=False)

    def kick(self) -> None:
        self.producer.send_task(DRAIN_TASK, expires=max(2.0, self.settings.flush_interval * 10))

    @functools.cached_property
    def intake(self) -> Intake:
        return Intake(
            self.settings,
            self.catalog,
            self.queue,
            self.kick,
            sequence_floor=self.committed_sequence,
            accept=self.accept_pipeline.accept,
        )

    def committed_sequence(self) -> int:
        """The highest acceptance sequence SQL holds (0 for an empty database)."""
        with SqlUnitOfWork(self.engine) as uow:
            return uow.max_seq()

    @functools.cached_property
    def worker_catalog(self) -> CatalogCache:
        # the authoritative check at commit: re-read the version before every batch
        return CatalogCache(self.catalog_source, 0.0)

    @functools.cached_property
    def committer(self) -> Committer:
        return Committer(
            lambda: SqlUnitOfWork(self.engine),
            self.worker_catalog.get,
            self.settings.max_deliveries,
        )

    @property
    def consumer_name(self) -> str:
        return f"{socket.gethostname()}-{os.getpid()}"


@functools.cache
def runtime() -> Runtime:
    settings = config.load()
    logs.configure(settings.log_level)
    return Runtime(settings)
