"""The bridge end to end, in front of a fake Waldur run as a real process, in both of its modes
(the 8.x line, and a 7.0.7 server's quirks): the catalog is synced from Waldur by the command
line, providers report to our gunicorn, the Celery worker commits, the forwarder process sends
one coalesced set_usage per changed resource through the official client, and Waldur ends up
holding exactly our committed values. Faults on the way: 503s with Retry-After, and a
permanent 400 that goes to the forward quarantine and is retried by the operator.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ingest.adapters.redis.journal import RedisQueue
from ingest.adapters.sql.catalog import SqlCatalog
from ingest.adapters.sql.unit_of_work import make_engine
from ingest.dev.fake_waldur import process as fake_waldur
from tests.conftest import free_port, migrated_database
from tests.e2e.conftest import (
    BIN,
    STARTUP_DEADLINE,
    WORKER_QUEUE,
    Proc,
    Stack,
    _environment,
    _redis_database_url,
    _redis_databases,
    _start,
    _stop,
    beat_argv,
    web_argv,
    worker_argv,
)
from tests.e2e.test_observability import BRIDGE_PREFIX, missing_from, scrape
from tests.helpers import make_demo

TOKEN = "e2e-waldur-staff"
FORWARD_DEADLINE = 60.0

CASES = [
    pytest.param(("8", "sqlite"), id="waldur8-sqlite"),
    pytest.param(("8", "postgresql"), id="waldur8-postgresql", marks=pytest.mark.postgres),
    pytest.param(("7.0.7", "postgresql"), id="waldur707-postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(params=CASES)
def bridge(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[tuple[Stack, Any]]:
    """A fake Waldur holding the demo catalog, and our web + worker + forwarder + beat with
    WALDUR_URL pointing at it; our database starts empty and is filled by a first sync."""
    mode, kind = request.param
    demo = make_demo()
    logs = tmp_path / "logs"
    logs.mkdir()
    waldur = fake_waldur.start(mode=mode, seed=demo.doc(), token=TOKEN, log_path=logs / "waldur.log")
    databases = migrated_database(kind, tmp_path)
    database_url = next(databases)
    engine = make_engine(database_url)
    db_url = _redis_database_url(redis_url, next(_redis_databases))
    client = redis.Redis.from_url(db_url)
    if not os.environ.get("TEST_REDIS_URL"):
        client.flushdb()
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = _environment(database_url, db_url, prefix, port)
    env.update(
        WALDUR_URL=waldur.url,
        WALDUR_TOKEN=TOKEN,
        WALDUR_SYNC_INTERVAL="2",
        WALDUR_FULL_SYNC_INTERVAL="6",
        WALDUR_FORWARD_RATE="20",
        WALDUR_TIMEOUT="5",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),  # as ingest run shares it
    )
    (tmp_path / "prometheus").mkdir()
    procs: list[Proc] = []
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    stack = Stack(
        f"http://127.0.0.1:{port}",
        env,
        database_url,
        db_url,
        prefix,
        demo,
        engine,
        client,
        RedisQueue(client, prefix),
        procs,
        http,
    )
    try:
        synced = stack.cli("waldur", "sync", "--full")
        assert synced.returncode == 0, synced.stderr + synced.stdout
        procs += [
            _start("web", web_argv(), env, logs),
            _start("worker", worker_argv(WORKER_QUEUE, "e2e"), env, logs),
            _start("forwarder", worker_argv("waldur", "e2e-forwarder", 2), env, logs),
            _start("beat", beat_argv(tmp_path / "celerybeat-schedule"), env, logs),
        ]

        def ready() -> bool:
            try:
                return http.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        stack.wait_for("GET /readyz == 200", ready, STARTUP_DEADLINE)
        yield stack, waldur
    finally:
        http.close()
        _stop(procs)
        waldur.stop()
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        engine.dispose()
        for _ in databases:  # drops a PostgreSQL database
            pass


def _held(waldur: Any, resource: str) -> dict[str, Decimal]:
    """component -> the amount Waldur holds for ``resource`` this month."""
    hexed = uuid.UUID(resource).hex
    return {
        row["type"]: Decimal(row["usage"])
        for row in waldur.usages()
        if row["resource"] == hexed and row["billing_period"][:7] == dt.date.today().isoformat()[:7]
    }


def _calls_for(waldur: Any, resource: str) -> list[dict[str, Any]]:
    wanted = {resource, uuid.UUID(resource).hex}
    return [c for c in waldur.calls() if str((c.get("payload") or {}).get("resource")) in wanted]


def _status(stack: Stack) -> dict[str, Any]:
    done = stack.cli("waldur", "status", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_usage_reaches_waldur_coalesced_in_order_through_faults(bridge: tuple[Stack, Any]) -> None:
    stack, waldur = bridge
    demo = stack.demo
    resources = [demo.resource, demo.resource2]

    # the first sync loaded Waldur's catalog: a provider's secret verifies, its resources exist
    snap = SqlCatalog(stack.engine).snapshot()
    assert {uuid.UUID(r) for r in resources} <= set(snap.resources)
    assert (
        stack.http.post(
            "/api/marketplace-public-api/check_signature/", json=stack.body({"resource": demo.resource})
        ).status_code
        == 200
    )

    # five reports per resource, amounts rising: Waldur must end with the last of each
    ids = []
    for step in range(1, 6):
        for r in resources:
            usages = [
                {"type": "cpu_hours", "amount": f"{step * 10}.50"},
                {"type": "ram_gb", "amount": str(step * 2)},
            ]
            ids.append(stack.set_usage({"resource": r, "usages": usages})["id"])
    states = stack.wait_final(ids)
    assert set(states.values()) <= {"committed", "superseded"}
    final = {"cpu_hours": Decimal("50.50"), "ram_gb": Decimal("10")}
    for r in resources:
        stack.wait_for(
            f"Waldur to hold the final values of {r}", lambda r=r: _held(waldur, r) == final, FORWARD_DEADLINE
        )
    for r in resources:
        calls = [c for c in _calls_for(waldur, r) if c["status"] == 201]
        assert 1 <= len(calls) <= 5, calls  # coalesced: never more calls than reports
        seen = []
        for call in calls:
            body = call["payload"]
            by_type = {u["type"]: Decimal(u["amount"]) for u in body["usages"]}
            assert set(by_type) == {"cpu_hours", "ram_gb"}  # every component in one call
            assert "plan_period" not in body or body["plan_period"] in (None, "")
            moment = dt.datetime.fromisoformat(body["date"])
            assert moment <= dt.datetime.now(dt.UTC)  # never in Waldur's future
            seen.append(by_type["cpu_hours"])
        assert seen == sorted(seen), f"an older value overwrote a newer one in Waldur: {seen}"

    # Waldur answers 503 with Retry-After twice: the new value still arrives
    waldur.fault(status=503, count=2, retry_after=1)
    later = {"cpu_hours": Decimal("77.00"), "ram_gb": Decimal("11")}
    stack.wait_final(
        [
            stack.set_usage(
                {
                    "resource": demo.resource,
                    "usages": [{"type": k, "amount": str(v)} for k, v in later.items()],
                }
            )["id"]
        ]
    )
    stack.wait_for(
        "the value after two 503s", lambda: _held(waldur, demo.resource) == later, FORWARD_DEADLINE
    )
    assert [c["status"] for c in _calls_for(waldur, demo.resource)].count(503) == 2

    # a permanent 400 for one resource: forward quarantine, visible, retried after the fix
    refusal = {"resource": ["Resource is not in valid state."]}
    waldur.fault(status=400, resource=demo.resource2, body=refusal)
    refused = stack.set_usage({"resource": demo.resource2, "usages": [{"type": "cpu_hours", "amount": "99"}]})
    stack.wait_final([refused["id"]])

    def quarantined() -> list[dict[str, Any]] | None:
        done = stack.cli("waldur", "failures", "list", "--json")
        assert done.returncode == 0, done.stderr
        rows = [
            row
            for row in json.loads(done.stdout)
            if uuid.UUID(str(row["resource"])) == uuid.UUID(demo.resource2)
        ]
        return rows or None

    rows = stack.wait_for("the refused forward in the forward quarantine", quarantined, FORWARD_DEADLINE)
    assert rows[0]["status"] == 400
    assert json.loads(rows[0]["body"]) == refusal
    assert _status(stack)["failed_keys"] >= 1
    waldur.clear_faults()
    retried = stack.cli("waldur", "failures", "retry", "--all")
    assert retried.returncode == 0, retried.stderr + retried.stdout
    stack.wait_for(
        "the retried forward",
        lambda: _held(waldur, demo.resource2).get("cpu_hours") == Decimal("99"),
        FORWARD_DEADLINE,
    )

    # nothing left behind, and the bridge never rotated a secret in Waldur
    def settled() -> dict[str, Any] | None:
        status = _status(stack)
        return status if status["dirty_keys"] == 0 and status["failed_keys"] == 0 else None

    status = stack.wait_for("the outbox to settle", settled, FORWARD_DEADLINE)
    assert status["catalog_sync"] and status["catalog_sync"]["last_sync_at"]
    assert waldur.stats()["api_secret_code_posts"] == 0

    # every bridge series the alerts and the dashboard name is in the web's scrape
    samples = scrape(stack)
    missing = missing_from(samples, lambda name: name.startswith(BRIDGE_PREFIX))
    assert not missing, f"not in the scrape: {missing}"
    assert (
        sum(
            s.value
            for s in samples
            if s.name == "ingest_waldur_forwards_total" and s.labels["outcome"] == "acked"
        )
        >= 3
    )
    stack.check_alive()


def test_waldur_demo_runs_as_printed(tmp_path: Path) -> None:
    """``ingest run --waldur-demo`` (``make run-waldur-demo``): a fake Waldur, a catalog synced
    from it, and the push it prints reaches that Waldur; SIGTERM stops everything, exit 0."""
    import signal
    import subprocess
    import time

    from ingest import config as ingest_config

    ours = {name for name, *_ in ingest_config.VARIABLES} | {"PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    web, waldur_port, redis_port = free_port(), free_port(), free_port()
    env.update(PORT=str(web), LOG_FORMAT="json")
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen(
            [str(BIN / "ingest"), "run", "--waldur-demo", "--redis-port", str(redis_port),
             "--waldur-port", str(waldur_port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while "in another terminal" not in log.read_text().lower() or not _answers(web):
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        text = log.read_text()
        assert "resources          2 added" in text, text[-3000:]
        pushed = subprocess.run(
            [str(BIN / "ingest"), "push", "--url", f"http://127.0.0.1:{web}",
             "--customer", "7f3e2a10-0000-4000-8000-000000000001", "--secret", "demo-secret-0001",
             "--resource", "7f3e2a10-0000-4000-8000-0000000000a1", "cpu_hours=12.5", "ram_gb=4"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        fake = f"http://127.0.0.1:{waldur_port}/"
        wanted = {"cpu_hours": "12.50", "ram_gb": "4.00"}
        while True:
            rows = httpx.get(f"{fake}__fake__/usages", timeout=5).json()
            if {r["type"]: r["usage"] for r in rows} == wanted:
                break
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline + FORWARD_DEADLINE, (rows, log.read_text()[-3000:])
            time.sleep(0.3)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
        try:
            code = run.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            raise
    assert code == 0, log.read_text()[-3000:]


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
