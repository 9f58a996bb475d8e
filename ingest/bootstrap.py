"""The one place that builds engines, pools and clients -- once per process, after any fork.

gunicorn and Celery prefork both fork; nothing here runs at import time. Call ``runtime()``
from inside the process that will use the connections.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import os
import socket
import time
import uuid
from types import ModuleType
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import Engine, text

from ingest import config, logs
from ingest.adapters import prometheus
from ingest.adapters.redis import connections
from ingest.adapters.redis.accept import AcceptPipeline
from ingest.adapters.redis.forward_gate import RedisForwardGate
from ingest.adapters.redis.journal import RedisQueue
from ingest.adapters.secretbox import SecretBox
from ingest.adapters.sql import migrate
from ingest.adapters.sql import read_model as queries
from ingest.adapters.sql.catalog import SqlCatalog
from ingest.adapters.sql.journal_state import SqlEpochStore
from ingest.adapters.sql.outbox import SqlOutbox
from ingest.adapters.sql.unit_of_work import SqlUnitOfWork, make_engine
from ingest.domain.errors import Transient
from ingest.domain.model import UsageKey
from ingest.services import journal_epoch
from ingest.services.archive_ports import Archive
from ingest.services.catalog_cache import CatalogCache
from ingest.services.commit import Committer
from ingest.services.forward import Forwarder
from ingest.services.intake import Intake
from ingest.services.ports import Metrics

if TYPE_CHECKING:  # the Waldur client loads thousands of modules: only the bridge pays for it
    from ingest.adapters.sql.sync_state import SqlSyncState
    from ingest.services.waldur_sync import CatalogSync

DRAIN_TASK = "workers.tasks.drain"
FORWARD_TASK = "workers.forward.forward"

# Celery's queues and which task goes where, for the workers' app and every producer (the webs'
# drain kicks, the drains' forward kicks). The Procfile's ``worker`` consumes MAINTENANCE_QUEUE
# and DRAIN_QUEUE (``-Q maintenance,celery``; a worker without ``-Q`` too), polled in that
# order (kombu's ``queue_order_strategy: priority``): a reconciler pass runs as soon as the
# worker is free, never behind a line of drains (in the drains' queue it expired there: passes
# every 35-56 s instead of RECONCILE_INTERVAL=5 s under load), and queued passes that expired
# are dropped at once instead of piling up. The ``forwarder`` consumes WALDUR_QUEUE only.
DRAIN_QUEUE = "celery"
MAINTENANCE_QUEUE = "maintenance"
WALDUR_QUEUE = "waldur"
WORKER_QUEUES = (MAINTENANCE_QUEUE, DRAIN_QUEUE)
TASK_ROUTES = {
    "workers.forward.*": {"queue": WALDUR_QUEUE},
    "workers.sync.*": {"queue": WALDUR_QUEUE},
    "workers.tasks.reconcile": {"queue": MAINTENANCE_QUEUE},
}


def task_routing() -> dict[str, Any]:
    """The routing part of every Celery app's configuration (the workers' and the producers')."""
    return {"task_routes": TASK_ROUTES, "task_default_queue": DRAIN_QUEUE}


def broker_url(settings: config.Settings) -> str:
    """The Celery broker URL: REDIS_URL, or kombu's ``sentinel://`` list with Sentinel."""
    return connections.broker_url(settings)


