"""The Celery application, configured for losing nothing (see shared/docs/reliability.md).

The Celery message is only a trigger: accepted reports live in the Redis journal stream and
are acknowledged there after their batch commits, so a lost, duplicated or redelivered task
message can delay a commit but never lose or double it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init
from kombu.entity import Queue

from ingest import bootstrap, config, logs

settings = config.load()

# With WALDUR_URL: sync the catalog on its interval (the task decides when a full sync is
# due) and forward as a safety net (commits kick a forward as soon as they land).
BRIDGE_SCHEDULE = {
    "waldur-sync": {
        "task": "workers.sync.sync",
        "schedule": settings.waldur_sync_interval,
        "options": {"expires": settings.waldur_sync_interval},
    },
    "waldur-forward": {
        "task": "workers.forward.forward",
        "schedule": 5.0,
        "options": {"expires": 10.0},
    },
}

app = Celery(
    "ingest",
    broker=bootstrap.broker_url(settings),
    include=["workers.tasks", "workers.forward", "workers.sync"],
)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    worker_soft_shutdown_timeout=min(20.0, settings.drain_budget + 5),
    worker_enable_soft_shutdown_on_idle=False,
    broker_transport_options={
        # longer than any drain task; the journal, not this message, carries the data
        "visibility_timeout": int(max(300, settings.drain_budget * 6)),
        **bootstrap.broker_transport_options(settings),  # master_name with REDIS_SENTINELS
    },
    broker_connection_retry_on_startup=True,
    # Redis trouble must never end a worker (shared/docs/reliability.md): a lost connection or
    # a Redis restart is retried for ever (the default gives up after 100 tries), and a write
    # Redis refuses (MISCONF: it cannot persist, a full disk; OOM: maxmemory reached) answers
    # kombu's BRPOP with a ResponseError, a "channel error" that by default is unrecoverable
    # and made the worker exit ("Unrecoverable error: ResponseError"), with every accepted
    # report left uncommitted until a manual restart. With channel-error retry the consumer
    # reconnects with back-off and resumes once Redis accepts writes again.
    broker_connection_retry=True,
    broker_connection_max_retries=None,
    broker_channel_error_retry=True,
    task_ignore_result=True,
    task_time_limit=int(settings.drain_budget * 6 + 60),
    task_soft_time_limit=int(settings.drain_budget * 6 + 30),
    worker_hijack_root_logger=False,
    timezone="UTC",
    # the bridge's tasks have their own queue and process type (Procfile ``forwarder``);
    # queues and routes: ingest.bootstrap (one home with the producers'); a worker started
    # without -Q consumes WORKER_QUEUES, the reconciler's first
    **bootstrap.task_routing(),
    task_queues=[
        Queue(name, routing_key=name)  # type: ignore[no-untyped-call]
        for name in bootstrap.WORKER_QUEUES
    ],
    beat_schedule={
        "drain": {
            "task": "workers.tasks.drain",
            "schedule": 2.0,  # a safety net: the web kicks a drain as soon as reports arrive
            "options": {"expires": max(1.0, settings.flush_interval * 10)},
        },
        "reconcile": {
            "task": "workers.tasks.reconcile",
            "schedule": settings.reconcile_interval,
            "options": {"expires": settings.reconcile_interval},
        },
    }
    | (BRIDGE_SCHEDULE if settings.bridge_enabled else {}),
)


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Our format (LOG_FORMAT) and level (LOG_LEVEL) for Celery's loggers too: a receiver here
    makes Celery leave logging alone (its --loglevel is not used). Its per-task INFO lines
    ("Task ... received", "succeeded", beat's "Sending due task") are DEBUG (ingest.logs)."""
    logs.configure(settings.log_level, settings.log_format)


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    bootstrap.runtime.cache_clear()
    bootstrap.tune_gc()
