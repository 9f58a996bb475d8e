"""Survive a Redis failover: a primary, 2 replicas and 3 Sentinels (this test starts them on
free loopback ports), the real gunicorn web and Celery worker + beat configured with
REDIS_SENTINELS and REDIS_MIN_REPLICAS_ACK=1, signed reports under load, and a failover in
the middle. Counted from the client's 201s and from SQL: every accepted report reaches
exactly one final state, none is applied twice, no usage row goes back to an older value.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ingest.adapters.sql.unit_of_work import make_engine
from tests.conftest import migrated_database
from tests.faults.harness import Load, Stack, Verdict, settle
from tests.faults.sentinel_cluster import MASTER, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


class SentinelStack(Stack):
    """The faults harness's processes, pointed at Sentinels instead of one Redis."""

    def __init__(self, tmp: Path, database_url: str, demo: object, cluster: Cluster, **env: str) -> None:
        super().__init__(
            tmp,
            database_url,
            demo,  # type: ignore[arg-type]
            REDIS_SENTINELS=cluster.sentinel_list,
            REDIS_SENTINEL_MASTER=MASTER,
            REDIS_MIN_REPLICAS_ACK="1",
            REDIS_ACK_TIMEOUT_MS="200",
            **env,
        )
        self.env.pop("REDIS_URL", None)
        self.cluster = cluster

    def start(self) -> None:
        self.start_web()
        self.start_worker()
        self.start_beat()
        self.wait_ready()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    kind = "postgresql" if os.environ.get("TEST_DATABASE_URL") else "sqlite"
    yield from migrated_database(kind, tmp_path)


@pytest.fixture
def stack(tmp_path: Path, database: str, demo, cluster: Cluster) -> Iterator[SentinelStack]:
    s = SentinelStack(tmp_path, database, demo, cluster)
    s.start()
    yield s
    s.stop()


def _line(scenario: str, v: Verdict, load: Load) -> str:
    return (
        f"{scenario}: sent {v.sent} / accepted {v.accepted} / committed {v.committed} / "
        f"superseded {v.superseded} / quarantined {v.quarantined} / lost {v.lost} / "
        f"applied twice {v.applied_twice} / rolled back {v.stale_rows}; refused {load.refused}; "
        f"rows holding a report answered 503 {v.newer_than_any_201}"
    )


def _where_lost(stack: SentinelStack, load: Load) -> str:
    """For reports accepted but not final: still in the new primary's journal (a drain that
    did not finish) or not there at all (lost by Redis)."""
    engine = make_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            final = {
                r for (r,) in conn.execute(sa.text("SELECT id FROM usage_reports WHERE state IN "
                "('committed', 'superseded', 'quarantined')"))
            }  # fmt: skip
    finally:
        engine.dispose()
    missing = {a.id for a in load.accepted} - final
    if not missing:
        return ""
    client = stack.cluster.primary.client()
    in_journal = {
        fields[b"i"].decode() for _eid, fields in client.xrange("ingest:journal") if b"i" in fields
    } & missing
    seqs = sorted(a.seq for a in load.accepted if a.id in missing)
    return (
        f"not final: {len(missing)}, of which in the primary's journal {len(in_journal)}, "
        f"absent {len(missing) - len(in_journal)}; sequences {seqs[:3]}..{seqs[-3:]}; "
        f"primary seq {client.get('ingest:seq')}, pending {client.xpending('ingest:journal', 'commit')}"
    )


def check(stack: SentinelStack, load: Load, scenario: str) -> Verdict:
    verdict = settle(stack.database_url, load, timeout=60)
    print(_line(scenario, verdict, load))
    if verdict.lost or verdict.stale_rows:  # keep the logs of a loss or a rollback
        print("  ", _where_lost(stack, load))
        keep = (
            Path(os.environ.get("FAILOVER_LOGS", "/tmp")) / f"failover-logs-{os.getpid()}-{int(time.time())}"
        )
        shutil.copytree(stack.tmp, keep, ignore=shutil.ignore_patterns("*.aof*", "*.rdb", "beat-schedule*"))
        print("   logs kept in", keep)
    assert verdict.accepted > 0
    assert verdict.lost == 0, stack.tail()
    assert verdict.applied_twice == 0
    assert verdict.stale_rows == 0, stack.tail()
    assert verdict.quarantined == 0
    return verdict


def _accepted_after(load: Load, mark: int, more: int, timeout: float = 30) -> None:
    """The web answers 201 again after the failover, without a restart."""
    load.wait_for(mark + more, timeout)
    assert len(load.accepted) >= mark + more, (
        f"no 201 after the failover: {load.refused}; {load.sent} of {load.limit} reports sent"
    )


