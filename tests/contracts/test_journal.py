"""The Journal port's contract (what drain and reconcile rely on), run against the fake the
unit tests use and the real Redis adapter: entries are delivered once until acknowledged,
stay pending until then, and a reclaim re-delivers them with a higher delivery count."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from ingest.adapters.redis.journal import RedisQueue
from ingest.services.ports import Delivery, Journal
from tests.unit.fakes import FakeJournal

ENVELOPES = [f"envelope-{i}".encode() for i in range(5)]


@pytest.fixture(params=["fake", "redis"])
def journal(request: pytest.FixtureRequest) -> Iterator[Journal]:
    if request.param == "fake":
        yield FakeJournal([Delivery(f"{i + 1}-0", i + 1, raw) for i, raw in enumerate(ENVELOPES)])
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    queue = RedisQueue(client, prefix, kick_ms=1000)
    reports = [(f"{i:032x}", raw) for i, raw in enumerate(ENVELOPES)]
    client.set(queue.seq_key, 0)
    client.script_load(queue.accept_script)
    client.execute_command(*queue.accept_command(reports))
    try:
        yield queue
    finally:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_entries_are_claimed_once_in_acceptance_order(journal: Journal) -> None:
    first = journal.claim("w1", 3, 0)
    rest = journal.claim("w2", 10, 0)
    assert [d.raw for d in first + rest] == ENVELOPES
    seqs = [d.seq for d in first + rest]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(d.deliveries == 1 for d in first + rest)
    assert journal.claim("w3", 10, 0) == []


def test_an_acknowledged_entry_is_never_delivered_again(journal: Journal) -> None:
    taken = journal.claim("w1", 10, 0)
    assert journal.ack([d.entry_id for d in taken[:2]]) == 2
    assert journal.ack([taken[0].entry_id]) == 0  # acknowledging twice counts once
    again = journal.reclaim("w2", 0, 10)
    assert [d.raw for d in again] == ENVELOPES[2:]


def test_a_reclaim_counts_each_delivery(journal: Journal) -> None:
    journal.claim("w1", 10, 0)
    once = journal.reclaim("w2", 0, 10)
    twice = journal.reclaim("w3", 0, 10)
    assert {d.deliveries for d in once} == {2}
    assert {d.deliveries for d in twice} == {3}
    assert [d.entry_id for d in twice] == [d.entry_id for d in once]
