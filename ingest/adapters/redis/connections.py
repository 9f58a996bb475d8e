"""Every Redis connection of this service, built from Settings: to the REDIS_URL server, or
to the primary that Redis Sentinel names (REDIS_SENTINELS + REDIS_SENTINEL_MASTER).

Three kinds, one rule -- a connection talks to the current primary, or fails:

- ``sync_client``: a redis-py client whose pool asks Sentinel for the primary on every new
  connection and drops a connection that meets READONLY (a demoted primary) or an error.
- ``AsyncPrimary``: the raw connections of the web's accept path (AcceptPipeline). redis-py's
  Sentinel-managed async connection resolves the primary only in ``connect()``; the raw
  ``send_packed_command`` path skips it and silently connects to its default address,
  localhost:6379. So this asks Sentinel itself, builds a plain connection to the address it
  got, connects it explicitly and checks with ROLE that it is a primary. There is no
  fallback address: no Sentinel answer, no connection (the request gets 503). The same
  Sentinel also says how many replicas follow that primary (``PrimaryConnection.replicas``):
  the accept path waits for every one of them (accept.py), and has them counted again every
  ``RECOUNT_AFTER`` seconds (``PrimaryConnection.recount``, off the write path).
- ``broker_url`` / ``broker_transport_options``: kombu's own ``sentinel://`` transport for
  the Celery broker (workers, beat, and the web's drain kicks).
"""

from __future__ import annotations

import time
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from ingest.config import Settings

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
SENTINEL_TIMEOUT = 1.0  # a Sentinel that does not answer within this is skipped
UNANSWERED_PINGS_MS = 5000  # Sentinel promotes no replica silent for longer (SENTINEL_PING_PERIOD * 5)
RECOUNT_AFTER = 1.0  # seconds: a PrimaryConnection's replica count is asked again after this
# a connection takes ~6.5 ms (the Sentinel clients, SENTINEL MASTERS, TCP, ROLE; measured on
# loopback, 2026-12-01): counted again in the background, not by connecting again

# redis-py's Sentinel classes and parse_url are untyped
_sentinel: Any = redis.sentinel
_async_sentinel: Any = redis.asyncio.sentinel
_parse_url: Any = redis.connection.parse_url


class NoPrimary(redis.exceptions.ConnectionError):
    """No Sentinel names a primary, or the one named is not (or no longer) a primary."""


_NOT_FOUND = (_sentinel.MasterNotFoundError, _async_sentinel.MasterNotFoundError)


def is_readonly(exc: BaseException) -> bool:
    """A demoted primary's refusal: ``-READONLY``, or a script's write refused with it
    (``Error running script ... -READONLY ...``, which redis-py reports as a plain
    ResponseError). Nothing ran either way."""
    return isinstance(exc, redis.exceptions.ReadOnlyError) or (
        isinstance(exc, redis.ResponseError) and "-READONLY" in str(exc)
    )


