"""Replica acknowledgement and Sentinel-built connections against real Redis processes: a
primary, a replica and Sentinels on free loopback ports (tests/faults/sentinel_cluster.py)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
import redis

from api.app import create_app
from ingest import bootstrap
from ingest.adapters.redis import connections
from ingest.adapters.redis.accept import AcceptPipeline, NotReplicated
from ingest.adapters.redis.journal import RedisQueue
from ingest.config import Settings
from tests.faults.sentinel_cluster import MASTER, Cluster

# replicas must answer WAIT within 100 ms: alone, after the parallel part (make test)
pytestmark = pytest.mark.serial


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("sentinel"), replicas=1, sentinels=1).start(wait_for_sentinels=False)
    yield c
    c.stop()


def _settings(cluster: Cluster, **kw: object) -> Settings:
    return Settings(
        redis_url="redis+sentinel://unused:1/x/0",  # only the database number is read from it
        redis_sentinels=tuple(("127.0.0.1", s.port) for s in cluster.sentinels),
        redis_sentinel_master=MASTER,
        redis_prefix=f"ack-{uuid.uuid4().hex[:8]}",
        **kw,  # type: ignore[arg-type]
    )


def _queue(settings: Settings) -> RedisQueue:
    client = connections.sync_client(settings)
    q = RedisQueue(client, settings.redis_prefix)
    client.set(q.seq_key, 100)
    client.script_load(q.accept_script)
    return q


def _reports(n: int, tag: str) -> list[tuple[str, bytes]]:
    return [(f"{tag}-{i}", f"payload {tag} {i}".encode()) for i in range(n)]


def test_sentinel_built_raw_connections_go_to_the_discovered_primary(cluster):
    settings = _settings(cluster)
    primary = cluster.nodes[0].port
    assert primary != 6379

    async def raw() -> tuple[str, int, bytes]:
        conn = await connections.AsyncPrimary(settings)()
        try:
            await conn.send_command("PING")
            return conn.host, conn.port, await conn.read_response()
        finally:
            await conn.disconnect()

    assert asyncio.run(raw()) == ("127.0.0.1", primary, b"PONG")
    client = connections.sync_client(settings)
    conn = client.connection_pool.get_connection()
    try:
        assert (conn.host, conn.port) == ("127.0.0.1", primary)  # type: ignore[attr-defined]
    finally:
        client.connection_pool.release(conn)
    assert connections.primary_address(settings) == ("127.0.0.1", primary)


def test_no_primary_is_an_error_never_a_fallback_to_localhost(cluster):
    settings = Settings(
        redis_sentinels=tuple(("127.0.0.1", s.port) for s in cluster.sentinels),
        redis_sentinel_master="no-such-master",
    )
    with pytest.raises(connections.NoPrimary):
        asyncio.run(connections.AsyncPrimary(settings)())
    with pytest.raises(connections.NoPrimary):
        connections.primary_address(settings)
    rt = bootstrap.Runtime(settings)
    app = create_app(lambda: rt.intake, {"redis": rt.redis_primary}, 1024)
    resp = falcon.testing.TestClient(app).simulate_get("/readyz")
    assert resp.status_code == 503 and resp.json["redis"].startswith("unavailable")


def test_readyz_names_the_primary(cluster):
    rt = bootstrap.Runtime(_settings(cluster))
    app = create_app(lambda: rt.intake, {"redis": rt.redis_primary}, 1024)
    resp = falcon.testing.TestClient(app).simulate_get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.json["redis_primary"] == f"127.0.0.1:{cluster.nodes[0].port}"


class _Counting:
    def __init__(self, connect: connections.AsyncPrimary) -> None:
        self.inner = connect
        self.writes: list[bytes] = []
        self.connections = 0

    async def __call__(self) -> redis.asyncio.Connection:
        conn = await self.inner()
        send = conn.send_packed_command

        async def counted(command: object, check_health: bool = True) -> None:
            packed = command if isinstance(command, bytes) else b"".join(command)  # type: ignore[arg-type]
            self.writes.append(packed)
            await send(command, check_health)  # type: ignore[arg-type]

        conn.send_packed_command = counted  # type: ignore[method-assign]
        self.connections += 1
        return conn


def test_one_wait_per_write_and_every_request_acknowledged(cluster):
    settings = _settings(cluster)
    queue = _queue(settings)
    connect = _Counting(connections.AsyncPrimary(settings))
    pipeline = AcceptPipeline(queue, connect, min_replicas=1, ack_timeout_ms=1000)

    async def main() -> list[int]:
        done = await asyncio.gather(*[pipeline.accept(_reports(1 + i % 2, f"r{i}"), "c") for i in range(20)])
        return [r.first for r in done]

    firsts = asyncio.run(main())
    assert len(connect.writes) == 1 and connect.writes[0].count(b"WAIT") == 1
    assert connect.writes[0].count(b"EVALSHA") == 20
    assert len(set(firsts)) == 20 and min(firsts) > 100  # the clock sequence: above the key, never below
    replica = cluster.nodes[1].client()
    cluster.wait_replicas(cluster.nodes[0], 1)
    assert replica.xlen(queue.stream) == 30  # WAIT said so: the replica has every report


def test_no_wait_is_sent_when_no_acknowledgement_is_asked(cluster):
    settings = _settings(cluster)
    connect = _Counting(connections.AsyncPrimary(settings))
    pipeline = AcceptPipeline(_queue(settings), connect)
    asyncio.run(pipeline.accept(_reports(1, "x"), "c"))
    assert connect.writes and all(b"WAIT" not in w for w in connect.writes)


def test_a_stalled_replica_turns_accepts_into_not_replicated_and_back(cluster):
    settings = _settings(cluster)
    queue = _queue(settings)
    connect = _Counting(connections.AsyncPrimary(settings))
    pipeline = AcceptPipeline(queue, connect, min_replicas=1, ack_timeout_ms=100)
    replica = cluster.nodes[1]

    async def accept_all(tag: str, n: int = 5) -> list[object]:
        calls = [pipeline.accept(_reports(1, f"{tag}{i}"), "c") for i in range(n)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    assert all(not isinstance(r, BaseException) for r in asyncio.run(accept_all("ok")))
    replica.signal(signal.SIGSTOP)
    try:
        stalled = asyncio.run(accept_all("stalled"))
        assert all(isinstance(r, NotReplicated) for r in stalled), stalled
        # a rate-limited request wrote nothing: it keeps its answer (429), not a 503
        queue.client.hset(f"{queue.stream}:rate:bucket", mapping={"tokens": 0, "ts": time.time()})
        limited = asyncio.run(pipeline.accept(_reports(1, "limited"), "bucket", 0.001, 1.0))
        assert limited.first == -1
    finally:
        replica.signal(signal.SIGCONT)
    cluster.wait_replicas(cluster.nodes[0], 1)
    assert all(not isinstance(r, BaseException) for r in asyncio.run(accept_all("back")))
    assert connect.connections >= 2  # dropped after the missing acknowledgement


def test_more_replicas_asked_than_exist_is_never_a_201(cluster):
    settings = _settings(cluster)
    pipeline = AcceptPipeline(_queue(settings), connections.AsyncPrimary(settings), 2, 50)
    with pytest.raises(NotReplicated):
        asyncio.run(pipeline.accept(_reports(1, "two"), "c"))


def test_readonly_drops_the_connection_and_the_next_write_finds_the_new_primary(tmp_path: Path):
    """A demoted primary answers READONLY: that request gets the error (nothing ran) and the
    pipeline connects again, here to the promoted replica."""
    c = Cluster(tmp_path, replicas=1, sentinels=0).start(wait_for_sentinels=False)
    try:
        old, new = c.nodes
        targets = [old.port, new.port]
        made: list[int] = []

        async def connect() -> redis.asyncio.Connection:
            port = targets[min(len(made), 1)]
            made.append(port)
            conn = redis.asyncio.Connection(port=port, socket_timeout=5)
            await conn.connect()
            return conn

        client = old.client()
        q = RedisQueue(client, "ro", clock_origin_ms=10**14)  # the clock far behind: last + 1
        client.set(q.seq_key, 100)
        client.script_load(q.accept_script)
        c.wait_replicas(old, 1)
        pipeline = AcceptPipeline(q, connect)

        async def main() -> None:
            assert (await pipeline.accept(_reports(1, "a"), "c")).first == 101
            new.client().execute_command("REPLICAOF", "NO", "ONE")  # a failover, by hand
            client.execute_command("REPLICAOF", "127.0.0.1", str(new.port))
            with pytest.raises(redis.ResponseError, match="READONLY"):
                await pipeline.accept(_reports(1, "b"), "c")
            assert (await pipeline.accept(_reports(1, "c"), "c")).first == 102

        asyncio.run(main())
        assert made == [old.port, new.port]
        assert new.client().xlen(q.stream) == 2
    finally:
        c.stop()
