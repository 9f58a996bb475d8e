"""End-to-end fixtures: the real process formation of the Procfile, started with subprocess.

``stack`` runs ``gunicorn`` (2 uvicorn workers), a Celery prefork worker and Celery beat from this
venv against the parametrized database (SQLite file or a fresh PostgreSQL database, migrated)
and the session's private Redis. Each stack gets its own Redis database number (journal *and*
Celery broker) and its own key prefix, so a drain task, a pidbox message or a stale journal of
one test can never reach the processes of another.

Waiting is always polling with a deadline; nothing here asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
from sqlalchemy import Engine, select

from ingest import config
from ingest.adapters.redis.journal import RedisQueue
from ingest.adapters.sql import read_model as queries
from ingest.adapters.sql import tables as t
from ingest.adapters.sql.catalog import SqlCatalog
from ingest.adapters.sql.unit_of_work import make_engine
from ingest.bootstrap import WORKER_QUEUES
from ingest.services import catalog_file
from tests.conftest import free_port
from tests.helpers import Demo, make_demo

WORKER_QUEUE = ",".join(WORKER_QUEUES)  # the Procfile's worker: drains and the reconciler

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STARTUP_DEADLINE = 60.0
COMMIT_DEADLINE = 30.0
STOP_DEADLINE = 30.0
FINAL_STATES = ("committed", "superseded", "quarantined")
SET_USAGE = "/api/marketplace-public-api/set_usage/"
SET_USAGES = "/api/marketplace-public-api/set_usages/"
CHECK_SIGNATURE = "/api/marketplace-public-api/check_signature/"

# Redis databases 1..15 in turn (0 is left to the unit and integration tests).
_redis_databases = itertools.cycle(range(1, 16))


def _redis_database_url(url: str, number: int) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        query = dict(urllib.parse.parse_qsl(parts.query))
        query["db"] = str(number)
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    return urllib.parse.urlunsplit(parts._replace(path=f"/{number}"))


@dataclasses.dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclasses.dataclass
class Stack:
    """A running web + worker + beat formation and handles to look at what it did."""

    url: str
    env: dict[str, str]
    database_url: str
    redis_url: str
    prefix: str
    demo: Demo
    engine: Engine
    redis: redis.Redis
    queue: RedisQueue
    procs: list[Proc]
    http: httpx.Client

    # -- diagnostics -----------------------------------------------------------------------

    def tail(self, lines: int = 40) -> str:
        out = []
        for p in self.procs:
            text = p.log.read_text(errors="replace") if p.log.exists() else ""
            status = "running" if p.popen.poll() is None else f"exited {p.popen.returncode}"
            out.append(f"----- {p.name} ({status}), last {lines} lines of {p.log} -----")
            out.extend(text.splitlines()[-lines:])
        return "\n".join(out)

    def check_alive(self) -> None:
        dead = [p for p in self.procs if p.popen.poll() is not None]
        if dead:
            names = ", ".join(f"{p.name} (exit {p.popen.returncode})" for p in dead)
            raise AssertionError(f"process died: {names}\n{self.tail()}")

    def assert_healthy(self) -> None:
        """Every process still runs and none logged a traceback or an ERROR line."""
        self.check_alive()
        for p in self.procs:
            text = p.log.read_text(errors="replace")
            bad = [
                line
                for line in text.splitlines()
                if "Traceback" in line or '"level":"ERROR"' in line or "ERROR/" in line or "CRITICAL" in line
            ]
            assert not bad, f"{p.name} logged errors: {bad[:5]}\n{self.tail()}"

    def wait_for(
        self,
        what: str,
        probe: Callable[[], T | None],
        timeout: float = COMMIT_DEADLINE,
        interval: float = 0.05,
    ) -> T:
        """Poll ``probe`` until it returns something truthy; fail with the process logs."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"gave up after {timeout:.0f} s waiting for {what} (last: {value!r})\n{self.tail()}"
                )
            time.sleep(interval)

    # -- requests --------------------------------------------------------------------------

    def body(self, claims: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return self.demo.body(claims, **extra)

    def set_usage(
        self, claims: dict[str, Any], client: httpx.Client | None = None, **extra: Any
    ) -> dict[str, Any]:
        """POST one signed report; return the receipt of the 201."""
        resp = (client or self.http).post(SET_USAGE, json=self.body(claims, **extra))
        assert resp.status_code == 201, f"{resp.status_code} {resp.text}\n{self.tail()}"
        return dict(resp.json())

    # -- what reached SQL and Redis ----------------------------------------------------------

    def states(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = list(ids)
        r = t.UsageReport
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                found.update(conn.execute(select(r.id, r.state).where(r.id.in_(chunk))).all())
        return found

    def all_reports(self) -> list[dict[str, Any]]:
        r = t.UsageReport
        with self.engine.connect() as conn:
            ids = [row[0] for row in conn.execute(select(r.id).order_by(r.seq))]
        return [queries.report(self.engine, i) or {} for i in ids]

    def wait_final(self, ids: Iterable[str], timeout: float = COMMIT_DEADLINE) -> dict[str, str]:
        """Wait until every report id has its final state in SQL; return id -> state."""
        wanted = list(ids)

        def probe() -> dict[str, str] | None:
            found = self.states(wanted)
            done = {k: v for k, v in found.items() if v in FINAL_STATES}
            return done if len(done) == len(wanted) else None

        return self.wait_for(f"{len(wanted)} report(s) to reach a final state", probe, timeout)

    def usage(self, resource: str) -> dict[str, dict[str, Any]]:
        """component -> row, for the committed usage of one resource."""
        return {row["component"]: row for row in queries.usage_rows(self.engine, uuid.UUID(resource))}

    def wait_idle(self, timeout: float = COMMIT_DEADLINE) -> None:
        """Wait until the commit group has nothing new and nothing pending."""
        self.wait_for("the journal backlog to drain", lambda: self.queue.backlog() == 0, timeout)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "ingest"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _environment(
    database_url: str, redis_url: str, prefix: str, port: int, archive: Path | None = None
) -> dict[str, str]:
    # nothing of this service's configuration leaks in from the developer's shell
    ours = {name for name, *_ in config.VARIABLES} | {"PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(
        PORT=str(port),
        WEB_CONCURRENCY="2",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        REDIS_PREFIX=prefix,
        CATALOG_REFRESH="0.2",
        FLUSH_INTERVAL="0.05",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        # the journal archive of this stack only (the default, var/archive, is the checkout's)
        JOURNAL_ARCHIVE_DIR=str(archive or tempfile.mkdtemp(prefix="ingest-archive-")),
    )
    return env


def web_argv() -> list[str]:
    """The Procfile's ``web`` (gunicorn with our config), without a control socket."""
    return [str(BIN / "gunicorn"), "-c", "python:api.gunicorn_conf", "--no-control-socket", "api.asgi:app"]


def worker_argv(queue: str, name: str, concurrency: int = 1) -> list[str]:
    """A Celery prefork worker on ``queue`` (the Procfile's ``worker``: maintenance,celery;
    ``forwarder``: waldur), with a node name of its own."""
    return [
        str(BIN / "celery"), "-A", "workers.app", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--pool", "prefork", "-Q", queue,
        "-n", f"{name}-{uuid.uuid4().hex[:8]}@%h",
    ]  # fmt: skip


def beat_argv(schedule: Path) -> list[str]:
    return [
        str(BIN / "celery"),
        "-A",
        "workers.app",
        "beat",
        "--loglevel",
        "INFO",
        "--schedule",
        str(schedule),
    ]


def _start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Proc:
    log = logs / f"{name}.log"
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def _stop(procs: list[Proc]) -> None:
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_DEADLINE
    for p in procs:
        try:
            p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # the group of a process this fixture started (its prefork / gunicorn children)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.popen.pid, signal.SIGKILL)
            p.popen.wait(timeout=10)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"e2e_{report.when}", report)


@pytest.fixture
def stack(
    database_url: str, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    demo = make_demo()
    engine = make_engine(database_url)
    SqlCatalog(engine).load(catalog_file.parse(demo.doc()))

    db_url = _redis_database_url(redis_url, next(_redis_databases))
    client = redis.Redis.from_url(db_url)
    if not os.environ.get("TEST_REDIS_URL"):
        client.flushdb()  # our private server: leftovers of an earlier stack go
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = _environment(database_url, db_url, prefix, port, tmp_path / "archive")
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [
        _start("web", web_argv(), env, logs),
        _start("worker", worker_argv(WORKER_QUEUE, "e2e"), env, logs),
        _start("beat", beat_argv(tmp_path / "celerybeat-schedule"), env, logs),
    ]
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, timeout=30)
    s = Stack(
        base, env, database_url, db_url, prefix, demo, engine, client, RedisQueue(client, prefix), procs, http
    )
    try:

        def ready() -> bool:
            try:
                return http.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        s.wait_for("GET /readyz == 200", ready, STARTUP_DEADLINE)
        yield s
    finally:
        http.close()
        _stop(procs)
        call = getattr(request.node, "e2e_call", None)
        if call is not None and call.failed:
            print(f"\n===== e2e process logs of {request.node.nodeid} =====\n{s.tail(80)}")
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        engine.dispose()


def receipt_of(content: bytes) -> dict[str, Any]:
    return dict(json.loads(content))
