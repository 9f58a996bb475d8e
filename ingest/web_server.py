"""The web process's server: gunicorn supervising uvicorn workers (uvloop + httptools).

uvicorn's httptools parser takes request lines and headers of any size (a 20 MB header was
read into memory); gunicorn's sync worker stopped at 8,190 bytes a line and 100 header
fields. ``BoundedHttpTools`` keeps those limits: past them the request gets uvicorn's plain
400 and the connection is closed, before the app sees it. httptools gathers a header's value
before it calls back, so the bytes of a request's head are also counted as they arrive.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

MAX_LINE = 8190  # request line, and each header line (gunicorn's limit_request_line)
MAX_FIELDS = 100  # header fields (gunicorn's limit_request_fields)
MAX_HEAD = MAX_LINE * (MAX_FIELDS + 1)  # bytes before the end of the headers


class HeadersTooLarge(Exception):
    """Raised inside a parser callback: httptools reports it as a parser error (400)."""


class BoundedHttpTools(HttpToolsProtocol):
    _fields = 0
    _head = 0  # bytes received since the last request's headers ended; -1 while in a body

    def data_received(self, data: bytes) -> None:
        if self._head >= 0:
            if self._head > MAX_HEAD:
                self.logger.warning("request head over %d bytes", MAX_HEAD)
                self.send_400_response("Request header fields too large.")
                return
            self._head += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._fields = 0

    def on_headers_complete(self) -> None:
        self._head = -1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head = 0
        super().on_message_complete()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_LINE:
            raise HeadersTooLarge("request line too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_FIELDS or len(name) + len(value) > MAX_LINE:
            raise HeadersTooLarge("header too large")
        super().on_header(name, value)


class Worker(UvicornWorker):  # type: ignore[misc]
    """gunicorn ``worker_class``: keep-alive connections, no lifespan events, no access log
    (gunicorn's ``accesslog`` stays the switch), and the bounded parser above."""

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop", "http": BoundedHttpTools, "lifespan": "off", "access_log": False,
        "limit_concurrency": 2000,  # past this many open connections and tasks: 503
    }
