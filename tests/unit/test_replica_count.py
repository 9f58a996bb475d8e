"""How many replica acknowledgements a write waits for (issue 13): every replica the
Sentinel that named the primary may promote, never fewer than REDIS_MIN_REPLICAS_ACK. The
Sentinel views below are the ones seen during a ``SENTINEL FAILOVER`` of the fault test's
cluster (2026-12-01): the old primary still named, the replica being promoted still listed."""

from __future__ import annotations

from typing import Any

import redis.asyncio

from ingest.adapters.redis.accept import AcceptPipeline
from ingest.adapters.redis.connections import PrimaryConnection, replicas_following


def _replica(port: int, flags: str = "slave", link: str = "ok", **kw: Any) -> dict[str, Any]:
    return {"ip": "127.0.0.1", "port": port, "flags": flags, "master-link-status": link, **kw}


def test_every_replica_up_with_its_link_up_counts():
    assert replicas_following([_replica(1), _replica(2)]) == 2
    assert replicas_following([]) == 0


def test_the_replica_being_promoted_still_counts():
    # the leader's view while it promotes: its own link to the replica dropped a moment
    # (CLIENT KILL), the replica's last INFO still says it follows the old primary
    during = [_replica(1, "slave,disconnected,promoted"), _replica(2)]
    assert replicas_following(during) == 2
    assert replicas_following([_replica(1, "slave,promoted", link="err"), _replica(2)]) == 2


def test_down_replicas_and_broken_links_do_not_count():
    assert replicas_following([_replica(1, "slave,s_down"), _replica(2)]) == 1
    assert replicas_following([_replica(1, "slave,s_down,o_down", link="err"), _replica(2)]) == 1
    # stalled: no answer to the Sentinel's pings for over 5 s, so never its choice
    assert replicas_following([_replica(1, **{"last-ok-ping-reply": 5200}), _replica(2)]) == 1
    assert replicas_following([_replica(1, **{"last-ok-ping-reply": 900}), _replica(2)]) == 2
    assert replicas_following([_replica(1, **{"slave-priority": 0}), _replica(2)]) == 1  # never promoted
    # after the switch: the old primary listed as a replica, still a primary (link err)
    assert replicas_following([_replica(1, link="err", **{"role-reported": "master"}), _replica(2)]) == 1


class _Queue:
    accept_script = "return 1"


def _pipeline(min_replicas: int) -> AcceptPipeline:
    return AcceptPipeline(_Queue(), lambda: PrimaryConnection(), min_replicas, 200)  # type: ignore[arg-type]


def test_wait_asks_for_every_counted_replica_and_at_least_the_minimum():
    counted = PrimaryConnection()  # not connected: only its attributes are read
    counted.replicas = 2
    assert _pipeline(1)._wait_for(counted) == (2, 200)
    assert _pipeline(3)._wait_for(counted) == (3, 200)
    counted.replicas = 0
    assert _pipeline(1)._wait_for(counted) == (1, 200)


def test_no_wait_without_a_minimum_and_the_minimum_without_sentinel():
    counted = PrimaryConnection()
    counted.replicas = 2
    assert _pipeline(0)._wait_for(counted) is None  # REDIS_MIN_REPLICAS_ACK=0: no WAIT at all
    plain = redis.asyncio.Connection()  # REDIS_URL: nobody counts replicas
    assert _pipeline(1)._wait_for(plain) == (1, 200)
