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
  fallback address: no Sentinel answer, no connection (the request gets 503).
- ``broker_url`` / ``broker_transport_options``: kombu's own ``sentinel://`` transport for
  the Celery broker (workers, beat, and the web's drain kicks).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from ingest.config import Settings

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
SENTINEL_TIMEOUT = 1.0  # a Sentinel that does not answer within this is skipped

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
        host, port = await self.discover()
        conn = redis.asyncio.Connection(
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
        self.address = (host, port)
        return conn

    async def discover(self) -> tuple[str, int]:
        found = _async_sentinel.Sentinel(
            list(self.settings.redis_sentinels), sentinel_kwargs=_sentinel_kwargs()
        )
        try:
            host, port = await found.discover_master(self.settings.redis_sentinel_master)
        except _NOT_FOUND as exc:
            raise NoPrimary(str(exc)) from exc
        finally:
            for client in found.sentinels:
                await client.aclose()
        return str(host), int(port)


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
