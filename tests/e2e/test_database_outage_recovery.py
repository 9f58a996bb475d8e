"""A PostgreSQL outage, against the real formation: reports accepted (and claimed by the
worker) while the database refuses connections commit within seconds of it answering again,
not RECONCILE_AFTER (60 s) later, and none is lost or applied twice.

The outage is real: ``ALTER DATABASE ... ALLOW_CONNECTIONS false`` and every backend of the
stack's database terminated, then ``ALLOW_CONNECTIONS true``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.e2e.conftest import Stack

# timed to the second: alone, after the parallel part (make test)
pytestmark = [pytest.mark.e2e, pytest.mark.serial]

OUTAGE = 12.0  # seconds: longer than a commit's own retries (~2 s), far below RECONCILE_AFTER
RECOVERY = 10.0  # every report committed within this after the database is back


@contextmanager
def database_down(stack: Stack) -> Iterator[None]:
    name = sa.engine.make_url(stack.database_url).database
    admin = sa.create_engine(os.environ["TEST_DATABASE_URL"], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_reports_claimed_during_an_outage_commit_within_seconds_of_its_end(stack: Stack) -> None:
    if not stack.database_url.startswith("postgresql"):
        pytest.skip("needs a PostgreSQL server to take down")
    resource = stack.demo.resource
    warm = stack.set_usage({"resource": resource, "usages": [{"type": "cpu_hours", "amount": "0"}]})
    stack.wait_final([warm["id"]])

    ids: list[str] = []
    with database_down(stack):
        started = time.monotonic()
        amount = 0
        while time.monotonic() - started < OUTAGE:
            amount += 1
            receipt = stack.set_usage(
                {"resource": resource, "usages": [{"type": "cpu_hours", "amount": str(amount)}]}
            )
            ids.append(receipt["id"])
            time.sleep(0.2)
        # the worker did claim reports during the outage (this is the case being fixed)
        assert stack.queue.backlog() >= len(ids)
        assert stack.redis.xpending(stack.queue.stream, "commit")["pending"] > 0
        stack.engine.dispose()  # the test's own pooled connections died with the backends
    back = time.monotonic()

    deadline = back + RECOVERY
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = stack.states(ids)
        if len(states) == len(ids) and all(v in ("committed", "superseded") for v in states.values()):
            break
        time.sleep(0.1)
    took = time.monotonic() - back
    assert len(states) == len(ids), f"{len(ids) - len(states)} not in SQL {took:.1f} s after\n{stack.tail()}"
    assert all(v in ("committed", "superseded") for v in states.values()), states
    assert took < RECOVERY
    print(f"all {len(ids)} reports of the outage final {took:.1f} s after it ended")

    # nothing lost, nothing applied twice: one record per accepted report, the last one wins
    stack.wait_idle()
    with stack.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, count(*) FROM usage_reports GROUP BY id")).all()
    assert {i for i, _ in rows} == {*ids, warm["id"]} and all(n == 1 for _, n in rows)
    assert sorted(states.values()).count("committed") >= 1
    assert stack.usage(resource)["cpu_hours"]["amount"] == f"{amount}.00"
    assert stack.usage(resource)["cpu_hours"]["report_id"] == ids[-1]
    stack.assert_healthy()
