"""The web server's deadlines and connection limit, against real gunicorn over raw sockets:
a body sent too slowly is cut at BODY_TIMEOUT (with a length or chunked) and never reaches
the app as if it were whole; past LIMIT_CONCURRENCY a request gets our JSON 503 with
``Retry-After``. Only the web process runs here, with short settings."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from ingest.adapters.redis.journal import RedisQueue
from ingest.adapters.sql.catalog import SqlCatalog
from ingest.adapters.sql.unit_of_work import make_engine
from ingest.services import catalog_file
from tests.conftest import free_port, migrated_database
from tests.e2e.conftest import BIN, SET_USAGE, _environment, _redis_database_url, _start, _stop
from tests.helpers import Demo, make_demo

# timed to the second: alone, after the parallel part (make test)
pytestmark = [pytest.mark.e2e, pytest.mark.serial]

BODY_TIMEOUT = 2.0
LIMIT = 3


class Web:
    def __init__(self, port: int, demo: Demo, queue: RedisQueue, log: Path) -> None:
        self.port = port
        self.demo = demo
        self.queue = queue
        self.log = log

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def report(self, amount: str = "1") -> bytes:
        claims = {"resource": self.demo.resource, "usages": [{"type": "cpu_hours", "amount": amount}]}
        return json.dumps(self.demo.body(claims)).encode()


@pytest.fixture
def web(redis_url: str, tmp_path: Path) -> Iterator[Web]:
    """gunicorn alone (one worker) over a SQLite catalog and the session's Redis."""
    demo = make_demo()
    for database_url in migrated_database("sqlite", tmp_path):
        engine = make_engine(database_url)
        SqlCatalog(engine).load(catalog_file.parse(demo.doc()))
        engine.dispose()
        db_url = _redis_database_url(redis_url, 14)
        client = redis.Redis.from_url(db_url)
        prefix = f"e2e-limits-{uuid.uuid4().hex[:10]}"
        port = free_port()
        env = _environment(database_url, db_url, prefix, port)
        env.update(WEB_CONCURRENCY="1", BODY_TIMEOUT=str(BODY_TIMEOUT), LIMIT_CONCURRENCY=str(LIMIT))
        logs = tmp_path / "logs"
        logs.mkdir()
        argv = [
            str(BIN / "gunicorn"),
            "-c",
            "python:api.gunicorn_conf",
            "--no-control-socket",
            "api.asgi:app",
        ]
        procs = [_start("web", argv, env, logs)]
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        break
                assert procs[0].popen.poll() is None, (logs / "web.log").read_text()
                assert time.monotonic() < deadline, (logs / "web.log").read_text()
                time.sleep(0.1)
            yield Web(port, demo, RedisQueue(client, prefix), logs / "web.log")
        finally:
            _stop(procs)
            keys = list(client.scan_iter(f"{prefix}:*"))
            if keys:
                client.delete(*keys)
            client.close()


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes) -> float | None:
    """Send ``trickle`` a byte every 0.25 s; return when the server closed, or None."""
    started = time.monotonic()
    sock.settimeout(0.25)
    sent = 0
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        try:
            sock.sendall(trickle[sent % len(trickle) : sent % len(trickle) + 1])
            sent += 1
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    return None


def _head(length: int | None) -> bytes:
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return f"POST {SET_USAGE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n".encode()


def test_a_body_with_a_length_sent_at_a_trickle_is_cut_at_the_body_timeout(web: Web) -> None:
    body = web.report()
    with web.connect() as sock:
        sock.sendall(_head(len(body) + 1000))
        took = _closed_within(sock, BODY_TIMEOUT + 8, b" " * 10)  # HEAD_TIMEOUT is 10 s
    assert took is not None and took < BODY_TIMEOUT + 3, took
    assert web.queue.journal_length() == 0


def test_a_chunked_body_sent_at_a_trickle_is_cut_at_the_body_timeout(web: Web) -> None:
    with web.connect() as sock:
        sock.sendall(_head(None) + b"400\r\n")  # a 1 KiB chunk, sent a byte at a time
        took = _closed_within(sock, BODY_TIMEOUT + 8, b" " * 10)
    assert took is not None and took < BODY_TIMEOUT + 3, took


def test_a_body_cut_short_is_never_taken_for_a_whole_one(web: Web) -> None:
    """A chunked body that begins with a complete report and never ends: when the deadline
    cuts it, the app must not parse what had arrived (Falcon reads a disconnect as the end
    of the body)."""
    body = web.report()
    with web.connect() as sock:
        sock.sendall(_head(None) + b"%x\r\n%s\r\n" % (len(body), body) + b"400\r\n")
        took = _closed_within(sock, BODY_TIMEOUT + 8, b" ")
    assert took is not None
    time.sleep(0.5)
    assert web.queue.journal_length() == 0
    # and a whole report on a fresh connection is accepted
    resp = httpx.post(
        f"http://127.0.0.1:{web.port}{SET_USAGE}", content=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 201, resp.text
    assert web.queue.journal_length() == 1
    assert "Traceback" not in web.log.read_text()


def test_past_the_connection_limit_a_request_gets_our_json_503_with_retry_after(web: Web) -> None:
    idle = [web.connect() for _ in range(LIMIT)]
    try:
        time.sleep(0.3)  # the worker has accepted them all
        with web.connect() as sock:
            sock.sendall(_head(len(web.report())) + web.report())
            sock.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
            while len(rest) < int(headers["content-length"]):
                rest += sock.recv(65536)
        assert int(lines[0].split()[1]) == 503, data
        assert json.loads(rest) == {"detail": "Service temporarily unavailable, try again later."}
        assert headers["content-type"] == "application/json"
        assert int(headers["retry-after"]) >= 1
        assert headers["connection"] == "close"
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    assert web.queue.journal_length() == 0
    resp = httpx.post(
        f"http://127.0.0.1:{web.port}{SET_USAGE}",
        content=web.report(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 201, resp.text
