"""The embedded Redis of ``ingest run``: a port another redis-server holds is refused with a
clear error, never silently used (its data would be someone else's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from ingest.dev import embedded_redis
from tests.conftest import free_port


def test_a_port_another_redis_server_holds_is_refused(tmp_path: Path) -> None:
    port = free_port()
    first = embedded_redis.start(port, tmp_path / "first")
    try:
        with pytest.raises(
            RuntimeError, match=f"port {port} is taken by another redis-server \\(pid {first.pid}\\)"
        ):
            embedded_redis.start(port, tmp_path / "second")
        assert redis.Redis(port=port).info("server")["process_id"] == first.pid  # untouched
    finally:
        first.terminate()
        first.wait(timeout=10)


def test_the_server_it_starts_is_the_one_it_returns(tmp_path: Path) -> None:
    port = free_port()
    proc = embedded_redis.start(port, tmp_path)
    try:
        assert redis.Redis(port=port).info("server")["process_id"] == proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)