class _SentinelConnection(_sentinel.SentinelManagedConnection):  # type: ignore[misc]
    """redis-py's connection to the Sentinel-named primary, which drops itself on READONLY;
    here also when the READONLY came from inside a script (our accept and ack scripts)."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if is_readonly(exc) and self.connection_pool.is_master:
                self.disconnect()
                raise redis.exceptions.ConnectionError("the primary was demoted to a replica") from exc
            raise


def _sentinel_kwargs() -> dict[str, Any]:
    return {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}


def sentinel(settings: Settings) -> Any:
    """A redis-py ``Sentinel`` over REDIS_SENTINELS."""
    return _sentinel.Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs=_sentinel_kwargs(),
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )


def sync_client(settings: Settings) -> redis.Redis:
    """The thread-safe client of the journal, the workers and the command line."""
    common: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": 30,
    }
    if not settings.uses_sentinel:
        return redis.Redis.from_url(settings.redis_url, **common)
    client: redis.Redis = sentinel(settings).master_for(
        settings.redis_sentinel_master,
        redis_class=redis.Redis,
        connection_class=_SentinelConnection,
        db=settings.redis_db,
        password=settings.redis_password,
        **common,
    )
    return client


def primary_address(settings: Settings) -> tuple[str, int]:
    """The primary's address as the Sentinels name it now (raises NoPrimary), or REDIS_URL's."""
    if not settings.uses_sentinel:
        kwargs = _parse_url(settings.redis_url)
        return str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379))
    try:
        host, port = sentinel(settings).discover_master(settings.redis_sentinel_master)
    except _NOT_FOUND as exc:
        raise NoPrimary(str(exc)) from exc
    return str(host), int(port)


def replicas_following(replicas: list[dict[str, Any]]) -> int:
    """How many of the replicas a Sentinel lists for a primary (``SENTINEL REPLICAS``, as
    redis-py parses it) it may promote with that primary's writes: one flagged ``promoted``
    (the failover that promotes it is under way), and every other one whose last INFO showed
    its link to the primary up, unless Sentinel's failover would pass it over (sentinel.c,
    sentinelSelectSlave): down (s_down / o_down), no answer to its pings for 5 s, or
    replica-priority 0. Not for ``disconnected``: the Sentinel's own link to a replica drops
    a moment while it promotes it.

    A write answered 201 must be on all of them. A ``SENTINEL FAILOVER`` promotes one of them
    (A) with ``REPLICAOF NO ONE`` while the old primary stays up and keeps taking writes,
    until, about a second later, Sentinel has seen A promoted and points the other replicas
    (B) at A: ``WAIT 1`` on the old primary is met by B in that second, and B's full resync
    from A then drops those writes. Waiting for A too, they are answered 503 instead."""
    return sum(1 for r in replicas if _may_be_promoted(r))


def _may_be_promoted(replica: dict[str, Any]) -> bool:
    flags = set(str(replica.get("flags", "")).split(","))
    if "promoted" in flags:
        return True
    return (
        replica.get("master-link-status") == "ok"
        and not flags & {"s_down", "o_down"}
        and int(replica.get("last-ok-ping-reply", 0)) <= UNANSWERED_PINGS_MS
        and int(replica.get("slave-priority", 100)) != 0
    )


class PrimaryConnection(redis.asyncio.Connection):
    """A connection to the primary a Sentinel named, with ``replicas``: how many replicas the
    Sentinels count as following it (``replicas_following``), as of ``recount_at`` minus
    RECOUNT_AFTER or later; ``moved``: they name another primary now (drop it)."""

    replicas: int = 0
    recount_at: float = float("inf")  # time.monotonic()
    moved: bool = False
    source: AsyncPrimary | None = None

    async def recount(self) -> None:
        """Count again: a replica that joined since (an old primary demoted after a failover)
        may be the one the next failover promotes. When no Sentinel answers, the count stays
        as it was (a Sentinel outage is not a write outage) and is asked again later."""
        if self.source is None:
            return
        try:
            address, replicas = await self.source.discover()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return
        finally:
            self.recount_at = time.monotonic() + RECOUNT_AFTER
        if address != (self.host, self.port):
            self.moved = True
        else:
            self.replicas = replicas


class AsyncPrimary:
    """``await AsyncPrimary(settings)()``: a new, connected ``redis.asyncio.Connection`` to
    the primary (AcceptPipeline's ``connect``). Safe across event loops: the Sentinel clients
    it asks are made and closed within the call (it runs once per new connection only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.address: tuple[str, int] | None = None  # of the last connection made
        self._url_pool: redis.asyncio.ConnectionPool | None = None
        if not settings.uses_sentinel:
            self._url_pool = redis.asyncio.ConnectionPool.from_url(
                settings.redis_url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                health_check_interval=30,
            )

    async def __call__(self) -> redis.asyncio.Connection:
        if self._url_pool is not None:
            pool: Any = self._url_pool
            made: redis.asyncio.Connection = pool.make_connection()
            await made.connect()  # type: ignore[no-untyped-call]  # explicitly, as below
            self.address = (str(getattr(made, "host", "")), int(getattr(made, "port", 0) or 0))
            return made
        (host, port), replicas = await self.discover()
        conn = PrimaryConnection(
            host=host,
            port=port,
            db=self.settings.redis_db,
            password=self.settings.redis_password,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            health_check_interval=30,
        )
        await conn.connect()  # type: ignore[no-untyped-call]  # explicitly: never the default address
        try:
            await conn.send_command("ROLE")
            role = await conn.read_response()
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        if not role or _text(role[0]) != "master":  # a Sentinel with a stale view
            await conn.disconnect(nowait=True)
            raise NoPrimary(f"{host}:{port} is not a primary ({_text(role[0]) if role else '?'})")
        conn.replicas, conn.source = replicas, self
        conn.recount_at = time.monotonic() + RECOUNT_AFTER
        self.address = (host, port)
        return conn

    async def discover(self) -> tuple[tuple[str, int], int]:
        """The primary's address, and how many replicas follow it (``replicas_following``),
        both from the first Sentinel that names a primary. No count, no primary: a count
        too low would let a failover lose writes answered 201."""
        name = self.settings.redis_sentinel_master
        found = _async_sentinel.Sentinel(
            list(self.settings.redis_sentinels), sentinel_kwargs=_sentinel_kwargs()
        )
        try:
            host, port = await found.discover_master(name)
            replicas = await found.sentinels[0].sentinel_slaves(name)  # the one that answered
        except _NOT_FOUND as exc:
            raise NoPrimary(str(exc)) from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise NoPrimary(f"the Sentinel that named the primary did not list its replicas: {exc}") from exc
        finally:
            for client in found.sentinels:
                await client.aclose()
        return (str(host), int(port)), replicas_following(list(replicas))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def broker_url(settings: Settings) -> str:
    """The Celery broker: REDIS_URL, or kombu's ``sentinel://h1:p1/db;sentinel://h2:p2/db``."""
    if not settings.uses_sentinel:
        return settings.redis_url
    password = settings.redis_password
    auth = f":{password}@" if password else ""
    return ";".join(f"sentinel://{auth}{h}:{p}/{settings.redis_db}" for h, p in settings.redis_sentinels)


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's transport options the broker URL needs (the master name with Sentinel)."""
    if not settings.uses_sentinel:
        return {}
    return {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": _sentinel_kwargs(),
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }
