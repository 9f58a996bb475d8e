"""The acceptance sequence never goes backwards (accept.lua against a real Redis), and the
journal epoch check detects a Redis that lost data (real Redis + SQL)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from ingest.adapters.redis.journal import CLOCK_ORIGIN_MS, TICKS_PER_MS, RedisQueue
from ingest.services.drain import drain, reconcile
from ingest.services.ports import ACCEPT_CLOCK_BEHIND, ACCEPT_EPOCH_WRITTEN, ACCEPT_SEQ_MISSING, Accepted

SET_USAGE = "/api/marketplace-public-api/set_usage/"


@pytest.fixture
def client_r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(client_r: redis.Redis) -> Iterator[str]:
    name = f"seq-{uuid.uuid4().hex[:8]}"
    yield name
    keys = list(client_r.scan_iter(f"{name}:*"))
    if keys:
        client_r.delete(*keys)


def accept(queue: RedisQueue, n: int = 1) -> Accepted:
    queue.client.script_load(queue.accept_script)
    reports = [(f"r{i}", b"x") for i in range(n)]
    return RedisQueue.accepted(queue.client.execute_command(*queue.accept_command(reports, "c")))


def clock_now(origin: int = CLOCK_ORIGIN_MS) -> int:
    return (int(time.time() * 1000) - origin) * TICKS_PER_MS


def journal_seqs(queue: RedisQueue) -> list[int]:
    return [e.seq for e in queue.read_journal()]


def test_the_sequence_is_the_clock_and_stays_exact_for_json(client_r, prefix):
    queue = RedisQueue(client_r, prefix)
    before = clock_now()
    got = accept(queue, 3)
    assert before - 2000 * TICKS_PER_MS <= got.first <= clock_now() + 2000 * TICKS_PER_MS
    assert got.first < 2**53 and got.flags & ACCEPT_SEQ_MISSING and got.flags & ACCEPT_EPOCH_WRITTEN
    assert journal_seqs(queue) == [got.first, got.first + 1, got.first + 2]
    assert int(client_r.get(queue.seq_key)) == got.first + 2
    # 69 years of milliseconds times 4096 stay below 2**53
    assert (69 * 365 * 86_400_000) * TICKS_PER_MS < 2**53


def test_monotonic_across_a_clock_that_jumps_back(client_r, prefix):
    queue = RedisQueue(client_r, prefix)
    first = accept(queue, 2)
    assert not first.flags & ACCEPT_CLOCK_BEHIND
    # the same Redis, its clock an hour behind: stands for TIME jumping back
    behind = RedisQueue(client_r, prefix, clock_origin_ms=CLOCK_ORIGIN_MS + 3_600_000)
    later = accept(behind, 3)
    assert later.first == first.first + 2  # last + 1, never backwards
    assert later.flags & ACCEPT_CLOCK_BEHIND
    assert accept(behind).first == later.first + 3
    seqs = journal_seqs(queue)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 6
    # a jump of a few ticks is not reported: only more than a second's worth
    client_r.set(queue.seq_key, clock_now() + 100 * TICKS_PER_MS)
    assert not accept(queue).flags & ACCEPT_CLOCK_BEHIND


def test_monotonic_across_a_key_reset_and_an_older_value(client_r, prefix):
    queue = RedisQueue(client_r, prefix)
    a = accept(queue, 5)
    client_r.delete(queue.seq_key)  # a key reset
    b = accept(queue)
    assert b.first > a.first + 4 and b.flags & ACCEPT_SEQ_MISSING and not b.flags & ACCEPT_EPOCH_WRITTEN
    client_r.set(queue.seq_key, 7)  # an older value (an old AOF, a SET by hand)
    c = accept(queue)
    assert c.first > b.first
    seqs = journal_seqs(queue)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_the_sql_floor_is_a_second_guard(client_r, prefix):
    queue = RedisQueue(client_r, prefix)
    far = clock_now() + 3600 * 1000 * TICKS_PER_MS  # SQL holds sequences an hour ahead
    queue.note_floor(far)
    got = accept(queue)
    assert got.first == far + 1 and got.flags & ACCEPT_CLOCK_BEHIND


def test_ensure_seq_at_least_raises_a_lower_key_and_never_lowers(client_r, prefix):
    queue = RedisQueue(client_r, prefix)
    assert queue.ensure_seq_at_least(1000) == 1000  # missing
    client_r.set(queue.seq_key, 10)
    assert queue.ensure_seq_at_least(1000) == 1000  # lower than SQL's max
    assert int(client_r.get(queue.seq_key)) == 1000
    assert queue.ensure_seq_at_least(5) == 1000  # never lowered
    big = 2**53 - 10
    assert queue.ensure_seq_at_least(big) == big
    assert int(client_r.get(queue.seq_key)) == big  # exact: no 14-digit float formatting


def test_large_sequences_are_exact_in_the_journal(client_r, prefix):
    queue = RedisQueue(client_r, prefix)
    client_r.set(queue.seq_key, 2**53 - 100)
    got = accept(queue, 2)
    assert got.first == 2**53 - 99
    assert journal_seqs(queue) == [2**53 - 99, 2**53 - 98]


def test_the_epoch_is_written_once_and_again_after_a_loss(client_r, prefix):
    queue = RedisQueue(client_r, prefix)
    assert accept(queue).flags & ACCEPT_EPOCH_WRITTEN
    epoch = queue.journal_epoch()[0]
    assert epoch and not accept(queue).flags & ACCEPT_EPOCH_WRITTEN
    assert queue.journal_epoch()[0] == epoch
    client_r.delete(*list(client_r.scan_iter(f"{prefix}:*")))  # Redis came back empty
    assert accept(queue).flags & ACCEPT_EPOCH_WRITTEN
    assert queue.journal_epoch()[0] not in (None, epoch)


# -- the epoch check against real Redis and SQL -----------------------------------------------


def post(client: Any, demo: Any, amount: str) -> dict[str, Any]:
    body = demo.body({"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": amount}]})
    resp = client.simulate_post(SET_USAGE, json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json)


def drain_all(rt: Any) -> int:
    return drain(rt.queue, rt.committer, "test", 50, 0.01, 10).committed


def test_a_first_check_adopts_the_epoch_and_reports_nothing(client, runtime, demo):
    post(client, demo, "1")
    drain_all(runtime)
    health = runtime.check_journal()
    assert health.status == "ok" and health.detected is None
    assert health.state.epoch == runtime.queue.journal_epoch()[0]
    assert runtime.check_journal().status == "ok"
    assert runtime.journal_health()["losses_detected"] == 0


def test_redis_coming_back_empty_is_detected_once(client, runtime, demo, caplog):
    post(client, demo, "1")
    drain_all(runtime)
    assert runtime.check_journal().status == "ok"
    committed = runtime.committed_sequence()
    q = runtime.queue
    q.client.delete(*list(q.client.scan_iter(f"{runtime.settings.redis_prefix}:*")))  # empty
    q._group_ready = False  # noqa: SLF001 - a new Redis: the group is gone too
    after = post(client, demo, "2")  # accepted at once, above what SQL holds
    assert after["sequence"] > committed
    with caplog.at_level("ERROR"):
        health = runtime.check_journal()
    assert health.detected is not None and health.status.startswith("degraded:")
    assert "different instance" in health.detected["reason"]
    assert health.detected["lost_from"] and health.detected["lost_to"]
    assert [r for r in caplog.records if "journal data loss detected" in r.getMessage()]
    again = runtime.check_journal()
    assert again.detected is None and again.status.startswith("degraded:")  # reported, not stuck
    assert again.state.losses == 1
    drain_all(runtime)  # a report accepted after the loss commits
    assert runtime.committed_sequence() == after["sequence"]
    stats = runtime.journal_health()
    assert stats["losses_detected"] == 1 and stats["status"].startswith("degraded:")
    assert stats["redis_epoch"] == again.state.epoch


def test_an_older_aof_is_detected_even_after_new_accepts(client, runtime, demo):
    post(client, demo, "1")
    drain_all(runtime)
    assert runtime.check_journal().status == "ok"
    q = runtime.queue
    # the state Redis had before the next reports: an older AOF to come back to
    saved = {k: q.client.dump(k) for k in q.client.scan_iter(f"{runtime.settings.redis_prefix}:*")}
    for n in range(3):
        post(client, demo, str(10 + n))
    drain_all(runtime)
    top = runtime.committed_sequence()
    q.client.delete(*list(q.client.scan_iter(f"{runtime.settings.redis_prefix}:*")))
    for key, value in saved.items():
        q.client.restore(key, 0, value)
    newer = post(client, demo, "20")  # new accepts move the counter past SQL's again
    assert newer["sequence"] > top
    health = runtime.check_journal()
    assert health.detected is not None, health
    assert "is gone" in health.detected["reason"] or "missing from the journal" in health.detected["reason"]
    assert runtime.check_journal().detected is None
    drain_all(runtime)
    assert runtime.committed_sequence() == newer["sequence"]


def test_a_counter_behind_sql_is_detected(client, runtime, demo):
    post(client, demo, "1")
    drain_all(runtime)
    assert runtime.check_journal().status == "ok"
    runtime.queue.client.set(runtime.queue.seq_key, 5)
    health = runtime.check_journal()
    assert health.detected is not None and "below the highest committed" in health.detected["reason"]
    assert int(runtime.queue.client.get(runtime.queue.seq_key)) >= runtime.committed_sequence()


def test_the_reconciler_runs_the_check(client, runtime, demo):
    post(client, demo, "1")
    drain_all(runtime)
    q = runtime.queue

    def check() -> str:
        return runtime.check_journal().status

    reconcile(
        q, runtime.committer, "test", 60, 50, 3600, runtime.committed_sequence(), True, check_journal=check
    )
    assert json.loads(q.client.get(f"{q.stream}:reconciled"))["journal"] == "ok"
    q.client.delete(q.epoch_key)
    reconcile(
        q, runtime.committer, "test", 60, 50, 3600, runtime.committed_sequence(), True, check_journal=check
    )
    assert json.loads(q.client.get(f"{q.stream}:reconciled"))["journal"].startswith("degraded:")


def test_readyz_says_degraded_and_stays_200(runtime, demo):
    import falcon.testing

    from api.app import create_app

    app = create_app(lambda: runtime.intake, {"redis": runtime.queue.ping}, runtime.settings.max_body_bytes)
    api = falcon.testing.TestClient(app)
    runtime.intake.check_journal()
    resp = api.simulate_get("/readyz")
    assert resp.status_code == 200 and resp.json["journal"] == "ok"
    runtime.queue.client.delete(runtime.queue.epoch_key)
    runtime.intake.check_journal()
    resp = api.simulate_get("/readyz")
    assert resp.status_code == 200 and resp.json["status"] == "ok"
    assert resp.json["journal"].startswith("degraded: Redis lost journal data")


def test_a_key_reset_while_the_clock_is_behind_continues_after_the_journal(client_r, prefix):
    """The clock alone does not cover a reset within the same millisecond or with a clock
    behind: the journal's newest entry is a floor too."""
    behind = RedisQueue(client_r, prefix, clock_origin_ms=10**14)  # the clock far behind
    client_r.set(behind.seq_key, 1000)
    a = accept(behind, 3)
    assert a.first == 1001
    client_r.delete(behind.seq_key)
    assert accept(behind).first == 1004
    client_r.set(behind.seq_key, 2)
    assert accept(behind).first == 1005
