"""The whole path in-process: sign, POST through Falcon, drain the journal, read SQL."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

from ingest.adapters.sql.read_model import usage_rows
from ingest.services.drain import drain


def test_accepted_report_is_committed(client, runtime, demo):
    resp = client.simulate_post(
        "/api/marketplace-public-api/set_usage/",
        json=demo.body(
            {
                "resource": demo.resource,
                "usages": [{"type": "cpu_hours", "amount": "12.50"}, {"type": "ram_gb", "amount": 4}],
            }
        ),
    )
    assert resp.status_code == 201, resp.text
    assert resp.json["sequence"] >= 1
    stats = drain(runtime.queue, runtime.committer, "t", 100, 0.01, 5)
    assert stats.committed == 1
    rows = usage_rows(runtime.engine, uuid.UUID(demo.resource))
    assert {(r["component"], r["amount"]) for r in rows} == {("cpu_hours", "12.50"), ("ram_gb", "4.00")}


def test_a_batch_commits_in_one_transaction_without_splitting(client, runtime, demo, caplog):
    for amount in ("1", "2", "3"):
        resp = client.simulate_post(
            "/api/marketplace-public-api/set_usage/",
            json=demo.body({"resource": demo.resource2, "usages": [{"type": "cpu_hours", "amount": amount}]}),
        )
        assert resp.status_code == 201
    stats = drain(runtime.queue, runtime.committer, "t", 100, 0.01, 5)
    assert (stats.batches, stats.committed, stats.superseded) == (1, 1, 2)
    assert not [r for r in caplog.records if "splitting" in r.getMessage()]


def test_an_emptied_redis_never_hands_out_a_committed_sequence(client, runtime, demo):
    def send(amount):
        resp = client.simulate_post(
            "/api/marketplace-public-api/set_usage/",
            json=demo.body({"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": amount}]}),
        )
        assert resp.status_code == 201, resp.text
        return resp.json["sequence"]

    first = [send("1"), send("2")]
    drain(runtime.queue, runtime.committer, "t", 100, 0.01, 5)
    client_redis = runtime.queue.client
    client_redis.delete(*client_redis.keys(f"{runtime.settings.redis_prefix}:*"))  # data lost
    runtime.queue._group_ready = False
    after = send("3")
    assert after > max(first)
    drain(runtime.queue, runtime.committer, "t", 100, 0.01, 5)
    rows = usage_rows(runtime.engine, uuid.UUID(demo.resource))
    assert [(r["amount"], r["sequence"]) for r in rows] == [("3.00", after)]


def test_text_needing_escapes_reaches_sql_unchanged(client, runtime, demo):
    """The PostgreSQL path formats COPY text itself: tabs, newlines, carriage returns,
    backslashes and non-ASCII must arrive exactly as sent, in usage rows and report records."""
    from sqlalchemy import select

    from ingest.adapters.sql import tables as t

    tricky = 'a\tb\nc\rd\\e \\N \\x00 é ✓ "q"'
    resp = client.simulate_post(
        "/api/marketplace-public-api/set_usage/",
        json=demo.body(
            {
                "resource": demo.resource,
                "usages": [{"type": "cpu_hours", "amount": "1.5", "description": tricky}],
            }
        ),
    )
    assert resp.status_code == 201, resp.text
    stats = drain(runtime.queue, runtime.committer, "t", 100, 0.01, 5)
    assert stats.committed == 1
    with runtime.engine.connect() as conn:
        description, amount = conn.execute(
            select(t.ComponentUsage.description, t.ComponentUsage.amount).where(
                t.ComponentUsage.resource_uuid == uuid.UUID(demo.resource)
            )
        ).one()
        payload, state = conn.execute(
            select(t.UsageReport.payload, t.UsageReport.state).where(t.UsageReport.id == resp.json["id"])
        ).one()
    assert description == tricky
    assert amount == Decimal("1.5")
    assert state == "committed"
    assert json.loads(payload)["usages"][0]["description"] == tricky
