"""Accept from an event loop: every request that reaches Redis in the same turn of the loop
rides in one pipelined write (one EVALSHA each, so each request keeps its own atomic accept,
sequence and rate limit), and its reply comes back to that request alone.

The web process pays one round trip per turn instead of one per request: that round trip was
28% of a sync web worker. While a write is in flight the next requests gather behind it, so
the batches grow with the load and stay at one request when idle.

Never retried after a connection error or timeout: the scripts may have run, and running
them again would append the reports twice (the provider resends after the 503 instead).
Every request whose reply was not read gets the error and answers 503. NOSCRIPT replies (a
restarted Redis) did not run: the script is loaded and those commands are sent once more.

READONLY replies (the connection's server was demoted to a replica by a failover) did not
run either: they answer 503 and the connection is dropped, so the next turn connects to
the primary that ``connect`` finds then (Sentinel), instead of staying pinned.

With ``min_replicas`` > 0 each write ends with ``WAIT n ack_timeout_ms``: the replies are
held until it answers, and when fewer replicas acknowledged, every request of that write
whose report was written gets NotReplicated (503): Redis may still have it, and commit it
later, but a failover now could lose it. The connection is dropped then too: a primary with
no replicas left is often one that Sentinel already replaced.

``n`` is ``min_replicas`` or, when more, every replica the Sentinels count as following the
primary (connections.replicas_following, on a Sentinel-made connection; counted when it is
made, then again every RECOUNT_AFTER seconds by a task beside the writes).
``WAIT min_replicas`` alone lost writes in a ``SENTINEL FAILOVER``: the replica being
promoted stops replicating at once, the old primary keeps taking writes for about a second,
another replica acknowledges them, and drops them when it resyncs from the promoted one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from ingest.adapters.redis.connections import PrimaryConnection, is_readonly
from ingest.adapters.redis.journal import RedisQueue
from ingest.services.ports import Accepted

_Waiting = tuple[list[Any], "asyncio.Future[Accepted]"]
Connect = Callable[[], "redis.asyncio.Connection | Awaitable[redis.asyncio.Connection]"]


class NotReplicated(redis.exceptions.ConnectionError):
    """The write ran on the primary but fewer than REDIS_MIN_REPLICAS_ACK replicas had it
    within REDIS_ACK_TIMEOUT_MS: answered 503; the report may still be committed later."""


class _Lane:
    """The state of one event loop: its connection, the requests waiting, its sender."""

    def __init__(self) -> None:
        self.conn: redis.asyncio.Connection | None = None
        self.waiting: list[_Waiting] = []
        self.sender: asyncio.Task[None] | None = None
        self.recount: asyncio.Task[None] | None = None  # held: the loop keeps weak references


class AcceptPipeline:
    """One connection per process and event loop; ``accept`` is RedisQueue.accept's twin,
    sending the same accept.lua by the same SHA (RedisQueue.accept_command)."""

    def __init__(
        self, queue: RedisQueue, connect: Connect, min_replicas: int = 0, ack_timeout_ms: int = 100
    ) -> None:
        self.queue = queue
        self.connect = connect
        self.wait: tuple[int, int] | None = (min_replicas, ack_timeout_ms) if min_replicas > 0 else None
        # a connection never crosses event loops (a web worker has one; test clients more)
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane] = weakref.WeakKeyDictionary()

    async def accept(
        self, reports: list[tuple[str, bytes]], customer: str = "", rate: float = 0.0, burst: float = 0.0
    ) -> Accepted:
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = _Lane()
        reply: asyncio.Future[Accepted] = loop.create_future()
        lane.waiting.append((self.queue.accept_command(reports, customer, rate, burst), reply))
        if lane.sender is None:  # runs after the requests already ready in this turn
            lane.sender = loop.create_task(self._send_all(lane))
        return await reply

    async def _send_all(self, lane: _Lane) -> None:
        batch: list[_Waiting] = []
        try:
            while lane.waiting:
                batch, lane.waiting = lane.waiting, []
                await self._send(lane, batch)
        except BaseException:  # cancelled (shutdown): nobody may wait for ever
            for _command, reply in batch + lane.waiting:
                if not reply.done():
                    reply.cancel()
            lane.waiting = []
            raise
        finally:
            lane.sender = None

    async def _send(self, lane: _Lane, batch: list[_Waiting]) -> None:
        conn = lane.conn
        try:
            if conn is None:
                made = self.connect()
                conn = lane.conn = await made if inspect.isawaitable(made) else made
            again: list[_Waiting] = []
            wait = self._wait_for(conn)
            drop = await _exchange(conn, batch, again, wait)
            if again:
                await conn.send_command("SCRIPT", "LOAD", self.queue.accept_script)
                await conn.read_response()
                drop = await _exchange(conn, again, None, wait) or drop
            if isinstance(conn, PrimaryConnection):
                drop = drop or conn.moved  # the Sentinels name another primary now
                if wait is not None and not drop and time.monotonic() >= conn.recount_at:
                    conn.recount_at = float("inf")  # one recount at a time; it sets the next
                    lane.recount = asyncio.get_running_loop().create_task(conn.recount())
        except Exception as exc:  # connection lost or timed out: unread replies are unknown
            for _command, reply in batch:
                _settle(reply, exc)  # those already answered keep their answer
            drop = True
        if drop:  # also after READONLY or a missing replica acknowledgement: find the primary again
            lane.conn = None
            if conn is not None:
                await conn.disconnect(nowait=True)

    def _wait_for(self, conn: redis.asyncio.Connection) -> tuple[int, int] | None:
        """``WAIT``'s arguments for a write on ``conn``: at least ``min_replicas``, and every
        replica its Sentinel counted as following the primary (a failover may promote any)."""
        if self.wait is None:
            return None
        following = conn.replicas if isinstance(conn, PrimaryConnection) else 0
        return max(self.wait[0], following), self.wait[1]


async def _exchange(
    conn: redis.asyncio.Connection,
    batch: list[_Waiting],
    again: list[_Waiting] | None = None,
    wait: tuple[int, int] | None = None,
) -> bool:
    """Send the commands (and ``WAIT replicas timeout_ms`` when ``wait`` is given) in one
    write and settle each request with its reply. NOSCRIPT replies (the script did not run)
    go to ``again`` when it is given, else they are errors. True: drop the connection."""
    packed = [_pack(cmd) for cmd, _ in batch]
    if wait is not None:
        packed.append(_pack(["WAIT", wait[0], wait[1]]))
    await conn.send_packed_command(b"".join(packed))
    outcomes: list[tuple[asyncio.Future[Accepted], Any]] = []
    drop = False
    for command, reply in batch:
        try:
            outcomes.append((reply, await conn.read_response()))
        except redis.exceptions.NoScriptError as exc:
            if again is None:
                outcomes.append((reply, exc))
            else:
                again.append((command, reply))
        except redis.ResponseError as exc:
            outcomes.append((reply, exc))
            drop = drop or is_readonly(exc)  # a demoted primary: nothing ran
    if wait is not None:
        try:
            acked = int(await conn.read_response())
        except redis.ResponseError:  # WAIT refused (a replica): as if nobody acknowledged
            acked = -1
        if acked < wait[0]:
            drop = True
            missing = NotReplicated(f"{max(acked, 0)} of {wait[0]} replicas acknowledged within {wait[1]} ms")
            outcomes = [(reply, missing if _wrote(outcome) else outcome) for reply, outcome in outcomes]
    for reply, outcome in outcomes:
        _settle(reply, outcome)
    return drop


def _wrote(outcome: Any) -> bool:
    """An accept reply whose reports were appended (not refused by the bucket, -1, nor for
    an uninitialised sequence, -2): the ones a missing acknowledgement puts at risk."""
    return not isinstance(outcome, BaseException) and int(outcome[0]) >= 0


def _pack(args: list[Any]) -> bytes:
    """One command in RESP, as redis-py's pack_command writes it (str as UTF-8, numbers by
    repr), without its per-argument encoder calls: those were 8 us of a 60 us request."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = (
            arg if isinstance(arg, bytes) else (arg.encode() if isinstance(arg, str) else repr(arg).encode())
        )
        parts += (b"$%d\r\n" % len(raw), raw, b"\r\n")
    return b"".join(parts)


def _settle(reply: asyncio.Future[Accepted], outcome: Any) -> None:
    if reply.done():  # the request went away (client gone, cancelled)
        return
    if isinstance(outcome, BaseException):
        reply.set_exception(outcome)
    else:
        reply.set_result(RedisQueue.accepted(outcome))
