"""Scenario 7: workers survive Redis trouble.

Under load, Redis refuses writes (MISCONF: a snapshot it cannot write, standing in for a full
disk; OOM: maxmemory reached) or is killed and started again on the same port from its AOF.
Intake answers 503 meanwhile; once Redis is back, every report that got a 201 before or
after the trouble commits without a manual restart, and the worker and beat processes are
the same ones as before (measured before the fix: the worker exited on the first MISCONF,
"Unrecoverable error: ResponseError", and 131 accepted reports stayed uncommitted).

Counted from the client's 201s and the database: sent / accepted / committed / superseded /
quarantined / lost / applied twice / rolled back (a usage row older than the newest accepted
report for its key).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from tests.conftest import migrated_database
from tests.faults.harness import Load, Stack, settle

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(150)]

TROUBLE_SECONDS = 4.0


@pytest.fixture
def stack(tmp_path, demo):
    # SQLite only: the scenario is about Redis, and the budget is ~90 s for the whole file
    for url in migrated_database("sqlite", tmp_path):
        s = Stack(tmp_path, url, demo)
        s.start()
        yield s
        s.stop()


def client_of(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.env["REDIS_URL"], socket_timeout=5)


def refuses_writes(client: redis.Redis) -> bool:
    try:
        client.set("trouble-probe", "1")
    except redis.ResponseError:
        return True
    return False


def misconf(stack: Stack) -> None:
    """A snapshot Redis cannot write: with save points and stop-writes-on-bgsave-error,
    every write is refused with MISCONF until a snapshot succeeds again."""
    client = client_of(stack)
    gone = stack.tmp / "gone"
    gone.mkdir()
    client.config_set("save", "3600 1")
    client.config_set("stop-writes-on-bgsave-error", "yes")
    client.config_set("dir", str(gone))
    gone.rmdir()
    client.bgsave()
    deadline = time.monotonic() + 10
    while not refuses_writes(client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert refuses_writes(client), "could not make Redis refuse writes"


def end_misconf(stack: Stack) -> None:
    client = client_of(stack)
    client.config_set("dir", str(stack.tmp / "redis"))
    client.bgsave()
    deadline = time.monotonic() + 10
    while refuses_writes(client) and time.monotonic() < deadline:
        time.sleep(0.1)
    client.config_set("save", "")


def oom(stack: Stack) -> None:
    client_of(stack).config_set("maxmemory", "1")
    assert refuses_writes(client_of(stack))


def end_oom(stack: Stack) -> None:
    client_of(stack).config_set("maxmemory", "0")


def restart(stack: Stack) -> None:
    stack.kill("redis")  # SIGKILL; the AOF (fsync always) is all that survives


def end_restart(stack: Stack) -> None:
    stack.start_redis()  # the same port and directory: it loads its AOF


TROUBLES = {
    "MISCONF (snapshot cannot be written)": (misconf, end_misconf),
    "OOM (maxmemory reached)": (oom, end_oom),
    "Redis SIGKILL + restart from AOF": (restart, end_restart),
}


def alive(stack: Stack, name: str) -> int:
    proc = stack.procs[name]
    assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n" + stack.tail()
    return proc.pid


@pytest.mark.parametrize("trouble", list(TROUBLES))
def test_workers_survive_redis_trouble(stack, demo, trouble):
    begin, end = TROUBLES[trouble]
    pids = {name: alive(stack, name) for name in ("worker", "beat", "web")}
    load = Load(stack, [demo.resource, demo.resource2], limit=1200).start()
    load.wait_for(300)
    begin(stack)
    accepted_before = len(load.accepted)
    time.sleep(TROUBLE_SECONDS)  # intake answers 503 meanwhile; the worker must not exit
    assert {n: alive(stack, n) for n in pids} == pids
    end(stack)
    load.finish()
    verdict = settle(stack.database_url, load, timeout=60)
    print(
        f"{trouble}: sent {verdict.sent}, accepted {verdict.accepted} "
        f"({accepted_before} before the trouble), committed {verdict.committed}, superseded "
        f"{verdict.superseded}, quarantined {verdict.quarantined}, lost {verdict.lost}, "
        f"applied twice {verdict.applied_twice}, rolled back {verdict.stale_rows}; "
        f"refused: {load.refused}"
    )
    assert {n: alive(stack, n) for n in pids} == pids  # no restart, manual or otherwise
    assert verdict.accepted >= accepted_before >= 300
    assert verdict.lost == 0, stack.tail(60)
    assert verdict.applied_twice == 0 and verdict.stale_rows == 0 and verdict.quarantined == 0
    assert Path(stack.logs["worker"]).read_text(errors="replace").count("Unrecoverable error") == 0
