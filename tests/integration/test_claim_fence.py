"""A worker takes nothing from a primary cut off from its replicas when replica
acknowledgements are required (RedisQueue.cut_off): in a split brain, the old primary's
entries were answered 503 and their clock sequences may belong to 201s on the new primary."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
import redis

from ingest.adapters.redis.journal import RedisQueue
from tests.integration.test_sequence import accept


@pytest.fixture
def client_r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(client_r: redis.Redis) -> Iterator[str]:
    name = f"fence-{uuid.uuid4().hex[:8]}"
    yield name
    keys = list(client_r.scan_iter(f"{name}:*"))
    if keys:
        client_r.delete(*keys)


def test_a_primary_without_the_required_replicas_gives_no_entries(client_r, prefix, caplog):
    """The test Redis has no replica: with REDIS_MIN_REPLICAS_ACK=1 it is cut off."""
    fenced = RedisQueue(client_r, prefix, min_replicas=1)
    accept(fenced, 3)
    with caplog.at_level(logging.WARNING, logger="ingest.adapters.redis.journal"):
        assert fenced.cut_off() and fenced.claim("w", 10, 0) == []
        assert fenced.claim("w", 10, 0) == []
    assert len([r for r in caplog.records if "claiming nothing" in r.getMessage()]) == 1  # once a minute
    assert fenced.pending_count() == 0  # nothing was delivered
    plain = RedisQueue(client_r, prefix)  # REDIS_MIN_REPLICAS_ACK=0: as before
    assert not plain.cut_off() and len(plain.claim("w", 10, 0)) == 3
