"""The web server itself (gunicorn + uvicorn workers, ingest/web_server.py), over raw sockets:
keep-alive, chunked bodies, and the limits on request heads that the app never sees."""

from __future__ import annotations

import contextlib
import json
import socket
from urllib.parse import urlsplit

import pytest

from api.server import HEAD_TIMEOUT, MAX_FIELDS, MAX_LINE
from tests.e2e.conftest import SET_USAGE, Stack

pytestmark = pytest.mark.e2e


def _connect(stack: Stack) -> socket.socket:
    where = urlsplit(stack.url)
    sock = socket.create_connection((where.hostname, where.port), timeout=10)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body (all our answers have one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return status, headers, rest[:length]


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _report(stack: Stack, amount: str) -> bytes:
    demo = stack.demo
    return json.dumps(
        stack.body({"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": amount}]})
    ).encode()


def test_one_connection_carries_many_reports(stack: Stack) -> None:
    with _connect(stack) as sock:
        ids = []
        for amount in ("1", "2", "3"):
            sock.sendall(_post(SET_USAGE, _report(stack, amount)))
            status, headers, body = _read_response(sock)
            assert status == 201, body
            assert headers.get("connection", "keep-alive").lower() != "close"
            ids.append(json.loads(body)["id"])
    assert set(stack.wait_final(ids).values()) <= {"committed", "superseded"}
    assert stack.usage(stack.demo.resource)["cpu_hours"]["amount"] == "3.00"


def test_a_chunked_body_is_read_whole(stack: Stack) -> None:
    body = _report(stack, "7.5")
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:50], body[50:]))
    request = (
        (
            f"POST {SET_USAGE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + chunks
        + b"0\r\n\r\n"
    )
    with _connect(stack) as sock:
        sock.sendall(request)
        status, _, answer = _read_response(sock)
    assert status == 201, answer
    receipt = json.loads(answer)
    assert stack.wait_final([receipt["id"]]) == {receipt["id"]: "committed"}


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(f"X-Big: {'a' * (MAX_LINE + 1)}\r\n", id="one-header-over-the-line-limit"),
        pytest.param("".join(f"X-F{i}: v\r\n" for i in range(MAX_FIELDS + 1)), id="too-many-fields"),
        pytest.param(
            "".join(f"X-F{i}: {'b' * 8000}\r\n" for i in range(99)) + "X-L: " + "c" * 500_000 + "\r\n",
            id="a-head-of-1.3-MB",
        ),
    ],
)
def test_an_oversized_head_gets_400_and_the_server_goes_on(stack: Stack, head: str) -> None:
    with _connect(stack) as sock:
        # the server may answer and close while we are still sending
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(
                f"POST {SET_USAGE} HTTP/1.1\r\nHost: x\r\n{head}".encode() + b"Content-Length: 2\r\n\r\n{}"
            )
        status, _, body = _read_response(sock)
        assert status == 400, body
        assert _closed(sock)
    before = stack.queue.journal_length()
    receipt = stack.set_usage(
        {"resource": stack.demo.resource, "usages": [{"type": "ram_gb", "amount": "2"}]}
    )
    assert stack.queue.journal_length() >= before + 1 and receipt["status"] == "queued"
    stack.assert_healthy()


def test_a_long_request_line_gets_400(stack: Stack) -> None:
    with _connect(stack) as sock:
        sock.sendall(f"GET /{'a' * (MAX_LINE + 10)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, _ = _read_response(sock)
    assert status == 400


def test_an_announced_huge_body_gets_413_and_the_connection_closes(stack: Stack) -> None:
    with _connect(stack) as sock:
        sock.sendall(
            f"POST {SET_USAGE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10**9}\r\n\r\n".encode()
            + b"{" * 1000
        )
        status, headers, body = _read_response(sock)
        assert (status, json.loads(body)) == (413, {"detail": "Request body is too large."})
        assert headers.get("connection", "").lower() == "close"
        assert _closed(sock)
    assert stack.queue.journal_length() == 0


def test_a_websocket_upgrade_is_not_served_and_breaks_nothing(stack: Stack) -> None:
    with _connect(stack) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, body = _read_response(sock)
    assert status == 200 and json.loads(body) == {"status": "ok"}  # plain HTTP, no upgrade
    stack.assert_healthy()


def test_a_client_that_never_finishes_its_head_is_cut_off(stack: Stack) -> None:
    with _connect(stack) as silent, _connect(stack) as half:
        half.sendall(f"POST {SET_USAGE} HTTP/1.1\r\nHost: x\r\n".encode())
        silent.settimeout(HEAD_TIMEOUT + 10)
        half.settimeout(HEAD_TIMEOUT + 10)
        assert _closed(silent) and _closed(half)


def test_trailers_count_towards_the_request_limit(stack: Stack) -> None:
    body = _report(stack, "1")
    start = (
        f"POST {SET_USAGE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n%s\r\n0\r\nX-Trailer: " % (len(body), body)
    with _connect(stack) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(start + chunk)
            for _ in range(40):  # 40 MB of one trailer, past any request limit
                sock.sendall(b"t" * 1_000_000)
        status, _, _ = _read_response(sock)
        assert status == 400
        assert _closed(sock)
    stack.assert_healthy()


def test_bytes_that_begin_no_request_do_not_hold_a_connection_open(stack: Stack) -> None:
    with _connect(stack) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock)[0] == 200
        sock.sendall(b"\r\n")  # the parser skips it: no request begins, no timer of uvicorn's
        sock.settimeout(HEAD_TIMEOUT + 10)
        assert _closed(sock)
