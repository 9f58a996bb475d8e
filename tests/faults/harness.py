"""Real processes for fault injection: a private Redis with AOF, gunicorn, Celery worker and
beat, a load client that records every 201, and the checks that count from the client's
records and the database (never from the service's own counters)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from ingest.adapters.sql.catalog import SqlCatalog
from ingest.adapters.sql.unit_of_work import make_engine
from ingest.dev import embedded_redis
from ingest.services import catalog_file
from tests.helpers import Demo

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
FINAL = ("committed", "superseded", "quarantined")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """gunicorn + celery worker + beat + a private Redis (AOF, fsync always) on free ports."""

    def __init__(self, tmp: Path, database_url: str, demo: Demo, **env: str) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.demo = demo
        self.redis_port = free_port()
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "FLUSH_INTERVAL": "0.05",
            "CATALOG_REFRESH": "0.5",
            "RECONCILE_INTERVAL": "1",
            "RECONCILE_AFTER": "3",
            "DRAIN_BUDGET": "5",
            "BATCH_SIZE": "200",
            "LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
            "JOURNAL_ARCHIVE_DIR": str(tmp / "archive"),
            **env,
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        engine = make_engine(database_url)
        SqlCatalog(engine).load(catalog_file.parse(demo.doc()))
        engine.dispose()

    # -- processes --------------------------------------------------------------------------
    def start_redis(self) -> None:
        self.procs["redis"] = embedded_redis.start(self.redis_port, self.tmp / "redis", "always")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        self.procs[name] = subprocess.Popen(
            argv,
            env=self.env,
            cwd=ROOT,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_web(self) -> None:
        self._spawn("web", [str(BIN / "gunicorn"), "-c", "python:api.gunicorn_conf", "api.asgi:app"])

    def start_worker(self, name: str = "worker") -> None:
        self._spawn(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "workers.app",
                "worker",
                "--concurrency",
                "1",
                "--pool",
                "prefork",
                "-n",
                f"{name}-{uuid.uuid4().hex[:6]}@%h",
                "--loglevel",
                "INFO",
            ],
        )

    def start_beat(self) -> None:
        self._spawn(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "workers.app",
                "beat",
                "--schedule",
                str(self.tmp / "beat-schedule"),
                "--loglevel",
                "INFO",
            ],
        )

    def start(self) -> None:
        self.start_redis()
        self.start_web()
        self.start_worker()
        self.start_beat()
        self.wait_ready()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            proc.send_signal(sig)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "redis"]:
            try:
                self.kill(name, signal.SIGTERM)
            except subprocess.TimeoutExpired:
                self.kill(name, signal.SIGKILL)
        if "redis" in self.procs:
            self.kill("redis", signal.SIGTERM)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("stack not ready:\n" + self.tail())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 30) -> str:
        out = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            out.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(out)


@dataclasses.dataclass(frozen=True)
class Sent:
    id: str
    seq: int
    key: tuple[str, str]  # (resource, component)
    amount: Decimal


class Load:
    """Bounded load from threads with keep-alive clients; keeps every 201 it received."""

    def __init__(self, stack: Stack, resources: list[str], threads: int = 4, limit: int = 3000) -> None:
        self.stack = stack
        self.resources = resources
        self.threads = threads
        self.limit = limit
        self.accepted: list[Sent] = []
        self.refused: dict[int | str, int] = {}
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _run(self, n: int) -> None:
        demo = self.stack.demo
        url = f"{self.stack.url}/api/marketplace-public-api/set_usage/"
        with httpx.Client(timeout=5) as client:
            i = 0
            while not self._stop.is_set():
                with self._lock:
                    if self.sent >= self.limit:
                        return
                    self.sent += 1
                    number = self.sent
                resource = self.resources[(n + i) % len(self.resources)]
                component = ("cpu_hours", "ram_gb")[i % 2]
                amount = Decimal(number) / 100
                i += 1
                body = demo.body(
                    {"resource": resource, "usages": [{"type": component, "amount": str(amount)}]}
                )
                try:
                    resp = client.post(url, json=body)
                except httpx.HTTPError as exc:
                    self._count(type(exc).__name__)
                    time.sleep(0.05)
                    continue
                if resp.status_code == 201:
                    receipt = resp.json()
                    with self._lock:
                        self.accepted.append(
                            Sent(receipt["id"], receipt["sequence"], (resource, component), amount)
                        )
                else:
                    self._count(resp.status_code)
                    if resp.status_code >= 500 and resp.status_code != 503:
                        raise AssertionError(f"{resp.status_code}: {resp.text}")
                    time.sleep(0.05)

    def _count(self, what: int | str) -> None:
        with self._lock:
            self.refused[what] = self.refused.get(what, 0) + 1

    def start(self) -> Load:
        self._workers = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.threads)
        ]
        for t in self._workers:
            t.start()
        return self

    def wait_for(self, accepted: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < accepted and time.monotonic() < deadline:
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> None:
        for t in self._workers:
            t.join(timeout)
        self._stop.set()


@dataclasses.dataclass
class Verdict:
    sent: int
    accepted: int
    committed: int
    superseded: int
    quarantined: int
    lost: int
    applied_twice: int
    stale_rows: int  # a row holding an older report than the newest answered 201: rolled back
    # a row holding a newer report than any answered 201: one answered 503 (its write was not
    # acknowledged by the replicas in time) that Redis kept and a worker committed, as the
    # README's "What a 201 guarantees" allows
    newer_than_any_201: int = 0

    def line(self, scenario: str) -> str:
        return (
            f"{scenario}: sent {self.sent}, accepted {self.accepted}, committed "
            f"{self.committed}, superseded {self.superseded}, quarantined "
            f"{self.quarantined}, lost {self.lost}, applied twice {self.applied_twice}, "
            f"stale rows {self.stale_rows}, rows newer than any 201 {self.newer_than_any_201}"
        )


def settle(database_url: str, load: Load, timeout: float = 120) -> Verdict:
    """Wait until every 201 has a final state, then check the usage table against the
    client's own record of what it sent."""
    engine = make_engine(database_url)
    ids = {s.id for s in load.accepted}
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                states = dict(conn.execute(sa.text("SELECT id, state FROM usage_reports")).all())
            if all(states.get(i) in FINAL for i in ids):
                break
            time.sleep(0.5)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT resource_uuid, component_type, amount, report_seq, report_id "
                    "FROM component_usages"
                )
            ).all()
            counts = conn.execute(
                # a quarantined record may share its sequence (a reused one): only live reports count
                sa.text(
                    "SELECT count(*) FILTER (WHERE state <> 'quarantined'), "
                    "count(DISTINCT id) FILTER (WHERE state <> 'quarantined'), "
                    "count(DISTINCT seq) FILTER (WHERE state <> 'quarantined') FROM usage_reports"
                )
            ).one()
    finally:
        engine.dispose()
    newest: dict[tuple[str, str], Sent] = {}
    for sent in load.accepted:
        if sent.key not in newest or newest[sent.key].seq < sent.seq:
            newest[sent.key] = sent
    stale = newer = 0
    for resource, component, amount, seq, report_id in rows:
        want = newest.get((str(resource), component))
        if want is None:
            continue
        if int(seq) > want.seq:
            newer += 1
        elif int(seq) < want.seq or Decimal(amount) != want.amount or report_id != want.id:
            stale += 1
    by_state = [states.get(i) for i in ids]
    return Verdict(
        sent=load.sent,
        accepted=len(ids),
        committed=by_state.count("committed"),
        superseded=by_state.count("superseded"),
        quarantined=by_state.count("quarantined"),
        lost=sum(1 for s in by_state if s not in FINAL),
        applied_twice=(counts[0] - counts[1]) + (counts[0] - counts[2]),
        stale_rows=stale,
        newer_than_any_201=newer,
    )


def during(load: Load, after_accepted: int, action: Callable[[], Any]) -> None:
    load.wait_for(after_accepted)
    action()
