"""AcceptPipeline against a real Redis: concurrent requests share one write, each keeps its own
atomic accept, and nothing is sent twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from ingest.adapters.redis.accept import AcceptPipeline
from ingest.adapters.redis.journal import RedisQueue


class _Counting:
    """Counts the writes of accept scripts made on a real connection (one per batch)."""

    def __init__(self, url: str) -> None:
        self.pool = redis.asyncio.ConnectionPool.from_url(url, socket_timeout=5)
        self.writes = 0
        self.connections = 0

    def __call__(self) -> redis.asyncio.Connection:
        conn = self.pool.make_connection()
        send = conn.send_packed_command

        async def counted(command: object, check_health: bool = True) -> None:
            packed = command if isinstance(command, bytes) else b"".join(command)  # type: ignore[arg-type]
            self.writes += b"EVALSHA" in packed
            await send(command, check_health)  # type: ignore[arg-type]

        conn.send_packed_command = counted  # type: ignore[method-assign]
        self.connections += 1
        return conn


@pytest.fixture
def queue(redis_url: str) -> Iterator[RedisQueue]:
    client = redis.Redis.from_url(redis_url)
    # the clock origin millennia ahead: accept.lua's clock stays below the counter, so these
    # tests see plain last + 1 sequences from 100 (the clock itself: test_sequence.py)
    q = RedisQueue(client, f"pipe-{uuid.uuid4().hex[:8]}", clock_origin_ms=10**14)
    client.set(q.seq_key, 100)
    client.script_load(q.accept_script)  # else the first write meets NOSCRIPT and goes twice
    yield q
    keys = list(client.scan_iter(f"{q.seq_key.rsplit(':', 1)[0]}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def _reports(n: int, tag: str) -> list[tuple[str, bytes]]:
    return [(f"{tag}-{i}", f"payload {tag} {i}".encode()) for i in range(n)]


def test_concurrent_accepts_share_one_write_and_keep_their_own_sequences(queue, redis_url):
    connect = _Counting(redis_url)
    pipeline = AcceptPipeline(queue, connect)

    async def main() -> list[object]:
        calls = [pipeline.accept(_reports(1 + i % 3, f"r{i}"), "customer-a") for i in range(50)]
        return list(await asyncio.gather(*calls))

    results = asyncio.run(main())
    assert connect.writes == 1  # all fifty were ready in the same turn of the loop
    sizes = [1 + i % 3 for i in range(50)]
    firsts = [r.first for r in results]  # type: ignore[attr-defined]
    taken = sorted((f, f + n - 1) for f, n in zip(firsts, sizes, strict=True))
    assert taken[0][0] == 101 and taken[-1][1] == 100 + sum(sizes)
    assert all(a[1] + 1 == b[0] for a, b in zip(taken, taken[1:], strict=False))  # no gap, no overlap
    journal = {e.raw: e.seq for e in queue.read_journal()}
    assert len(journal) == sum(sizes)
    for first, n, i in zip(firsts, sizes, range(50), strict=True):
        assert [journal[f"payload r{i} {k}".encode()] for k in range(n)] == list(range(first, first + n))


def test_requests_arriving_during_a_write_go_in_the_next_one(queue, redis_url):
    connect = _Counting(redis_url)
    pipeline = AcceptPipeline(queue, connect)

    async def main() -> None:
        first = asyncio.ensure_future(pipeline.accept(_reports(1, "a"), "c"))
        await asyncio.sleep(0)  # the first write is on its way
        later = [pipeline.accept(_reports(1, f"b{i}"), "c") for i in range(10)]
        done = await asyncio.gather(first, *later)
        assert sorted(r.first for r in done) == list(range(101, 112))

    asyncio.run(main())
    assert connect.writes == 2 and connect.connections == 1


def test_a_flushed_script_cache_is_reloaded_and_nothing_runs_twice(queue, redis_url):
    pipeline = AcceptPipeline(queue, _Counting(redis_url))

    async def main() -> list[int]:
        await pipeline.accept(_reports(1, "warm"), "c")
        queue.client.script_flush()  # a restarted Redis forgot the script
        done = await asyncio.gather(*[pipeline.accept(_reports(1, f"x{i}"), "c") for i in range(5)])
        return [r.first for r in done]

    assert sorted(asyncio.run(main())) == [102, 103, 104, 105, 106]
    assert queue.journal_length() == 6


def test_rate_limits_apply_per_request_inside_one_write(queue, redis_url):
    pipeline = AcceptPipeline(queue, _Counting(redis_url))

    async def main() -> list[int]:
        calls = [pipeline.accept(_reports(1, f"r{i}"), "limited", 1.0, 3.0) for i in range(5)]
        return [r.first for r in await asyncio.gather(*calls)]

    firsts = asyncio.run(main())
    assert firsts[:3] == [101, 102, 103] and firsts[3:] == [-1, -1]
    assert queue.journal_length() == 3


def test_a_lost_connection_fails_every_waiting_request_and_is_not_retried(queue):
    def unreachable() -> redis.asyncio.Connection:
        with socket_closed() as port:
            return redis.asyncio.Connection(
                host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1
            )

    pipeline = AcceptPipeline(queue, unreachable)

    async def main() -> list[object]:
        calls = [pipeline.accept(_reports(1, f"r{i}"), "c") for i in range(4)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = asyncio.run(main())
    assert all(isinstance(o, redis.ConnectionError) for o in outcomes), outcomes
    assert queue.journal_length() == 0


class socket_closed:
    """A port that nothing listens on."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = int(s.getsockname()[1])
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_cancelled_write_leaves_no_request_waiting(queue, redis_url):
    """Shutdown cancels the sender mid-write: every request waiting on it must end too."""
    stuck = asyncio.Event()

    def connect() -> redis.asyncio.Connection:
        conn = redis.asyncio.ConnectionPool.from_url(redis_url).make_connection()

        async def never(command: object, check_health: bool = True) -> None:
            await stuck.wait()

        conn.send_packed_command = never  # type: ignore[method-assign]
        return conn

    pipeline = AcceptPipeline(queue, connect)

    async def main() -> list[object]:
        calls = [asyncio.ensure_future(pipeline.accept(_reports(1, f"r{i}"), "c")) for i in range(3)]
        await asyncio.sleep(0.05)
        later = asyncio.ensure_future(pipeline.accept(_reports(1, "late"), "c"))
        await asyncio.sleep(0.05)
        lane = pipeline._lanes[asyncio.get_running_loop()]  # noqa: SLF001 - the sender itself
        assert lane.sender is not None
        lane.sender.cancel()
        return list(await asyncio.wait_for(asyncio.gather(*calls, later, return_exceptions=True), 2))

    outcomes = asyncio.run(main())
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
    assert queue.journal_length() == 0


