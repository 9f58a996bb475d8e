"""Lose nothing: SIGKILL each moving part under load, let the system drain, and count from
the client's 201s and the database that every accepted report reached exactly one final
state and that no usage row holds a value older than the newest accepted report for its key.
"""

from __future__ import annotations

import signal
import time

import pytest
import redis
import sqlalchemy as sa

from ingest.adapters.redis.journal import RedisQueue
from tests.faults.harness import Load, Stack, settle

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


@pytest.fixture
def stack(tmp_path, database_url, demo):
    s = Stack(tmp_path, database_url, demo)
    s.start()
    yield s
    s.stop()


def resources(demo):
    return [demo.resource, demo.resource2]


def check(stack, load, scenario, capsys=None):
    verdict = settle(stack.database_url, load)
    print(verdict.line(scenario), "refused:", load.refused)
    assert verdict.accepted > 0
    assert verdict.lost == 0, stack.tail()
    assert verdict.applied_twice == 0
    assert verdict.stale_rows == 0, stack.tail()
    assert verdict.quarantined == 0
    return verdict


def test_sigkill_web(stack, demo):
    load = Load(stack, resources(demo), limit=1500).start()
    load.wait_for(300)
    stack.kill("web")
    time.sleep(1)
    stack.start_web()
    stack.wait_ready()
    load.finish()
    check(stack, load, "SIGKILL web")


def test_sigkill_worker_mid_batch(stack, demo):
    load = Load(stack, resources(demo), limit=2000).start()
    load.wait_for(200)
    stack.kill("worker")  # the whole process group: main process and its pool child
    load.wait_for(900)
    stack.start_worker()
    load.finish()
    check(stack, load, "SIGKILL worker")


def test_sigkill_redis_and_restart_from_aof(stack, demo):
    load = Load(stack, resources(demo), limit=1500).start()
    load.wait_for(400)
    stack.kill("redis")
    time.sleep(1.5)  # requests meanwhile get 503 + Retry-After, never a 201
    stack.start_redis()
    load.finish()
    verdict = check(stack, load, "SIGKILL redis")
    assert verdict.accepted >= 400


@pytest.mark.postgres
def test_postgres_connections_terminated(stack, demo):
    if not stack.database_url.startswith("postgresql"):
        pytest.skip("terminating server connections needs PostgreSQL")
    engine = sa.create_engine(stack.database_url, isolation_level="AUTOCOMMIT")
    load = Load(stack, resources(demo), limit=2000).start()
    killed = 0
    for round_ in range(1, 6):  # every 300 201s, while the load runs (it sends 2,000)
        load.wait_for(300 * round_)
        with engine.connect() as conn:
            killed += (
                conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar()
                or 0
            )
    engine.dispose()
    load.finish()
    assert killed >= 5, "no server connection was terminated: nothing was tested"
    check(stack, load, f"PostgreSQL connections terminated ({killed})")


def test_duplicate_delivery_and_replay_change_nothing(stack, demo):
    load = Load(stack, resources(demo), limit=300).start()
    load.finish()
    check(stack, load, "before duplicates")
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    stream = "ingest:journal"
    entries = client.xrange(stream, count=50)
    for _eid, fields in entries:  # the transport delivers the same reports again
        client.xadd(stream, fields)
    client.incrby("ingest:accepted", len(entries))  # as the accept script would count them
    queue = RedisQueue(client, "ingest")
    deadline = time.monotonic() + 30
    while queue.backlog() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queue.backlog() == 0
    check(stack, load, "after duplicate delivery")
    import subprocess
    import sys
    from pathlib import Path

    ingest = Path(sys.executable).parent / "ingest"
    out = subprocess.run(
        [str(ingest), "replay", "--since", "2000-01-01T00:00:00Z"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert " 0 committed" in out.stdout
    check(stack, load, "after replay")


def test_sigterm_worker_finishes_its_batch(stack, demo):
    load = Load(stack, resources(demo), limit=1200).start()
    load.wait_for(300)
    stack.kill("worker", signal.SIGTERM)
    stack.start_worker()
    load.finish()
    check(stack, load, "SIGTERM worker")


def test_sigterm_web_drains_in_flight_requests(stack, demo):
    load = Load(stack, resources(demo), limit=1000).start()
    load.wait_for(300)
    stack.kill("web", signal.SIGTERM)
    stack.start_web()
    stack.wait_ready()
    load.finish()
    check(stack, load, "SIGTERM web")
