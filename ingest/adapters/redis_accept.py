"""Accept from an event loop: every request that reaches Redis in the same turn of the loop
rides in one pipelined write (one EVALSHA each, so each request keeps its own atomic accept,
sequence and rate limit), and its reply comes back to that request alone.

The web process pays one round trip per turn instead of one per request: that round trip was
28% of a sync web worker. While a write is in flight the next requests gather behind it, so
the batches grow with the load and stay at one request when idle.

Never retried after a connection error or timeout, for the reason ``RedisQueue._evalsha``
gives: the scripts may have run. Every request whose reply was not read gets the error and
answers 503. NOSCRIPT replies (a restarted Redis) did not run: the script is loaded and those
commands are sent once more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from ingest.adapters.redis_queue import RedisQueue
from ingest.ports import Accepted

_Waiting = tuple[list[Any], "asyncio.Future[Accepted]"]


class AcceptPipeline:
    """One connection per process and event loop; ``accept`` is RedisQueue.accept's twin."""

    def __init__(self, queue: RedisQueue,
                 connect: Callable[[], redis.asyncio.Connection]) -> None:
        self.queue = queue
        self.connect = connect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: redis.asyncio.Connection | None = None
        self._waiting: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None

    async def accept(self, reports: list[tuple[str, bytes]], customer: str = "",
                     rate: float = 0.0, burst: float = 0.0) -> Accepted:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a connection never crosses event loops (test clients)
            self._loop, self._conn, self._waiting, self._sender = loop, None, [], None
        reply: asyncio.Future[Accepted] = loop.create_future()
        self._waiting.append((self.queue.accept_command(reports, customer, rate, burst), reply))
        if self._sender is None:  # runs after the requests already ready in this turn
            self._sender = loop.create_task(self._send_all())
        return await reply

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[_Waiting]) -> None:
        conn = self._conn
        done = 0
        try:
            if conn is None:
                conn = self._conn = self.connect()
            await conn.send_packed_command(conn.pack_commands([cmd for cmd, _ in batch]))
            again: list[_Waiting] = []
            for command, reply in batch:
                try:
                    _settle(reply, await conn.read_response())
                except redis.exceptions.NoScriptError:
                    again.append((command, reply))
                except redis.ResponseError as exc:
                    _settle(reply, exc)
                done += 1
            if again:
                await conn.send_command("SCRIPT", "LOAD", self.queue.accept_script)
                await conn.read_response()
                await conn.send_packed_command(conn.pack_commands([cmd for cmd, _ in again]))
                for _command, reply in again:
                    try:
                        _settle(reply, await conn.read_response())
                    except redis.ResponseError as exc:
                        _settle(reply, exc)
        except Exception as exc:  # connection lost or timed out: unread replies are unknown
            for _command, reply in batch[done:]:
                _settle(reply, exc)
            for _command, reply in batch[:done]:
                if not reply.done():  # a NOSCRIPT resend that failed
                    _settle(reply, exc)
            self._conn = None
            if conn is not None:
                await conn.disconnect(nowait=True)


def _settle(reply: asyncio.Future[Accepted], outcome: Any) -> None:
    if reply.done():  # the request went away (client gone, cancelled)
        return
    if isinstance(outcome, BaseException):
        reply.set_exception(outcome)
    else:
        reply.set_result(RedisQueue.accepted(outcome))
