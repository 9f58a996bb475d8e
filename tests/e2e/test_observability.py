"""The observability pack against a running formation: every series that deploy/'s alerting
rules and Grafana dashboard name is in a real scrape of the web's ``/metrics``.

The stack runs as ``ingest run`` does in production, with PROMETHEUS_MULTIPROC_DIR shared by
gunicorn, the Celery worker and beat, so the web's scrape carries what the worker committed,
quarantined and reconciled. A labelled counter only has series once a label value occurred, so
the test causes one of each: reports that commit, a rejected report and a quarantined one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ingest.adapters.sql.catalog import SqlCatalog
from tests.e2e import conftest as e2e
from tests.e2e.conftest import SET_USAGE, Stack
from tests.unit.test_deploy_pack import PROMETHEUS_SERIES, metric_names, pack_expressions, selector_labels

pytestmark = pytest.mark.e2e

# labels Prometheus adds at scrape time: never in the exposition itself
TARGET_LABELS = frozenset({"job", "instance"})


@pytest.fixture
def _production_metrics(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The stack's processes share one multiprocess directory (as ``ingest run`` sets it), and
    the reconciler runs every second so its timestamp is written soon."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    environment = e2e._environment

    def with_metrics(*args: str | int) -> dict[str, str]:
        env = environment(*args)  # type: ignore[arg-type]
        env.update(PROMETHEUS_MULTIPROC_DIR=str(directory), RECONCILE_INTERVAL="1")
        return env

    monkeypatch.setattr(e2e, "_environment", with_metrics)


@pytest.fixture
def stack(_production_metrics: None, stack: Stack) -> Stack:
    """tests/e2e/conftest.py's stack, started with the environment above."""
    return stack


@contextlib.contextmanager
def paused(stack: Stack, name: str) -> Iterator[None]:
    """SIGSTOP the process group of one of the stack's processes (a Celery worker and its
    prefork child), SIGCONT on the way out."""
    proc = next(p for p in stack.procs if p.name == name)
    os.killpg(proc.popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.popen.pid, signal.SIGCONT)


def scrape(stack: Stack) -> list[Sample]:
    resp = stack.http.get("/metrics")
    assert resp.status_code == 200, resp.text
    return [s for family in text_string_to_metric_families(resp.text) for s in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


BRIDGE_PREFIX = "ingest_waldur_"


def missing_from(samples: list[Sample], wanted: Callable[[str], bool]) -> dict[str, list[str]]:
    """Per rule or panel of deploy/, the series (and selector labels) it names that ``samples``
    lack, among the metric names ``wanted`` accepts."""
    scraped = {s.name for s in samples}
    labels_of: dict[str, set[str]] = {}
    for s in samples:
        labels_of.setdefault(s.name, set()).update(s.labels)
    missing = {}
    for where, expr in pack_expressions().items():
        absent = sorted(n for n in metric_names(expr) - PROMETHEUS_SERIES - scraped if wanted(n))
        no_label = sorted(
            f"{name}{{{label}}}"
            for name, label in selector_labels(expr)
            if wanted(name) and label not in TARGET_LABELS and label not in labels_of.get(name, set())
        )
        if absent or no_label:
            missing[where] = absent + no_label
    return missing


def test_every_series_of_the_rules_and_the_dashboard_is_in_a_scrape(stack: Stack) -> None:
    demo = stack.demo

    def claims(resource: str, amount: str) -> dict[str, object]:
        return {"resource": resource, "usages": [{"type": "cpu_hours", "amount": amount}]}

    ids = [stack.set_usage(claims(r, a))["id"] for r, a in ((demo.resource, "1"), (demo.resource2, "2"))]
    ids.append(stack.set_usage(claims(demo.resource, "3"))["id"])
    assert set(stack.wait_final(ids).values()) <= {"committed", "superseded"}

    # rejected: a token signed with another provider's secret
    forged = {"customer": demo.provider, "data": demo.sign(claims(demo.resource, "4"), demo.other_secret)}
    assert stack.http.post(SET_USAGE, json=forged).status_code == 400

    # quarantined: accepted while the worker is paused, its resource removed before it commits
    with paused(stack, "worker"):
        late = stack.set_usage(claims(demo.resource2, "5"))["id"]
        assert SqlCatalog(stack.engine).remove_resource(uuid.UUID(demo.resource2))
    assert stack.wait_final([late]) == {late: "quarantined"}

    def settled() -> list[Sample] | None:
        samples = scrape(stack)
        done = (
            total(samples, "ingest_reports_committed_total") >= 2
            and total(samples, "ingest_reports_quarantined_total", reason="resource_missing") == 1
            and total(samples, "ingest_reports_rejected_total", reason="400:non_field_errors") == 1
            and total(samples, "ingest_reconcile_last_run_timestamp") > 0
            and total(samples, "ingest_backlog_reports") == 0
        )
        return samples if done else None

    samples = stack.wait_for("the scrape to show the commits, the quarantine and a reconcile", settled)
    # the bridge's series exist only with WALDUR_URL: test_waldur_bridge checks them
    missing = missing_from(samples, lambda name: not name.startswith(BRIDGE_PREFIX))
    assert not missing, f"not in the scrape: {missing}\nscraped: {sorted({s.name for s in samples})}"

    # the worker's histograms reach the web's scrape (multiprocess mode works end to end)
    assert total(samples, "ingest_batch_size_count") >= 2
    assert total(samples, "ingest_accept_to_commit_seconds_count") >= 1
