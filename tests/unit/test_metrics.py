"""The request path's batched metric writes must add up to what one write per event gives."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from ingest.adapters import prometheus as metrics


def _samples(h: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in h.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_matches_one_observe_per_value():
    values = [0.0, 0.0004, 0.0005, 0.0006, 0.003, 0.003, 0.02, 0.7, 1.0, 5.0, 120.0]
    buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
    one = Histogram("one", "x", buckets=buckets, registry=CollectorRegistry())
    many = Histogram("many", "x", buckets=buckets, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    metrics.observe_many(many, values)
    assert {(n.replace("one", "many"), le): v for (n, le), v in _samples(one).items()} == _samples(many)


def test_tally_writes_when_due_and_on_flush():
    now = [0.0]
    tally = metrics.Tally(interval=1.0, clock=lambda: now[0])
    before = metrics.ACCEPTED._value.get()
    tally.accepted(1, 0.001)
    tally.accepted(2, 0.002)
    assert metrics.ACCEPTED._value.get() == before  # held in the process
    now[0] = 1.5
    tally.accepted(1, 0.003)
    assert metrics.ACCEPTED._value.get() == before + 4
    tally.accepted(3)
    tally.flush()
    assert metrics.ACCEPTED._value.get() == before + 7


def test_the_metrics_port_counts_transient_failures_per_task():
    from ingest import bootstrap

    port = metrics.PrometheusMetrics()
    before = metrics.TRANSIENT.labels("drain")._value.get()
    port.transient_failure("drain")
    assert metrics.TRANSIENT.labels("drain")._value.get() == before + 1
    body, content_type = bootstrap.metrics_exposition()
    assert b"ingest_transient_failures_total" in body and content_type.startswith("text/plain")
    assert bootstrap.metrics() is metrics  # the web writes the same metrics


def test_the_metrics_port_observes_a_batch():
    port = metrics.PrometheusMetrics()
    before = metrics.COMMITTED._value.get(), metrics.QUARANTINED.labels("resource_missing")._value.get()
    port.observe_batch(3, 0.01, 2, 0, ["resource_missing"], [0.5, 0.6])
    after = metrics.COMMITTED._value.get(), metrics.QUARANTINED.labels("resource_missing")._value.get()
    assert after == (before[0] + 2, before[1] + 1)