def broker_transport_options(settings: config.Settings) -> dict[str, Any]:
    """kombu transport options: a consumer's queues polled in the order given (WORKER_QUEUES),
    and what the broker URL needs (``master_name`` with Sentinel)."""
    return {"queue_order_strategy": "priority", **connections.broker_transport_options(settings)}


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


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations up to ``revision``."""
    migrate.upgrade(database_url, revision)


def sql_catalog(engine: Engine, settings: config.Settings) -> SqlCatalog:
    """The one builder of the SQL catalog: provider secrets are sealed with
    SECRET_ENCRYPTION_KEY when it is set."""
    return SqlCatalog(engine, SecretBox(settings.secret_encryption_key or None))


def load_catalog(settings: config.Settings, doc: dict[str, Any]) -> dict[str, int]:
    """Upsert a parsed catalog document with a short-lived engine (``ingest run``)."""
    engine = make_engine(settings.database_url)
    try:
        return sql_catalog(engine, settings).load(doc)
    finally:
        engine.dispose()


def metrics() -> ModuleType:
    """The metrics the web writes (REJECTED, TALLY, render, ...): the Prometheus adapter."""
    return prometheus


def journal_gauges(queue: RedisQueue) -> prometheus.JournalCollector:
    """The scrape-time gauges of the journal: backlog, oldest unfinished report, live
    workers, Redis memory."""

    def oldest_age() -> float:
        oldest = queue.oldest_unfinished_ms()
        return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)

    return prometheus.JournalCollector(
        queue.backlog,
        oldest_age,
        lambda: len(queue.workers_seen()),
        lambda: queue.memory()[0],
        lambda: queue.memory()[1],
    )


def metrics_exposition(journal: bool = False, flush: bool = True) -> tuple[bytes, str]:
    """The Prometheus exposition (body, content type), aggregated over this host's processes
    in multiprocess mode, with the journal's gauges when ``journal``. ``flush=False`` from
    any thread but the one that tallies."""
    return prometheus.render(journal_gauges(runtime().queue) if journal else None, flush)


def flush_metrics() -> None:
    """Write the counts this process still holds (before it exits)."""
    prometheus.TALLY.flush()


def metrics_process_exited(pid: int) -> None:
    """Drop a dead process's live gauges from the shared metrics directory."""
    prometheus.process_exited(pid)


