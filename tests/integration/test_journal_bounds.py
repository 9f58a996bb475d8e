"""The journal's bounds against a real Redis: a status lookup reads only around the time a
report id carries, back-pressure's pending cap is enforced by the accept script itself, and
an early trim drops acknowledged entries only (and says where it cut)."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from ingest.adapters.redis import journal as journal_module
from ingest.adapters.redis.journal import RedisQueue
from ingest.domain.ids import accepted_ms
from ingest.services.ports import ACCEPT_FULL, Accepted


@pytest.fixture
def queue(redis_url: str) -> Iterator[RedisQueue]:
    client = redis.Redis.from_url(redis_url)
    prefix = f"bounds-{uuid.uuid4().hex[:8]}"
    q = RedisQueue(client, prefix)
    q.client.script_load(q.accept_script)
    yield q
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def report_id(at_ms: int) -> str:
    """A report id as the web makes them: its first 12 hex digits are the acceptance ms."""
    return f"{at_ms:012x}{secrets.token_hex(10)}"


def accept(queue: RedisQueue, ids: list[str]) -> Accepted:
    reply = queue.client.execute_command(*queue.accept_command([(i, b"envelope") for i in ids], "c"))
    return RedisQueue.accepted(reply)


def test_a_lookup_finds_a_report_by_the_time_its_id_carries(queue):
    now = int(time.time() * 1000)
    ids = [report_id(now) for _ in range(50)]
    assert accept(queue, ids).first > 0
    wanted = ids[37]
    found = queue.find(wanted, accepted_ms(wanted) or 0)
    assert found is not None and found.raw == b"envelope"
    # the same id looked up at a time it does not carry: outside the bounded stretch
    assert queue.find(wanted, now - 60_000) is None
    assert queue.find(report_id(now), now) is None  # unknown: None, not an error


def test_a_lookup_reads_at_most_its_bound(queue, monkeypatch):
    now = int(time.time() * 1000)
    ids = [report_id(now) for _ in range(300)]
    accept(queue, ids)
    monkeypatch.setattr(journal_module, "FIND_MAX_ENTRIES", 100)
    assert queue.find(ids[50], now) is not None
    assert queue.find(ids[250], now) is None  # past the 100 entries it may read


def test_the_pending_cap_refuses_in_the_accept_script_and_lifts_when_reports_commit(queue):
    now = int(time.time() * 1000)
    queue.set_pending_cap(5)
    first = accept(queue, [report_id(now) for _ in range(3)])
    second = accept(queue, [report_id(now) for _ in range(4)])  # 3 pending < 5: let in (7)
    assert first.first > 0 and second.first > 0
    refused = accept(queue, [report_id(now)])
    assert refused.first == ACCEPT_FULL and queue.journal_length() == 7  # nothing written
    delivered = queue.claim("w", 10, 0)
    queue.ack([d.entry_id for d in delivered])
    assert accept(queue, [report_id(now)]).first > 0
    queue.set_pending_cap(None)
    assert accept(queue, [report_id(now) for _ in range(20)]).first > 0


def test_an_early_trim_drops_acknowledged_entries_only_and_keeps_its_cut_off(queue):
    now = int(time.time() * 1000)
    accept(queue, [report_id(now) for _ in range(10)])
    done = queue.claim("w", 6, 0)
    queue.ack([d.entry_id for d in done[:4]])  # 4 acknowledged, 2 claimed, 4 never delivered
    assert queue.trimmed_ms() == 0
    assert queue.trim(0) == 4
    left = [e.entry_id for e in queue.read_journal()]
    assert left == [d.entry_id for d in done[4:]] + left[2:] and len(left) == 6
    assert queue.trimmed_ms() == int(done[4].entry_id.split("-")[0])
    reading = queue.memory_reading()
    assert reading.entries == 6 and reading.pending == 6 and reading.used > 0
