"""The outbox on SQLite and PostgreSQL: marked by the real Committer in the commit's own
transaction (bridge on), untouched in standalone mode, leased one key per resource, oldest
first, and concurrent batches never deadlock on it."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from ingest import bootstrap
from ingest.adapters.sql import tables as t
from ingest.adapters.sql.outbox import SqlOutbox
from ingest.adapters.sql.unit_of_work import SqlUnitOfWork
from ingest.config import Settings
from ingest.services import catalog_file
from ingest.services.commit import Committer
from ingest.services.ports import Delivery
from schemas import queue as wire

NOV = dt.date(2026, 11, 1)
OCT = dt.date(2026, 10, 1)
COMPONENTS = ("cpu_hours", "ram_gb")


class Catalog:
    """One provider, one offering (cpu_hours, ram_gb: usage), ``count`` resources."""

    def __init__(self, count: int) -> None:
        self.provider = str(uuid.uuid4())
        self.secret = "s3cr3t-" + uuid.uuid4().hex[:10]
        self.offering = str(uuid.uuid4())
        self.plan = str(uuid.uuid4())
        self.resources = [str(uuid.uuid4()) for _ in range(count)]

    def doc(self) -> dict[str, Any]:
        return {
            "service_providers": [{"customer": self.provider, "name": "P", "api_secret_code": self.secret}],
            "offerings": [
                {
                    "uuid": self.offering,
                    "customer": self.provider,
                    "name": "O",
                    "components": [
                        {"type": c, "billing_type": "usage", "measured_unit": "h"} for c in COMPONENTS
                    ],
                }
            ],
            "resources": [
                {"uuid": r, "offering": self.offering, "state": "OK", "plan": self.plan, "plan_periods": []}
                for r in self.resources
            ],
        }


def delivery(
    seq: int, resource: str, period: dt.date = NOV, plan_period: str | None = None, **amounts: str
) -> Delivery:
    report = wire.QueuedReport(
        id=uuid.uuid4().hex,
        customer=str(uuid.uuid4()),
        resource=resource,
        plan_period=plan_period,
        billing_period=period.isoformat(),
        date=f"{period.isoformat()}T12:00:00+00:00",
        accepted_at=dt.datetime(period.year, period.month, 15, tzinfo=dt.UTC).timestamp(),
        usages=tuple(wire.UsageLine(k, v) for k, v in amounts.items()),
        token="t",
        claims=b"{}",
    )
    return Delivery(f"{seq}-0", seq, wire.encode(report), 1)


def bridge_settings(database_url: str, redis_url: str, **extra: Any) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=f"test-{uuid.uuid4().hex[:10]}",
        catalog_refresh=0.01,
        flush_interval=0.05,
        drain_budget=2.0,
        waldur_url=extra.pop("waldur_url", "http://127.0.0.1:9"),
        waldur_token=extra.pop("waldur_token", "t"),
        **extra,
    )


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(12)


@pytest.fixture
def bridge(database_url: str, redis_url: str, catalog: Catalog) -> Iterator[bootstrap.Runtime]:
    rt = bootstrap.Runtime(bridge_settings(database_url, redis_url))
    rt.catalog_source.load(catalog_file.parse(catalog.doc()))
    yield rt
    rt.engine.dispose()


def outbox_rows(engine: sa.Engine) -> dict[tuple[str, dt.date], dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.UsageOutbox.__table__)).mappings().all()
    return {(str(r["resource_uuid"]), r["billing_period"]): dict(r) for r in rows}


def test_a_commit_marks_each_applied_key_in_its_transaction(
    bridge: bootstrap.Runtime, catalog: Catalog
) -> None:
    r1, r2, r3 = catalog.resources[:3]
    assert bridge.committer.outbox
    batch = [
        delivery(1, r1, cpu_hours="1"),
        delivery(2, r1, ram_gb="2"),
        delivery(3, r1, cpu_hours="3"),
        delivery(4, r2, cpu_hours="1"),
        delivery(5, r2, OCT, cpu_hours="9"),
        delivery(6, r3, cpu_hours="1", ram_gb="1"),
    ]
    outcome = bridge.committer.commit(batch)
    assert len(outcome.committed) + len(outcome.superseded) == 6 and not outcome.quarantined
    rows = outbox_rows(bridge.engine)
    assert {k: (r["dirty_seq"], r["pending_reports"]) for k, r in rows.items()} == {
        (r1, NOV): (3, 3),
        (r2, NOV): (4, 1),
        (r2, OCT): (5, 1),
        (r3, NOV): (6, 1),
    }
    assert all(
        r["dirty_since"] is not None and r["acked_seq"] == 0 and not r["failed"] for r in rows.values()
    )
    # a later batch raises dirty_seq and adds reports; an all-superseded one marks nothing
    bridge.committer.commit([delivery(10, r1, cpu_hours="4"), delivery(11, r1, cpu_hours="5")])
    bridge.committer.commit([delivery(7, r1, cpu_hours="0")])  # older than what is stored
    row = outbox_rows(bridge.engine)[(r1, NOV)]
    assert (row["dirty_seq"], row["pending_reports"]) == (11, 5)


def test_standalone_commits_write_no_outbox(database_url: str, redis_url: str, catalog: Catalog) -> None:
    rt = bootstrap.Runtime(Settings(database_url=database_url, redis_url=redis_url))
    rt.catalog_source.load(catalog_file.parse(catalog.doc()))
    assert not rt.committer.outbox
    rt.committer.commit([delivery(1, catalog.resources[0], cpu_hours="1")])
    assert outbox_rows(rt.engine) == {}
    rt.engine.dispose()


class FailingRecords(SqlUnitOfWork):
    """A transaction that fails after its usage and outbox writes (it must roll both back)."""

    def record_reports(self, records: Any) -> None:
        if any(r.state != "quarantined" for r in records):
            raise RuntimeError("the report records cannot be written")
        super().record_reports(records)


def test_a_rolled_back_commit_marks_nothing(bridge: bootstrap.Runtime, catalog: Catalog) -> None:
    committer = Committer(
        lambda: FailingRecords(bridge.engine),
        bridge.worker_catalog.get,
        max_deliveries=5,
        retry_wait_max=0.0,
        outbox=True,
    )
    outcome = committer.commit([delivery(1, catalog.resources[0], cpu_hours="1")])
    assert outcome.quarantined and not outcome.committed
    assert outbox_rows(bridge.engine) == {}
    with bridge.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.ComponentUsage)).scalar() == 0


def test_lease_takes_oldest_first_one_key_per_resource(bridge: bootstrap.Runtime, catalog: Catalog) -> None:
    r1, r2, r3 = catalog.resources[:3]
    for seq, (resource, period) in enumerate([(r1, OCT), (r2, NOV), (r1, NOV), (r3, NOV)], start=1):
        bridge.committer.commit([delivery(seq, resource, period, cpu_hours=str(seq), ram_gb="1")])
    outbox = SqlOutbox(bridge.engine)
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    until = now + dt.timedelta(minutes=1)
    first = outbox.lease("a", 10, now, until)
    assert [(str(e.resource), e.billing_period) for e in first] == [(r1, OCT), (r2, NOV), (r3, NOV)]
    e = first[0]
    assert e.values and {v.component for v in e.values} == set(COMPONENTS) and e.max_seq == 1
    assert e.amounts == {"cpu_hours": "1.00", "ram_gb": "1.00"} and e.pending_reports == 1
    # r1's November waits while r1's October is in flight, for any forwarder
    assert outbox.lease("b", 10, now, until) == []
    assert outbox.settle(e, "a", e.max_seq, e.amounts, now)
    (second,) = outbox.lease("b", 10, now, until)
    assert (str(second.resource), second.billing_period) == (r1, NOV)
    # an expired lease is free again (its forwarder died)
    later = until + dt.timedelta(seconds=1)
    taken = outbox.lease("c", 10, later, later + dt.timedelta(minutes=1))
    assert {(str(x.resource), x.billing_period) for x in taken} == {(r2, NOV), (r1, NOV), (r3, NOV)}
    assert not outbox.settle(second, "b", second.max_seq, second.amounts, later)  # no longer b's


def test_settle_keeps_a_key_dirty_when_a_commit_landed_meanwhile(
    bridge: bootstrap.Runtime, catalog: Catalog
) -> None:
    r1 = catalog.resources[0]
    bridge.committer.commit([delivery(1, r1, cpu_hours="1")])
    outbox = SqlOutbox(bridge.engine)
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    (entry,) = outbox.lease("a", 1, now, now + dt.timedelta(minutes=1))
    bridge.committer.commit([delivery(2, r1, cpu_hours="2")])  # during the call
    outbox.settle(entry, "a", entry.max_seq, entry.amounts, now)
    row = outbox_rows(bridge.engine)[(r1, NOV)]
    assert row["acked_seq"] == 1 and row["dirty_since"] is not None and row["pending_reports"] == 1
    (again,) = outbox.lease("a", 1, now, now + dt.timedelta(minutes=1))
    assert again.amounts == {"cpu_hours": "2.00"} and again.max_seq == 2
    outbox.settle(again, "a", again.max_seq, again.amounts, now)
    row = outbox_rows(bridge.engine)[(r1, NOV)]
    assert row["dirty_since"] is None and row["acked_seq"] == 2 and row["pending_reports"] == 0
    assert outbox.oldest_dirty() is None


def test_quarantine_then_a_later_commit_or_a_retry_makes_the_key_dirty_again(
    bridge: bootstrap.Runtime, catalog: Catalog
) -> None:
    r1 = catalog.resources[0]
    bridge.committer.commit([delivery(1, r1, cpu_hours="1")])
    outbox = SqlOutbox(bridge.engine)
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    (entry,) = outbox.lease("a", 1, now, now + dt.timedelta(minutes=1))
    outbox.quarantine(
        entry, "a", "period_closed", 400, '{"plan_period":["Billing period is closed."]}', {}, 1, now
    )
    row = outbox_rows(bridge.engine)[(r1, NOV)]
    assert row["failed"] and row["dirty_since"] is None
    (failure,) = outbox.failures()
    assert failure["reason"] == "period_closed" and failure["status"] == 400
    assert outbox.status(now)["failures_by_reason"] == {"period_closed": 1}
    bridge.committer.commit([delivery(2, r1, cpu_hours="2")])
    row = outbox_rows(bridge.engine)[(r1, NOV)]
    assert not row["failed"] and row["dirty_since"] is not None and row["dirty_seq"] == 2
    # the retry command's path: quarantined again, then retried by id
    (entry,) = outbox.lease("a", 1, now, now + dt.timedelta(minutes=1))
    outbox.quarantine(entry, "a", "rejected", 400, "[]", {}, 1, now)
    ids = [f["id"] for f in outbox.failures()]
    assert outbox.retry(ids, now) == ids and outbox.failures() == []
    row = outbox_rows(bridge.engine)[(r1, NOV)]
    assert not row["failed"] and row["dirty_since"] is not None
    assert outbox.failure(ids[-1])["resolved_at"] is not None  # type: ignore[index]


def test_concurrent_batches_over_the_same_keys_do_not_deadlock(
    bridge: bootstrap.Runtime, catalog: Catalog
) -> None:
    resources = catalog.resources
    errors: list[BaseException] = []
    seqs = iter(range(1, 1_000_000))
    lock = threading.Lock()

    def next_seq() -> int:
        with lock:
            return next(seqs)

    def work(shift: int) -> None:
        try:
            for _ in range(15):
                order = resources[shift:] + resources[:shift]  # each thread in another order
                batch = [delivery(next_seq(), r, cpu_hours="1", ram_gb="2") for r in order]
                bridge.committer.commit(batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i * 3,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    rows = outbox_rows(bridge.engine)
    with bridge.engine.connect() as conn:
        best = dict(
            conn.execute(
                sa.select(t.ComponentUsage.resource_uuid, sa.func.max(t.ComponentUsage.report_seq)).group_by(
                    t.ComponentUsage.resource_uuid
                )
            ).all()
        )
    assert {k[0]: r["dirty_seq"] for k, r in rows.items()} == {str(k): v for k, v in best.items()}


def test_concurrent_leases_never_give_two_keys_of_one_resource(
    bridge: bootstrap.Runtime, catalog: Catalog
) -> None:
    seq = 0
    for r in catalog.resources:
        for period in (OCT, NOV):
            seq += 1
            bridge.committer.commit([delivery(seq, r, period, cpu_hours="1")])
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    taken: list[Any] = []
    errors: list[BaseException] = []

    def work(owner: str) -> None:
        outbox = SqlOutbox(bridge.engine)
        try:
            for _ in range(10):
                got = outbox.lease(owner, 2, now, now + dt.timedelta(minutes=1))
                taken.extend(got)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"o{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors
    resources = [e.resource for e in taken]
    assert len(resources) == len(set(resources)) == len(catalog.resources)
    assert all(e.billing_period == OCT for e in taken)  # oldest first: October went first
