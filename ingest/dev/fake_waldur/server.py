"""A threaded stdlib WSGI server for the fake: one thread per connection, quiet logs, and a
way for the app to reset a connection (an injected fault) instead of answering."""

from __future__ import annotations

import contextlib
import io
import socket
import socketserver
import struct
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

RESET_KEY = "fake_waldur.reset"


class _Handler(ServerHandler):
    def finish_response(self) -> None:
        if getattr(self, "environ", {}).get(RESET_KEY):
            handler = self.request_handler  # type: ignore[attr-defined]
            connection: socket.socket = handler.connection
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.rfile.close()  # the socket closes for real only when its files are closed
            handler.wfile.close()
            connection.close()  # linger 0: the peer sees a reset, not an answer
            self.result = None
            return
        super().finish_response()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()


class _RequestHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive connection ends after this

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, delayed ACKs cost 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:  # wsgiref's, with our ServerHandler, keeping connections alive
        self.close_connection = True
        self._one()
        while not self.close_connection:
            self._one()

    def _one(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except OSError:
            self.close_connection = True
            return
        if not self.raw_requestline or len(self.raw_requestline) > 65536:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        environ = self.get_environ()
        try:  # read the whole body first, so an unread one cannot poison the next request
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        environ["wsgi.input"] = io.BytesIO(self.rfile.read(length) if length > 0 else b"")
        handler = _Handler(
            environ["wsgi.input"],
            self.wfile,  # type: ignore[arg-type]
            self.get_stderr(),
            environ,
            multithread=True,
        )
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.http_version = "1.1"
        try:
            handler.run(self.server.get_app())  # type: ignore[attr-defined]
        except OSError:
            self.close_connection = True
            return
        if environ.get(RESET_KEY):
            self.close_connection = True


class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is not our problem


def _no_type_on_empty(app: Any) -> Any:
    """Waldur's empty answers (201 of set_usage) carry no Content-Type; Falcon adds one."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            names = {k.lower(): v for k, v in headers}
            if names.get("content-length") == "0" and environ.get("REQUEST_METHOD") != "HEAD":
                headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


def make_server(host: str, port: int, app: Any) -> Server:
    server = Server((host, port), _RequestHandler)
    server.set_app(_no_type_on_empty(app))
    return server
