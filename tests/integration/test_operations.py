"""Operators: report status, quarantine and replay, restore-from-backup, stats (real Redis+SQL)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import uuid

import pytest
import sqlalchemy as sa

from ingest.adapters.sql import read_model as queries
from ingest.services import catalog_file, operations
from ingest.services.drain import drain

SET_USAGE = "/api/marketplace-public-api/set_usage/"


def post(client, demo, resource, **amounts):
    usages = [{"type": k, "amount": v} for k, v in amounts.items()]
    resp = client.simulate_post(SET_USAGE, json=demo.body({"resource": resource, "usages": usages}))
    assert resp.status_code == 201, resp.text
    return resp.json


def drain_all(rt):
    return drain(rt.queue, rt.committer, "test", 50, 0.01, 10)


def usage_table(engine):
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT resource_uuid, component_type, billing_period, amount, report_seq "
                "FROM component_usages ORDER BY resource_uuid, component_type"
            )
        ).all()
    return [tuple(str(v) for v in row) for row in rows]


def test_status_follows_a_report_from_queued_to_committed(client, runtime, demo):
    receipt = post(client, demo, demo.resource, cpu_hours="5")
    queued = operations.report_status(runtime, receipt["id"])
    assert queued["state"] == "queued" and queued["seq"] == receipt["sequence"]
    drain_all(runtime)
    done = operations.report_status(runtime, receipt["id"])
    assert done["state"] == "committed"
    assert done["values"] == [
        {"component": "cpu_hours", "amount": "5.00", "billing_period": receipt["billing_period"]}
    ]
    assert operations.report_status(runtime, uuid.uuid4().hex) is None


def test_quarantine_then_fix_catalog_then_replay(client, runtime, demo):
    receipt = post(client, demo, demo.resource2, cpu_hours="9")
    runtime.catalog_source.remove_resource(uuid.UUID(demo.resource2))
    stats = drain_all(runtime)
    assert stats.quarantined == 1
    rows = queries.quarantined(runtime.engine, reason="resource_missing")
    assert [r["id"] for r in rows] == [receipt["id"]]
    assert rows[0]["reason"] and rows[0]["envelope"]
    assert queries.usage_rows(runtime.engine, uuid.UUID(demo.resource2)) == []

    runtime.catalog_source.load(catalog_file.parse(demo.doc()))  # the resource is back
    outcome = operations.replay_quarantined(runtime, rows)
    assert outcome.committed == [receipt["id"]]
    usage = queries.usage_rows(runtime.engine, uuid.UUID(demo.resource2))
    assert [(u["component"], u["amount"]) for u in usage] == [("cpu_hours", "9.00")]
    assert queries.report(runtime.engine, receipt["id"])["state"] == "committed"
    # replaying again changes nothing
    again = operations.replay_quarantined(runtime, rows)
    assert not again.committed and not again.quarantined


def test_replay_twice_and_old_after_new_changes_nothing(client, runtime, demo):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    post(client, demo, demo.resource, cpu_hours="1")
    post(client, demo, demo.resource, cpu_hours="2")
    drain_all(runtime)
    before = usage_table(runtime.engine)
    for _ in range(2):
        outcome = operations.replay(runtime, start)
        assert len(outcome.skipped) == 2 and not outcome.committed
    assert usage_table(runtime.engine) == before


def _backup(runtime, tmp_path):
    url = sa.engine.make_url(runtime.settings.database_url)
    runtime.engine.dispose()
    if url.get_backend_name() == "sqlite":
        shutil.copy(url.database, tmp_path / "backup.db")
        return lambda: (runtime.engine.dispose(), shutil.copy(tmp_path / "backup.db", url.database))
    if not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = tmp_path / "backup.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), dsn], check=True)

    def restore():
        runtime.engine.dispose()
        subprocess.run(
            ["pg_restore", "--clean", "--if-exists", "--single-transaction", "-d", dsn, str(dump)], check=True
        )

    return restore


def test_restore_from_backup_then_replay_gives_back_the_same_usage(client, runtime, demo, tmp_path):
    for i in range(5):
        post(client, demo, demo.resource, cpu_hours=str(i), ram_gb=str(10 + i))
    drain_all(runtime)
    restore = _backup(runtime, tmp_path)
    taken = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # replay a little before T
    for i in range(5, 12):
        post(client, demo, demo.resource if i % 2 else demo.resource2, cpu_hours=str(i))
    post(client, demo, demo.resource2, ram_gb="77")
    drain_all(runtime)
    expected = usage_table(runtime.engine)
    restore()
    assert usage_table(runtime.engine) != expected  # the loss is real

    plan = operations.plan_replay(runtime, taken)
    assert plan.changes, "dry run shows what would change"
    assert usage_table(runtime.engine) != expected  # and changed nothing
    operations.replay(runtime, taken)
    assert usage_table(runtime.engine) == expected
    operations.replay(runtime, taken)  # idempotent
    assert usage_table(runtime.engine) == expected


def test_stats_counts(client, runtime, demo):
    post(client, demo, demo.resource, cpu_hours="1")
    post(client, demo, demo.resource, cpu_hours="2")
    before = operations.stats(runtime)
    assert before["backlog"] == 2
    drain_all(runtime)
    after = operations.stats(runtime)
    assert after["backlog"] == 0 and after["committed"] == 1 and after["superseded"] == 1
    assert after["accepted"] >= 2 and "test" in after["workers_seen"]
