"""Order by acceptance, end to end: last accepted value wins; a lower sequence never wins."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import orjson
import pytest
from sqlalchemy import select

from ingest.adapters.sql import read_model as queries
from ingest.adapters.sql import tables as t
from ingest.adapters.sql.catalog import SqlCatalog
from ingest.adapters.sql.unit_of_work import SqlUnitOfWork
from ingest.domain.ids import new_report_id
from ingest.services.catalog_cache import CatalogCache
from ingest.services.commit import Committer
from ingest.services.ports import Delivery
from schemas import queue as wire
from tests.e2e.conftest import SET_USAGES, Stack

pytestmark = pytest.mark.e2e


def _cpu(resource: str, amount: str, **more: Any) -> dict[str, Any]:
    return {"resource": resource, "usages": [{"type": "cpu_hours", "amount": amount, **more}]}


def test_last_accepted_value_wins(stack: Stack) -> None:
    demo = stack.demo
    sent: list[tuple[dict[str, Any], dict[str, str]]] = []  # (receipt, component -> amount)

    # spaced: each report is committed before the next is sent, so each is its own batch
    for amount in ("1.00", "2.00", "3.00"):
        receipt = stack.set_usage(_cpu(demo.resource, amount))
        sent.append((receipt, {"cpu_hours": amount}))
        assert stack.wait_final([receipt["id"]]) == {receipt["id"]: "committed"}
        assert stack.usage(demo.resource)["cpu_hours"]["amount"] == amount

    # back to back on one connection: one batch or several, the outcome must not depend on it
    burst = [
        (stack.set_usage(_cpu(demo.resource, a)), {"cpu_hours": a})
        for a in ("10.00", "11.00", "12.00", "13.00", "14.00")
    ]
    sent += burst
    stack.wait_final([r["id"] for r, _ in burst])
    assert stack.usage(demo.resource)["cpu_hours"]["amount"] == "14.00"

    # one set_usages request is one Redis round trip, hence certainly one batch
    batch = [
        {"cpu_hours": "20.00", "ram_gb": "7.00"},
        {"cpu_hours": "21.00"},
        {"cpu_hours": "22.00"},
        {"cpu_hours": "23.00"},
    ]
    tokens = [
        demo.sign({"resource": demo.resource, "usages": [{"type": c, "amount": a} for c, a in lines.items()]})
        for lines in batch
    ]
    resp = stack.http.post(SET_USAGES, json={"customer": demo.provider, "reports": tokens})
    assert resp.status_code == 207, resp.text
    results = resp.json()["results"]
    assert [r["status"] for r in results] == [201] * len(batch), results
    in_batch = [
        ({"id": r["id"], "sequence": r["sequence"]}, lines) for r, lines in zip(results, batch, strict=True)
    ]
    sent += in_batch
    states = stack.wait_final([r["id"] for r, _ in in_batch])
    # c1 still set ram_gb, c2 and c3 lost cpu_hours to c4 inside the batch
    assert [states[r["id"]] for r, _ in in_batch] == ["committed", "superseded", "superseded", "committed"]

    # a smaller value last: usage is absolute, the last accepted wins, not the largest
    last = stack.set_usage(_cpu(demo.resource, "0.50"))
    sent.append((last, {"cpu_hours": "0.50"}))
    states = stack.wait_final([r["id"] for r, _ in sent])

    sequences = [r["sequence"] for r, _ in sent]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences), sequences
    rows = stack.usage(demo.resource)
    for component in ("cpu_hours", "ram_gb"):
        touching = [(r, lines) for r, lines in sent if component in lines]
        winner, lines = max(touching, key=lambda x: x[0]["sequence"])
        assert rows[component]["amount"] == lines[component], component
        assert rows[component]["sequence"] == winner["sequence"], component
        assert rows[component]["report_id"] == winner["id"], component
        assert states[winner["id"]] == "committed"
    assert rows["cpu_hours"]["sequence"] == max(sequences)
    assert set(states.values()) <= {"committed", "superseded"}
    stack.assert_healthy()


def test_a_component_named_twice_in_one_report_keeps_its_last_line(stack: Stack) -> None:
    demo = stack.demo
    receipt = stack.set_usage(
        {
            "resource": demo.resource,
            "usages": [
                {"type": "cpu_hours", "amount": "5", "description": "first"},
                {"type": "cpu_hours", "amount": "6", "description": "second"},
            ],
        }
    )
    assert stack.wait_final([receipt["id"]]) == {receipt["id"]: "committed"}
    row = stack.usage(demo.resource)["cpu_hours"]
    assert (row["amount"], row["description"]) == ("6.00", "second")


# -- a lower sequence never wins ---------------------------------------------------------------


def _usage_snapshot(stack: Stack, resource: str) -> list[tuple[Any, ...]]:
    u = t.ComponentUsage
    with stack.engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                select(
                    u.component_type,
                    u.billing_period,
                    u.amount,
                    u.report_id,
                    u.report_seq,
                    u.date,
                    u.updated_at,
                )
                .where(u.resource_uuid == uuid.UUID(resource))
                .order_by(u.component_type)
            )
        ]


def _report_snapshot(stack: Stack, ids: list[str]) -> dict[str, dict[str, Any]]:
    return {i: queries.report(stack.engine, i) or {} for i in ids}


def _late_report(stack: Stack, template: Delivery, amount: str) -> wire.QueuedReport:
    """A report accepted just after ``template`` whose delivery was delayed: new id, own value."""
    old = wire.decode(template.raw)
    claims = {"resource": old.resource, "usages": [{"type": "cpu_hours", "amount": amount}]}
    accepted_at = old.accepted_at + 0.001
    return msgspec.structs.replace(
        old,
        id=new_report_id(accepted_at),
        accepted_at=accepted_at,
        usages=(wire.UsageLine("cpu_hours", amount),),
        token=stack.demo.sign(claims),
        claims=orjson.dumps(claims),
    )


def test_a_lower_sequence_never_overwrites_a_higher_one(stack: Stack) -> None:
    demo = stack.demo
    old = stack.set_usage(_cpu(demo.resource, "100"))
    stack.wait_final([old["id"]])
    # two sequences handed out now, as intake does for reports whose delivery is then delayed
    late_seqs = [int(stack.redis.incr(stack.queue.seq_key)) for _ in range(2)]
    new = stack.set_usage(_cpu(demo.resource, "200"))
    assert stack.wait_final([new["id"]]) == {new["id"]: "committed"}
    assert old["sequence"] < late_seqs[0] < late_seqs[1] < new["sequence"]

    usage_before = _usage_snapshot(stack, demo.resource)
    assert [(r[2], r[4]) for r in usage_before] == [(usage_before[0][2], new["sequence"])]
    assert str(usage_before[0][2]) == "200.00"
    reports_before = _report_snapshot(stack, [old["id"], new["id"]])
    assert {i: r["state"] for i, r in reports_before.items()} == {
        old["id"]: "committed",
        new["id"]: "committed",
    }

    journal = {e.seq: e for e in stack.queue.read_journal()}
    old_entry, new_entry = journal[old["sequence"]], journal[new["sequence"]]

    # 1. through the real worker: both committed entries delivered again (duplicates), and a
    #    late report carrying a lower sequence than the committed value
    late = _late_report(stack, old_entry, "999.00")
    for seq, report_id, raw in (
        (old_entry.seq, old["id"], old_entry.raw),
        (new_entry.seq, new["id"], new_entry.raw),
        (late_seqs[0], late.id, wire.encode(late)),
    ):
        stack.redis.xadd(stack.queue.stream, {"s": seq, "i": report_id, "r": raw})
    assert stack.wait_final([late.id]) == {late.id: "superseded"}
    stack.wait_idle()
    assert _usage_snapshot(stack, demo.resource) == usage_before
    assert _report_snapshot(stack, [old["id"], new["id"]]) == reports_before

    # 2. the same through a second committer (a replay, another worker) in this process
    committer = Committer(
        lambda: SqlUnitOfWork(stack.engine), CatalogCache(SqlCatalog(stack.engine), 0.0).get, max_deliveries=5
    )
    late2 = _late_report(stack, old_entry, "555.00")
    outcome = committer.commit(
        [
            Delivery(old_entry.entry_id, old_entry.seq, old_entry.raw, 2),
            Delivery(new_entry.entry_id, new_entry.seq, new_entry.raw, 2),
            Delivery("1-1", late_seqs[1], wire.encode(late2)),
        ]
    )
    assert sorted(outcome.skipped) == sorted([old["id"], new["id"]])
    assert outcome.superseded == [late2.id]
    assert outcome.committed == [] and outcome.quarantined == []
    # and a duplicate of a superseded report is skipped, not applied
    again = committer.commit([Delivery("1-2", late_seqs[0], wire.encode(late))])
    assert again.skipped == [late.id] and not again.committed and not again.superseded

    assert _usage_snapshot(stack, demo.resource) == usage_before
    assert _report_snapshot(stack, [old["id"], new["id"]]) == reports_before
    assert queries.report(stack.engine, late2.id)["state"] == "superseded"  # type: ignore[index]
    stack.assert_healthy()
