"""The web process's server: gunicorn supervising uvicorn workers (uvloop + httptools).

gunicorn's sync worker bounded what a client could make it hold; uvicorn does not, so
``BoundedHttpTools`` puts the bounds back, before the app sees a request:

- request line and each header line at most 8,190 bytes, at most 100 header fields, and the
  whole head at most ~0.8 MB counted as bytes arrive (httptools gathers a header's value
  before it calls back: a 20 MB header was read into memory). Past them: 400 and close.
- a whole request (head, body, chunk framing and trailers) at most twice the largest body
  limit plus the head limit: 400 and close. The app answers 413 well before that.
- a client has HEAD_TIMEOUT seconds from its first byte (or from connecting) to send a
  request's head, and BODY_TIMEOUT seconds for its body (counted from the end of its head,
  with a length or chunked); else the connection is closed, as the sync worker's 30 s
  timeout did. A body cut short (that timeout, or the client leaving) is never handed to
  the app as if it were whole. Idle keep-alive connections close after gunicorn's
  ``keepalive`` seconds (uvicorn's own timer).
- past LIMIT_CONCURRENCY open connections or requests in progress in a worker, a request
  gets our JSON 503 with ``Retry-After`` (uvicorn's own is plain text without it).

Only HTTP/1.1 is served: WebSocket upgrades are not (``ws: none``).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from types import FrameType
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from ingest.config import load as _load_settings
from ingest.domain.errors import Rejected

MAX_LINE = 8190  # request line, and each header line (gunicorn's limit_request_line)
MAX_FIELDS = 100  # header fields (gunicorn's limit_request_fields)
MAX_HEAD = MAX_LINE * (MAX_FIELDS + 1)  # bytes before the end of the headers
HEAD_TIMEOUT = 10.0  # defaults; HEAD_TIMEOUT / BODY_TIMEOUT in the environment override them
BODY_TIMEOUT = 30.0
RETRY_AFTER = b"1"  # seconds, at the connection limit
BUSY = b'{"detail":"Service temporarily unavailable, try again later."}'
TRUNCATED = {"detail": "The request body was cut short."}


def _max_request() -> int:
    settings = _load_settings()
    return 2 * max(settings.max_body_bytes, settings.batch_max_bytes) + MAX_HEAD


class HeadersTooLarge(Exception):
    """Raised inside a parser callback: httptools reports it as a parser error (400)."""


async def at_connection_limit(scope: Any, receive: Any, send: Any) -> None:
    """The answer past LIMIT_CONCURRENCY, in place of uvicorn's plain-text 503: the body
    and ``Retry-After`` of the app's back-pressure 503, and the connection closes."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(BUSY)).encode()),
                (b"retry-after", RETRY_AFTER),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BUSY, "more_body": False})


def whole_bodies_only(app: Any) -> Any:
    """The app, with a ``receive`` that refuses a body cut short: uvicorn reports a
    connection lost mid-body (BODY_TIMEOUT, a client that left) as ``http.disconnect``,
    which Falcon takes for the end of the body, so a truncated body could be parsed, and
    even accepted. Here that is a Rejected (400) the app answers to a closed connection."""

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        whole = False

        async def receive_whole() -> Any:
            nonlocal whole
            message = await receive()
            kind = message["type"]
            if kind == "http.request":
                whole = not message.get("more_body", False)
            elif kind == "http.disconnect" and not whole:
                raise Rejected(TRUNCATED)
            return message

        await app(scope, receive_whole, send)

    return guarded


class BoundedHttpTools(HttpToolsProtocol):
    max_request = 0  # set once per worker process (Worker.__init__), as are the timeouts
    head_timeout = HEAD_TIMEOUT
    body_timeout = BODY_TIMEOUT
    _fields = 0
    _head = 0  # bytes of the current request's head so far; -1 once the head is complete
    _bytes = 0  # bytes of the current request so far
    _in_body = False  # between the end of a request's head and the end of its body
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def _arm(self, seconds: float | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None if seconds is None else self.loop.call_later(seconds, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._in_body:
            # The body deadline holds whatever our answer is doing: the response to a request
            # whose body is still arriving is never complete, so re-arming on "response
            # incomplete" kept a 1 byte/s body open for ever. Only when we stopped reading
            # ourselves (a full buffer the app has not taken yet) is the client not to blame.
            if self.flow.read_paused and not self.transport.is_closing():
                self._arm(self.head_timeout)
                return
            self.logger.info("closing a connection that was too slow to send its request body")
            self.transport.close()
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm(self.head_timeout)  # our answer to the previous request is still coming
            return
        self.logger.info("closing a connection that was too slow to send its request")
        self.transport.close()

    def _refuse(self, why: str) -> None:
        self.logger.warning("refused a request: %s", why)
        self._arm(None)
        self.send_400_response(f"Bad request: {why}.")

    def data_received(self, data: bytes) -> None:
        if self._head >= 0:
            if self._head > MAX_HEAD:
                self._refuse("request header fields too large")
                return
            self._head += len(data)
            if self._deadline is None:  # bytes that begin no request (a bare CRLF) count too
                self._arm(self.head_timeout)
        self._bytes += len(data)
        if self.max_request and self._bytes - len(data) > self.max_request:
            self._refuse("request too large")
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._fields = 0
        if self._deadline is None:
            self._arm(self.head_timeout)

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_LINE:
            raise HeadersTooLarge("request line too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_FIELDS or len(name) + len(value) > MAX_LINE:
            raise HeadersTooLarge("header too large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head = -1
        self._in_body = True
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head = 0
        self._bytes = 0
        self._in_body = False
        self._arm(None)
        super().on_message_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # every request, pipelined ones too, starts here with the app uvicorn chose for it;
        # uvicorn's service_unavailable means past limit_concurrency
        super()._start_asgi_task(
            cycle, at_connection_limit if app is service_unavailable else whole_bodies_only(app)
        )


class Worker(UvicornWorker):  # type: ignore[misc]
    """gunicorn ``worker_class``: keep-alive connections, the bounded parser above, no
    lifespan events, no WebSockets, no access log (gunicorn's ``accesslog`` stays the switch).
    """

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": BoundedHttpTools,
        "ws": "none",
        "lifespan": "off",
        "access_log": False,
        "server_header": False,
        # past this many open connections and tasks a worker answers 503 (at_connection_limit);
        # the default stays below the usual 1,024 file descriptors a process may hold.
        # LIMIT_CONCURRENCY overrides it (Worker.__init__).
        "limit_concurrency": 1000,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = _load_settings()
        self.CONFIG_KWARGS = {**Worker.CONFIG_KWARGS, "limit_concurrency": settings.limit_concurrency}
        super().__init__(*args, **kwargs)
        BoundedHttpTools.max_request = _max_request()
        BoundedHttpTools.head_timeout = settings.head_timeout
        BoundedHttpTools.body_timeout = settings.body_timeout

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGQUIT, gunicorn's quick shutdown (its master sends it on SIGINT and SIGQUIT):
        uvicorn_worker only flagged it and served on until the SIGKILL 25 s later. Leave now,
        through gunicorn's worker_exit hook."""
        super().handle_exit(sig, frame)
        sys.exit(0)

    def init_signals(self) -> None:
        super().init_signals()
        # uvicorn catches SIGTERM / SIGINT while it serves, shuts down gracefully and then
        # raises the signal again. With the default action the process would die there and
        # gunicorn's worker_exit hook (which flushes the metrics tally) would never run.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        signal.signal(signal.SIGINT, _exit_cleanly)


def _exit_cleanly(sig: int, frame: FrameType | None) -> None:
    sys.exit(0)
