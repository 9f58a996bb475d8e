"""Shared fixtures: a real Redis, real databases (SQLite always, PostgreSQL when
TEST_DATABASE_URL names a server), a migrated schema with a demo catalog, the Falcon app."""

from __future__ import annotations

import itertools
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import hypothesis
import pytest
import redis
import sqlalchemy as sa

from api.app import create_app
from ingest import bootstrap
from ingest.adapters.sql import migrate as db
from ingest.config import Settings
from ingest.dev import embedded_redis
from ingest.services import catalog_file
from tests.helpers import Demo, make_demo

# Property tests share the cores with the servers other tests start side by side: a stall is
# not a failure (Hypothesis's default deadline is 200 ms an example).
hypothesis.settings.register_profile("shared-machine", deadline=None)
hypothesis.settings.load_profile("shared-machine")

# Ports for the servers tests start: each pytest-xdist worker (gw0, gw1, ...) takes them from
# its own range below the kernel's ephemeral ports (32768+), one after another, skipping any in
# use. A port from bind(0) stays free only until the server binds it, so two workers starting
# servers side by side could be handed the same one.
_worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), _worker + 1)
PORTS_PER_WORKER = 12000 // _workers  # 20000-31999 shared out
_first_port = 20000 + PORTS_PER_WORKER * _worker
_next_port = itertools.cycle(range(_first_port, _first_port + PORTS_PER_WORKER))


def free_port() -> int:
    for _ in range(PORTS_PER_WORKER):
        port = next(_next_port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use (or another service's): the next one
                continue
            return port
    raise RuntimeError(f"no free port in {_first_port}-{_first_port + PORTS_PER_WORKER - 1}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_REDIS_URL if given, else a private redis-server with AOF on a free port."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        yield given
        return
    port = free_port()
    proc = embedded_redis.start(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def _postgres_database(admin_url: str) -> Iterator[str]:
    name = f"ingest_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def migrated_database(kind: str, directory: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file in ``directory``, or a new PostgreSQL
    database on the TEST_DATABASE_URL server (skipped when there is none)."""
    if kind == "sqlite":
        url = f"sqlite:///{directory / 'ingest.db'}"
        db.upgrade(url)
        yield url
        return
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        pytest.skip("TEST_DATABASE_URL is not set (no PostgreSQL server)")
    for url in _postgres_database(admin_url):
        db.upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database per test."""
    yield from migrated_database(request.param, tmp_path)


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        # where a command run with cwd=tmp_path finds it by default (var/archive)
        journal_archive_dir=str(tmp_path / "var" / "archive"),
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=f"test-{uuid.uuid4().hex[:10]}",
        catalog_refresh=0.01,
        flush_interval=0.05,
        drain_budget=2.0,
    )


@pytest.fixture
def demo() -> Demo:
    return make_demo()


@pytest.fixture
def runtime(settings: Settings, demo: Demo) -> Iterator[bootstrap.Runtime]:
    rt = bootstrap.Runtime(settings)
    rt.catalog_source.load(catalog_file.parse(demo.doc()))
    rt.kick = lambda: None  # type: ignore[method-assign]  # no worker here: tests drain directly
    yield rt
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(f"{settings.redis_prefix}:*"))
    if keys:
        client.delete(*keys)
    rt.engine.dispose()


@pytest.fixture
def client(runtime: bootstrap.Runtime) -> falcon.testing.TestClient:
    app = create_app(lambda: runtime.intake, {"redis": runtime.queue.ping}, runtime.settings.max_body_bytes)
    return falcon.testing.TestClient(app)
