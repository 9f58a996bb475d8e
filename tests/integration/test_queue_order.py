"""The worker's queues through a real Redis broker, as configured (kombu's Redis transport,
our transport options and queues): queued reconciler passes are taken before queued drains,
every time the worker is free (with kombu's default round robin they alternate, and a pass
queued behind drains longer than RECONCILE_INTERVAL expired unrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from celery import Celery

from ingest import bootstrap
from ingest.config import Settings
from workers.app import app as workers_app


def _settings(redis_url: str, tmp_path: Path) -> Settings:
    base = redis_url.rsplit("/", 1)[0]
    return Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", redis_url=f"{base}/13")


def _consumer_app(settings: Settings) -> Celery:
    app = Celery("queue-order-test", broker=bootstrap.broker_url(settings), set_as_current=False)
    app.conf.broker_transport_options = bootstrap.broker_transport_options(settings)
    app.conf.task_queues = workers_app.conf.task_queues
    return app


def test_queued_reconciler_passes_go_before_queued_drains(redis_url: str, tmp_path: Path) -> None:
    settings = _settings(redis_url, tmp_path)
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(*bootstrap.WORKER_QUEUES, bootstrap.WALDUR_QUEUE)
    producer = bootstrap.Runtime(settings).producer
    sent = ["drain", "drain", "reconcile", "drain", "reconcile"]
    for name in sent:
        producer.send_task(f"workers.tasks.{name}")
    producer.send_task(bootstrap.FORWARD_TASK)  # for the forwarder: not on the worker's queues
    assert client.llen(bootstrap.WALDUR_QUEUE) == 1

    got: list[str] = []

    def take(_body: Any, message: Any) -> None:
        got.append(str(message.headers["task"]).rsplit(".", 1)[-1])
        message.ack()

    consumer_app = _consumer_app(settings)
    with consumer_app.connection_for_read() as conn:
        queues = [q.bind(conn.default_channel) for q in consumer_app.conf.task_queues]
        with conn.Consumer(queues, callbacks=[take], prefetch_count=1):
            while len(got) < len(sent):
                conn.drain_events(timeout=10)
    assert got == ["reconcile", "reconcile", "drain", "drain", "drain"]
    assert client.llen(bootstrap.WALDUR_QUEUE) == 1  # still there
    client.delete(*bootstrap.WORKER_QUEUES, bootstrap.WALDUR_QUEUE)