def test_commands_are_packed_as_redis_py_packs_them():
    from ingest.adapters.redis.accept import _pack

    conn = redis.asyncio.Connection()
    args = [
        "EVALSHA",
        "0" * 40,
        5,
        "a:seq",
        "a:journal",
        "a:kick",
        "a:rate:c",
        "a:accepted",
        200,
        0.0,
        2.5,
        "report-1",
        b"raw \x00\xff bytes",
        "caf\u00e9",
        -1,
    ]
    assert _pack(args) == b"".join(conn.pack_command(*args))


def test_the_lua_scripts_ship_as_package_data() -> None:
    """Each script is a .lua file found through importlib.resources (as the installed wheel
    has them), and pyproject's package-data glob covers every one of them."""
    import fnmatch
    import tomllib
    from importlib.resources import files
    from pathlib import Path

    from ingest.adapters.redis import scripts

    package = files("ingest.adapters.redis")
    globs = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["ingest"]
    for name in scripts.NAMES:
        assert package.joinpath(f"{name}.lua").is_file(), name
        assert scripts.source(name).strip(), name
        assert any(fnmatch.fnmatch(f"adapters/redis/{name}.lua", g) for g in globs), name


def test_the_pipeline_sends_the_sha_of_the_script_it_loads(queue) -> None:
    import hashlib

    from ingest.adapters.redis import scripts

    text = scripts.source("accept")
    assert queue.accept_script == text
    command = queue.accept_command(_reports(1, "sha"), "c")
    assert command[:2] == ["EVALSHA", hashlib.sha1(text.encode()).hexdigest()]
