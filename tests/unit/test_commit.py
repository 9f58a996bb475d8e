"""The commit service against in-memory fakes: dedupe, sequence guard, fates, isolation."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from ingest.domain.errors import Transient
from ingest.domain.model import CatalogSnapshot, Offering, Provider, Resource, UsageKey
from ingest.services.commit import Committer
from ingest.services.ports import Delivery
from schemas import queue as wire
from tests.unit.fakes import FakeStore

CUSTOMER = uuid.uuid4()
OFFERING = uuid.uuid4()
R1, R2 = uuid.uuid4(), uuid.uuid4()
PERIOD = dt.date(2026, 11, 1)


def catalog(*resources: Resource) -> CatalogSnapshot:
    res = resources or (
        Resource(R1, OFFERING, "OK", uuid.uuid4()),
        Resource(R2, OFFERING, "OK", uuid.uuid4()),
    )
    return CatalogSnapshot(
        {CUSTOMER: Provider(CUSTOMER, "p", "secret")},
        {OFFERING: Offering(OFFERING, CUSTOMER, {"cpu": "usage", "ram": "usage"})},
        {r.uuid: r for r in res},
        {},
        1,
    )


def delivery(seq: int, resource: uuid.UUID = R1, deliveries: int = 1, **amounts: str) -> Delivery:
    report = wire.QueuedReport(
        id=uuid.uuid4().hex,
        customer=str(CUSTOMER),
        resource=str(resource),
        plan_period=None,
        billing_period=PERIOD.isoformat(),
        date="2026-11-20T00:00:00+00:00",
        accepted_at=1.0e9 + seq,
        usages=tuple(wire.UsageLine(k, v) for k, v in amounts.items()),
        token="t",
        claims=b"{}",
    )
    return Delivery(f"{seq}-0", seq, wire.encode(report), deliveries)


def make(store: FakeStore, snap: CatalogSnapshot | None = None, **kw: object) -> Committer:
    snapshot = snap or catalog()
    return Committer(store.unit_of_work, lambda: snapshot, max_deliveries=3, retry_wait_max=0.0, **kw)  # type: ignore[arg-type]


def amount(store: FakeStore, component: str, resource: uuid.UUID = R1) -> Decimal:
    return Decimal(store.usages[UsageKey(str(resource), component, PERIOD.isoformat())].amount)


def test_highest_sequence_wins_within_a_batch_whatever_the_order():
    store = FakeStore()
    out = make(store).commit([delivery(3, cpu="3"), delivery(1, cpu="1"), delivery(2, cpu="2")])
    assert amount(store, "cpu") == Decimal("3")
    assert len(out.committed) == 1 and len(out.superseded) == 2
    assert store.commits == 1


def test_lower_sequence_in_a_later_batch_never_overwrites():
    store = FakeStore()
    committer = make(store)
    committer.commit([delivery(10, cpu="10")])
    out = committer.commit([delivery(5, cpu="5")])
    assert amount(store, "cpu") == Decimal("10")
    assert out.superseded and not out.committed


def test_report_partly_newest_is_committed():
    store = FakeStore()
    out = make(store).commit([delivery(1, cpu="1", ram="1"), delivery(2, cpu="2")])
    assert amount(store, "cpu") == Decimal("2") and amount(store, "ram") == Decimal("1")
    assert len(out.committed) == 2


def test_redelivery_of_a_committed_report_changes_nothing():
    store = FakeStore()
    committer = make(store)
    d = delivery(1, cpu="7")
    committer.commit([d])
    before = dict(store.reports)
    out = committer.commit([d])
    assert out.skipped == [next(iter(before))]
    assert store.reports == before and amount(store, "cpu") == Decimal("7")
    assert out.done_entries == [d.entry_id]


def test_deleted_resource_is_quarantined_and_others_commit():
    store = FakeStore()
    snap = catalog(Resource(R1, OFFERING, "OK", uuid.uuid4()))
    out = make(store, snap).commit([delivery(1, R1, cpu="1"), delivery(2, R2, cpu="2")])
    assert len(out.committed) == 1 and len(out.quarantined) == 1
    record = store.reports[out.quarantined[0]]
    assert record.state == "quarantined" and record.reason_code == "resource_missing"


@pytest.mark.parametrize("state,code", [("Erred", "resource_state"), ("OK", "component_invalid")])
def test_catalog_changes_since_acceptance_quarantine(state, code):
    store = FakeStore()
    snap = catalog(Resource(R1, OFFERING, state, uuid.uuid4()))
    d = delivery(1, cpu="1") if state != "OK" else delivery(1, gpu="1")
    out = make(store, snap).commit([d])
    assert store.reports[out.quarantined[0]].reason_code == code


def test_poison_after_max_deliveries():
    store = FakeStore()
    out = make(store).commit([delivery(1, deliveries=4, cpu="1")])
    assert store.reports[out.quarantined[0]].reason_code == "poison"
    assert not store.usages


def test_a_failing_report_is_isolated_and_the_rest_commit():
    store = FakeStore()
    batch = [delivery(i, R1 if i % 2 else R2, **{"cpu": str(i)}) for i in range(1, 9)]
    bad = wire.decode(batch[6].raw).id  # seq 7: the newest for R1, so its row is upserted
    store.fail_on_report = bad
    out = make(store).commit(batch)
    assert out.quarantined == [bad]
    assert store.reports[bad].reason_code == "commit_failed"
    assert len(out.committed) + len(out.superseded) == 7
    assert amount(store, "cpu", R1) == Decimal("5") and amount(store, "cpu", R2) == Decimal("8")


def test_undecodable_entry_is_quarantined():
    store = FakeStore()
    out = make(store).commit([Delivery("1-0", 1, b"\x00garbage", 1), delivery(2, cpu="2")])
    assert len(out.quarantined) == 1 and len(out.committed) == 1
    assert store.reports[out.quarantined[0]].reason_code == "undecodable"


def test_transient_failures_are_retried_then_raised_without_writing():
    store = FakeStore()
    store.transient_failures = 2
    make(store).commit([delivery(1, cpu="1")])
    assert amount(store, "cpu") == Decimal("1")
    store.transient_failures = 99
    with pytest.raises(Transient):
        make(store, retry_attempts=3).commit([delivery(2, cpu="2")])
    assert amount(store, "cpu") == Decimal("1")
