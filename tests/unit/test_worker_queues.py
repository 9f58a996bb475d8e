"""Which queue each task goes to, from the workers' app and from the producers (the webs'
drain kicks, the drains' forward kicks), and which queues the Procfile's worker consumes, in
which order: the reconciler's passes first, so that they never wait behind drains."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from ingest import bootstrap
from ingest.bootstrap import DRAIN_QUEUE, MAINTENANCE_QUEUE, WALDUR_QUEUE, WORKER_QUEUES
from ingest.config import Settings
from ingest.dev import runner
from workers.app import app

ROOT = Path(__file__).resolve().parents[2]
WANTED = {
    "workers.tasks.drain": DRAIN_QUEUE,
    "workers.tasks.reconcile": MAINTENANCE_QUEUE,
    "workers.forward.forward": WALDUR_QUEUE,
    "workers.sync.sync": WALDUR_QUEUE,
}


def _queue(celery_app: Any, task: str) -> str:
    return str(celery_app.amqp.router.route({}, task)["queue"].name)


def test_the_workers_app_routes_each_task_to_its_queue() -> None:
    assert {task: _queue(app, task) for task in WANTED} == WANTED


def test_the_producers_route_kicks_the_same_way(tmp_path: Path) -> None:
    """A forward kick sent by a drain goes to a forwarder, not back to a drain worker."""
    rt = bootstrap.Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    assert {task: _queue(rt.producer, task) for task in WANTED} == WANTED
    assert _queue(rt.producer, bootstrap.FORWARD_TASK) == WALDUR_QUEUE
    assert rt.producer.conf.broker_transport_options["queue_order_strategy"] == "priority"


def test_a_worker_started_without_queues_polls_the_reconcilers_first() -> None:
    assert [q.name for q in app.conf.task_queues] == [MAINTENANCE_QUEUE, DRAIN_QUEUE]
    assert app.conf.broker_transport_options["queue_order_strategy"] == "priority"
    assert all(q.routing_key == q.name for q in app.conf.task_queues)


def _consumed(command: str) -> list[str]:
    argv = shlex.split(command)
    return argv[argv.index("-Q") + 1].split(",")


def test_the_procfiles_worker_polls_both_in_order_and_the_forwarder_only_waldur() -> None:
    for text in ((ROOT / "Procfile").read_text(), runner.packaged_procfile()):
        processes = runner.procfile_processes(text)
        assert _consumed(processes["worker"]) == list(WORKER_QUEUES)
        assert _consumed(processes["forwarder"]) == [WALDUR_QUEUE]
