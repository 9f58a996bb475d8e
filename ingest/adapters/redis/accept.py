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
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from ingest.adapters.redis.journal import RedisQueue
from ingest.services.ports import Accepted

_Waiting = tuple[list[Any], "asyncio.Future[Accepted]"]


class _Lane:
    """The state of one event loop: its connection, the requests waiting, its sender."""

    def __init__(self) -> None:
        self.conn: redis.asyncio.Connection | None = None
        self.waiting: list[_Waiting] = []
        self.sender: asyncio.Task[None] | None = None


class AcceptPipeline:
    """One connection per process and event loop; ``accept`` is RedisQueue.accept's twin,
    sending the same accept.lua by the same SHA (RedisQueue.accept_command)."""

    def __init__(self, queue: RedisQueue, connect: Callable[[], redis.asyncio.Connection]) -> None:
        self.queue = queue
        self.connect = connect
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
                conn = lane.conn = self.connect()
            again: list[_Waiting] = []
            await _exchange(conn, batch, again)
            if again:
                await conn.send_command("SCRIPT", "LOAD", self.queue.accept_script)
                await conn.read_response()
                await _exchange(conn, again)
        except Exception as exc:  # connection lost or timed out: unread replies are unknown
            for _command, reply in batch:
                _settle(reply, exc)  # those already answered keep their answer
            lane.conn = None
            if conn is not None:
                await conn.disconnect(nowait=True)


async def _exchange(
    conn: redis.asyncio.Connection, batch: list[_Waiting], again: list[_Waiting] | None = None
) -> None:
    """Send the commands in one write and settle each request with its reply. NOSCRIPT
    replies (the script did not run) go to ``again`` when it is given, else they are errors."""
    await conn.send_packed_command(b"".join([_pack(cmd) for cmd, _ in batch]))
    for command, reply in batch:
        try:
            _settle(reply, await conn.read_response())
        except redis.exceptions.NoScriptError as exc:
            if again is None:
                _settle(reply, exc)
            else:
                again.append((command, reply))
        except redis.ResponseError as exc:
            _settle(reply, exc)


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
