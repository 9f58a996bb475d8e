"""Connecting to a PostgreSQL server that does not answer fails in seconds, as a transient
error, instead of hanging the process (libpq waits for ever by default)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from ingest.adapters.sql.unit_of_work import PG_CONNECT_DEFAULTS, is_transient, make_engine, pg_connect_args


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.timeout(60)  # without a connect timeout libpq waits for ever: this test would hang
def test_a_server_that_never_answers_is_a_transient_error(silent_server: int) -> None:
    engine = make_engine(f"postgresql+psycopg://u@127.0.0.1:{silent_server}/db")  # the defaults
    with pytest.raises(OperationalError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert is_transient(caught.value)
    engine.dispose()


def test_the_defaults_apply_unless_the_url_sets_them() -> None:
    assert pg_connect_args("postgresql+psycopg://u@h/db") == PG_CONNECT_DEFAULTS
    assert PG_CONNECT_DEFAULTS["connect_timeout"] > 0 and PG_CONNECT_DEFAULTS["keepalives"] == 1
    given = pg_connect_args("postgresql+psycopg://u@h/db?connect_timeout=10&keepalives_idle=60")
    assert "connect_timeout" not in given and "keepalives_idle" not in given
    assert given["keepalives_count"] == PG_CONNECT_DEFAULTS["keepalives_count"]
