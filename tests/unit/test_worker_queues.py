"""Which queue each task goes to, and which queues the Procfile's worker consumes: the
reconciler has a queue of its own so that its passes are not stuck behind drains."""

from __future__ import annotations

import shlex
from pathlib import Path

from ingest.dev import runner
from workers.app import DRAIN_QUEUE, MAINTENANCE_QUEUE, WORKER_QUEUES, app

ROOT = Path(__file__).resolve().parents[2]


def _queue(task: str) -> str:
    route = app.amqp.router.route({}, task)
    return str(route["queue"].name)


def test_drains_and_the_reconciler_have_queues_of_their_own() -> None:
    assert _queue("workers.tasks.drain") == DRAIN_QUEUE
    assert _queue("workers.tasks.reconcile") == MAINTENANCE_QUEUE
    assert _queue("workers.forward.forward") == "waldur"
    assert _queue("workers.sync.sync") == "waldur"
    assert DRAIN_QUEUE != MAINTENANCE_QUEUE


def test_a_worker_started_without_queues_consumes_drains_and_the_reconciler() -> None:
    assert [q.name for q in app.conf.task_queues] == list(WORKER_QUEUES)


def _consumed(command: str) -> list[str]:
    argv = shlex.split(command)
    return argv[argv.index("-Q") + 1].split(",")


def test_the_procfiles_worker_consumes_both_and_the_forwarder_only_waldur() -> None:
    for text in ((ROOT / "Procfile").read_text(), runner.packaged_procfile()):
        processes = runner.procfile_processes(text)
        assert _consumed(processes["worker"]) == list(WORKER_QUEUES)
        assert _consumed(processes["forwarder"]) == ["waldur"]