def test_sigkill_primary_sentinel_promotes_a_replica(stack, demo):
    cluster = stack.cluster
    old = cluster.primary
    load = Load(stack, [demo.resource, demo.resource2], limit=1500).start()
    load.wait_for(300)
    old.kill()
    mark = len(load.accepted)
    new = cluster.wait_new_primary(old.port)
    _accepted_after(load, mark, 100)
    load.finish()
    verdict = check(stack, load, f"SIGKILL primary (promoted {new.name})")
    assert verdict.accepted >= 400


def test_stalled_replica_then_primary_killed(stack, demo):
    cluster = stack.cluster
    old = cluster.primary
    stalled, healthy = cluster.replicas_of(old)
    # room for the 503s while the new primary has no replica (below): they must not use up
    # the reports the load sends before 100 more are answered 201. 2,500 ran out once (851
    # refusals, ~80 a second, while the resumed replica re-attached and resynced): the web
    # waits for it too once the Sentinels count it as following the new primary
    load = Load(stack, [demo.resource, demo.resource2], limit=6000).start()
    load.wait_for(200)
    stalled.signal(signal.SIGSTOP)  # WAIT 1 is still met by the other replica
    mark = len(load.accepted)
    load.wait_for(mark + 150, 20)
    time.sleep(1.5)  # the Sentinels see the stalled replica down: it is not a candidate
    old.kill()
    new = cluster.wait_new_primary(old.port)
    assert new is healthy, "the stalled replica was promoted"
    time.sleep(1.0)  # the new primary has no replica to acknowledge: 503 + Retry-After
    stalled.signal(signal.SIGCONT)  # Sentinel makes it a replica of the new primary ...
    # ... once its INFO shows it still following the old one: Sentinel asks replicas for INFO
    # every 10 s, so that took 1-11 s in the runs of 2026-12-01 (min-replicas-to-write: 503s
    # until then)
    now = cluster.wait_primary_with_replicas(1, timeout=40)
    if now is not new:
        print(f"  a second failover promoted {now.name}: {cluster.events()}")
    mark = len(load.accepted)
    _accepted_after(load, mark, 100)
    load.finish()
    check(stack, load, "stalled replica, then SIGKILL primary")


def test_split_brain_old_primary_frozen_through_the_failover(stack, demo):
    """The old primary is frozen (SIGSTOP) past down-after-milliseconds, replaced, then
    thawed: the web still holds connections to it, and it still thinks it is the primary
    until Sentinel demotes it. Its writes there have no replica to acknowledge them, so they
    are answered 503, never 201; the web finds the new primary."""
    cluster = stack.cluster
    old = cluster.primary
    load = Load(stack, [demo.resource, demo.resource2], limit=1500).start()
    load.wait_for(300)
    old.signal(signal.SIGSTOP)
    new = cluster.wait_new_primary(old.port)
    old.signal(signal.SIGCONT)
    mark = len(load.accepted)
    _accepted_after(load, mark, 100)
    load.finish()
    check(stack, load, f"split brain: primary frozen through the failover (promoted {new.name})")


def test_forced_failover_web_re_resolves_on_readonly(stack, demo):
    """``SENTINEL FAILOVER``: the old primary is demoted and answers READONLY on the web's
    open connections; the web drops them and writes to the new primary, with no restart.

    Sentinel promotes a replica (``REPLICAOF NO ONE``) while the old primary is up and takes
    writes for about a second more, acknowledged by the other replica until Sentinel points
    it at the promoted one, whose full resync then drops them: with ``WAIT 1`` 11 to 21 of
    about 1,490 reports answered 201 were lost (issue 13). The web waits for every replica
    the Sentinel counts, so those writes are answered 503."""
    cluster = stack.cluster
    old = cluster.primary
    # more than the test needs: the load must not run out before the 201s after the failover
    # are counted (``no 201 after the failover: {503: 11}`` in CI, with a 1,500 limit: most
    # likely a load that had already sent everything); it stops once they are
    load = Load(stack, [demo.resource, demo.resource2], limit=3000).start()
    load.wait_for(300)
    cluster.failover()
    new = cluster.wait_new_primary(old.port)
    mark, sent = len(load.accepted), load.sent
    _accepted_after(load, mark, 200, timeout=60)
    load.limit = min(load.limit, load.sent)  # enough: the threads stop at their next report
    load.finish()
    # Sentinel demotes the old primary once it has reported itself a primary for 8 s, seen in
    # a replica's INFO, asked every 10 s
    deadline = time.monotonic() + 30
    while old.client().execute_command("ROLE")[0] != b"slave" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert old.client().execute_command("ROLE")[0] == b"slave"
    check(stack, load, f"SENTINEL FAILOVER (promoted {new.name}; {mark} 201s of {sent} sent at the switch)")