class SqlReadModel:
    """The services' ReadModel port, plus the command line's queries, over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def report(self, report_id: str) -> dict[str, Any] | None:
        return queries.report(self.engine, report_id)

    def committed_values(self, report_id: str) -> list[dict[str, Any]]:
        return queries.committed_values(self.engine, report_id)

    def final_report_ids(self, ids: list[str]) -> set[str]:
        with SqlUnitOfWork(self.engine) as uow:
            return uow.final_report_ids(ids)

    def current_usage(self, keys: list[UsageKey]) -> dict[UsageKey, tuple[str, int]]:
        parsed = [(uuid.UUID(k.resource), k.component, dt.date.fromisoformat(k.billing_period)) for k in keys]
        found = queries.current_usage(self.engine, parsed)
        return {UsageKey(str(r), c, p.isoformat()): value for (r, c, p), value in found.items()}

    def state_counts(self) -> dict[str, Any]:
        return queries.state_counts(self.engine)

    def usage_rows(self, resource: uuid.UUID, period: dt.date | None = None) -> list[dict[str, Any]]:
        return queries.usage_rows(self.engine, resource, period)

    def quarantined(
        self,
        customer: uuid.UUID | None = None,
        resource: uuid.UUID | None = None,
        reason: str | None = None,
        since: dt.datetime | None = None,
        ids: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        return queries.quarantined(self.engine, customer, resource, reason, since, ids)

    def delete_reports(self, ids: list[str]) -> int:
        """Delete quarantined reports for good; returns how many went."""
        return queries.delete_reports(self.engine, ids)


class Runtime:
    """Everything a process needs, built lazily from one Settings object."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings

    @functools.cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @functools.cached_property
    def redis(self) -> redis.Redis:
        """REDIS_URL's server, or the primary the Sentinels name (found again after a
        failover: a connection that meets READONLY or an error is dropped)."""
        return connections.sync_client(self.settings)

    @functools.cached_property
    def queue(self) -> RedisQueue:
        q = RedisQueue(
            self.redis,
            self.settings.redis_prefix,
            kick_ms=max(1, int(self.settings.flush_interval * 1000)),
            min_replicas=self.settings.redis_min_replicas_ack,
        )
        return q

    @functools.cached_property
    def accept_pipeline(self) -> AcceptPipeline:
        """The web's accept path: one pipelined Redis write per event-loop turn, ending with
        ``WAIT`` when REDIS_MIN_REPLICAS_ACK > 0; its connections go to the primary."""
        return AcceptPipeline(
            self.queue,
            self.primary_connector,
            self.settings.redis_min_replicas_ack,
            self.settings.redis_ack_timeout_ms,
        )

    @functools.cached_property
    def primary_connector(self) -> connections.AsyncPrimary:
        return connections.AsyncPrimary(self.settings)

    def redis_primary(self) -> dict[str, str]:
        """A readiness check: the primary this process writes to, as ``host:port``; raises
        while there is none (no Sentinel names one, or it answers as a replica)."""
        host, port = connections.primary_address(self.settings)
        client: Any = self.redis
        role = client.execute_command("ROLE")
        name = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
        if name != "master":
            raise connections.NoPrimary(f"{host}:{port} is a {name}")
        return {"redis_primary": f"{host}:{port}"}

    @functools.cached_property
    def archive(self) -> Archive | None:
        """The journal archive workers append finalised reports to and replay reads, or None
        when JOURNAL_ARCHIVE_DIR is off (built once per process, after any fork)."""
        if not self.settings.archive_enabled:
            return None
        from ingest.adapters.archive import FileArchive

        return FileArchive(self.settings.journal_archive_dir, keep_days=self.settings.journal_archive_days)

    @property
    def journal(self) -> RedisQueue:
        """The journal port (the same object as ``queue``)."""
        return self.queue

    @functools.cached_property
    def read_model(self) -> SqlReadModel:
        return SqlReadModel(self.engine)

    @functools.cached_property
    def metrics(self) -> Metrics:
        """The services' Metrics port, written to Prometheus."""
        return prometheus.PrometheusMetrics()

    def accepted_count(self) -> int:
        """Reports this Redis's journal accepted (its counter; the sequence is a clock now)."""
        return int(self.queue.client.get(self.queue.accepted_key) or 0)

    def check_database(self) -> None:
        """Raise unless the database answers (a readiness check)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def reachable_committed_sequence(self) -> int | None:
        """``committed_sequence()``, or None while the database is transiently unavailable."""
        try:
            return self.committed_sequence()
        except Transient:
            return None

    @functools.cached_property
    def catalog_source(self) -> SqlCatalog:
        return sql_catalog(self.engine, self.settings)

    @functools.cached_property
    def catalog(self) -> CatalogCache:
        return CatalogCache(self.catalog_source, self.settings.catalog_refresh)

    @functools.cached_property
    def producer(self) -> Any:
        from celery import Celery  # imported here: only processes that send tasks pay for it

        app = Celery("ingest-producer", broker=broker_url(self.settings), set_as_current=False)
        app.conf.broker_transport_options = broker_transport_options(self.settings)
        app.conf.update(task_routing())  # a forward kick is for a forwarder, not a drain worker
        return app

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
            journal_check=self.check_journal,
            on_clock_behind=prometheus.CLOCK_BEHIND.inc,
        )

    @functools.cached_property
    def epoch_store(self) -> SqlEpochStore:
        return SqlEpochStore(self.engine)

    def check_journal(self) -> journal_epoch.JournalHealth:
        """The journal epoch check: did Redis lose data since the last check? A loss is
        logged, counted (ingest_journal_loss_detected_total) and recorded in SQL, once."""
        return journal_epoch.check(
            self.queue,
            self.epoch_store,
            self.settings.journal_retention_seconds,
            on_loss=lambda _loss: prometheus.JOURNAL_LOSS.inc(),
        )

    def journal_health(self) -> dict[str, Any]:
        """What SQL recorded of the journal epoch, for ``ingest stats`` (no check)."""
        health = journal_epoch.health_of(self.epoch_store.read(), time.time())
        found = health.as_dict()
        try:
            found["redis_epoch"] = self.queue.journal_epoch()[0]
        except redis.RedisError as exc:
            found["redis_epoch"] = f"unavailable: {type(exc).__name__}"
        return found

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
            tz=self.settings.tz,  # the catalog rules judge periods in the billing zone, as intake does
            outbox=self.settings.bridge_enabled,  # the bridge: commits mark usage_outbox
        )

    # -- the Waldur bridge: forwarding committed usage (services/forward.py) ---------------

    @functools.cached_property
    def outbox(self) -> SqlOutbox:
        return SqlOutbox(self.engine)

    @functools.cached_property
    def forward_gate(self) -> RedisForwardGate:
        return RedisForwardGate(self.redis, self.settings.redis_prefix)

    @functools.cached_property
    def forwarder(self) -> Forwarder:
        # imported here: httpx and the client load only in processes that forward
        from ingest.adapters.waldur.client import make_client
        from ingest.adapters.waldur.sink import WaldurSink

        s = self.settings
        return Forwarder(
            self.outbox,
            WaldurSink(make_client(s.waldur_url, s.waldur_token, s.waldur_timeout)),
            self.forward_gate,
            self.worker_catalog.get,  # the authoritative catalog: only our resources go out
            self.consumer_name,
            s.waldur_forward_rate,
            s.waldur_forward_concurrency,
            s.tz,
            s.waldur_timeout,
            prometheus.PrometheusForwardMetrics(),
        )

    _forward_kicked: float = 0.0

    def kick_forward(self) -> None:
        """Ask a forwarder to run soon: at most once a second from this process (beat runs
        one every 5 s regardless)."""
        now = time.monotonic()
        if now - self._forward_kicked < 1.0:
            return
        self._forward_kicked = now
        self.producer.send_task(FORWARD_TASK, expires=10.0)

    def forward_status(self) -> dict[str, Any]:
        """What ``ingest waldur status`` prints: the outbox, the forward quarantine, the last
        catalog sync, the hold and last error the forwarders shared through Redis."""
        s = self.settings
        found = self.outbox.status(dt.datetime.now(dt.UTC))
        found["forward_rate"] = s.waldur_forward_rate
        found["forward_concurrency"] = s.waldur_forward_concurrency
        try:
            gate = self.forward_gate
            hold = gate.held()
            found["hold"] = hold
            found["last_forward_error"] = gate.noted("last_error")
            server = gate.noted("server")
            found["server_version"] = server.get("version") if server else None
        except redis.RedisError as exc:
            found["hold"] = found["last_forward_error"] = f"Redis unavailable: {type(exc).__name__}"
        return found

    @property
    def consumer_name(self) -> str:
        return f"{socket.gethostname()}-{os.getpid()}"

    # -- the catalog sync from Waldur (services/waldur_sync.py) --

    @functools.cached_property
    def sync_state(self) -> SqlSyncState:
        """The SyncStateStore port (waldur_sync_state), for the sync and ``ingest waldur status``."""
        from ingest.adapters.sql.sync_state import SqlSyncState

        return SqlSyncState(self.engine)

    @functools.cached_property
    def catalog_sync(self) -> CatalogSync:
        """The catalog sync (a CatalogSync) from WALDUR_URL; one run at a time across
        processes by a lock in the database (a PostgreSQL advisory lock; SQLite: a file lock)."""
        from ingest.adapters.sql.sync_state import SqlSyncLock
        from ingest.adapters.waldur.catalog_reader import WaldurCatalogReader
        from ingest.adapters.waldur.client import make_client
        from ingest.services.waldur_sync import CatalogSync, SyncSettings, hex_scope

        s = self.settings
        if not s.bridge_enabled:
            raise config.SettingsError("WALDUR_URL is not set: set WALDUR_URL and WALDUR_TOKEN")
        reader = WaldurCatalogReader(make_client(s.waldur_url, s.waldur_token, s.waldur_timeout))
        return CatalogSync(
            reader,
            self.catalog_source,
            self.sync_state,
            SqlSyncLock(self.engine),
            SyncSettings(
                scope=hex_scope(s.waldur_offerings),
                grace=dt.timedelta(seconds=s.waldur_secret_grace),
                full_interval=dt.timedelta(seconds=s.waldur_full_sync_interval),
                secret_min_length=s.secret_min_length,
            ),
            on_outcome=prometheus.waldur_sync_outcome,
        )


@functools.cache
def runtime() -> Runtime:
    settings = config.load()
    logs.configure(settings.log_level, settings.log_format)
    return Runtime(settings)
