"""``ingest run`` owns its process tree: a stop signal to it alone stops everything, in order,
without losing an accepted report; a child that dies stops the rest and fails the run.

Each test runs ``ingest run`` of this venv as a real subprocess in an empty folder (its
SQLite database and ``var/`` land there) with the embedded Redis on a free port. The tree is
read from /proc before the signal, so a survivor (a gunicorn worker, a Celery pool child,
redis-server) is caught even after it has been re-parented.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ingest import config
from ingest.domain import signing
from tests.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

T = TypeVar("T")
BIN = Path(sys.executable).parent
READY_DEADLINE = 90.0
STOP_DEADLINE = 90.0  # web's grace (35 s) + the workers' batch in hand, on a busy machine
COMMIT_DEADLINE = 60.0
OPERATOR = "operator-token-lifecycle-0123456789"
SET_USAGE = "/api/marketplace-public-api/set_usage/"
CUSTOMER = "7f3e2a10-0000-4000-8000-000000000001"  # ingest/dev/demo/catalog.json
SECRET = "demo-secret-0001"
RESOURCE = "7f3e2a10-0000-4000-8000-0000000000a1"


# -- the process tree, from /proc -----------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, start time, state) of a live process, else None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def tree(root: int) -> dict[int, tuple[int, str]]:
    """Every descendant of ``root``: pid -> (start time, command line)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
                starts[int(entry)] = st[1]
    found: dict[int, tuple[int, str]] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = (starts[pid], _cmdline(pid))
        todo.extend(children.get(pid, []))
    return found


def survivors(procs: dict[int, tuple[int, str]]) -> dict[int, str]:
    alive = {}
    for pid, (start, cmd) in procs.items():
        st = _stat(pid)
        if st is not None and st[1] == start and st[2] != "Z":
            alive[pid] = cmd
    return alive


def kill_tree(procs: dict[int, tuple[int, str]]) -> None:
    for pid in survivors(procs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# -- one ``ingest run`` ---------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    work: Path
    port: int
    redis_port: int
    name: str
    popen: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.work.parent / f"{self.name}.out"

    @property
    def err(self) -> Path:
        return self.work.parent / f"{self.name}.err"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Run:
        ours = {name for name, *_ in config.VARIABLES} | {"PROMETHEUS_MULTIPROC_DIR"}
        env = {k: v for k, v in os.environ.items() if k not in ours}
        env.update(
            PORT=str(self.port),
            WEB_CONCURRENCY="2",
            OPERATOR_TOKEN=OPERATOR,
            CATALOG_REFRESH="0.2",
            FLUSH_INTERVAL="0.05",
            PYTHONUNBUFFERED="1",
        )
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(
                [str(BIN / "ingest"), "run", "--redis-port", str(self.redis_port)],
                cwd=self.work,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a signal for it reaches it alone
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log(self) -> str:
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        err = self.err.read_text(errors="replace") if self.err.exists() else ""
        return f"----- {self.name} stdout (tail) -----\n{text[-6000:]}\n----- stderr -----\n{err}"

    def alive(self) -> None:
        assert self.popen is not None
        code = self.popen.poll()
        assert code is None, f"ingest run exited {code}\n{self.log()}"

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            self.alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}\n{self.log()}")
            time.sleep(0.1)

    def wait_ready(self) -> None:
        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_for("GET /readyz == 200", ready, READY_DEADLINE)
        # every process of the formation is up (the worker and beat too, not only web)
        self.wait_for(
            "web, worker and beat in the tree",
            lambda: all(
                any(k in c for _, c in tree(self.pid).values()) for k in ("gunicorn", " worker ", " beat ")
            ),
            READY_DEADLINE,
        )

    def states(self, ids: list[str]) -> dict[str, str]:
        out = {}
        with httpx.Client(base_url=self.url, timeout=10) as http:
            for i in ids:
                resp = http.get(f"/api/usage-reports/{i}/", headers={"Authorization": f"Token {OPERATOR}"})
                out[i] = (
                    resp.json().get("state", f"HTTP {resp.status_code}") if resp.status_code == 200 else "?"
                )
        return out

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.popen is not None
        self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"ingest run still runs {STOP_DEADLINE:.0f} s after {sig.name}\n{self.log()}"
            ) from None

    def cleanup(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            procs = tree(self.pid)
            self.popen.kill()
            self.popen.wait(timeout=10)
            kill_tree(procs)


def report(amount: int) -> dict[str, Any]:
    claims = {"resource": RESOURCE, "usages": [{"type": "cpu_hours", "amount": str(amount)}]}
    return {"customer": CUSTOMER, "data": signing.sign(claims, SECRET)}


class Sender(threading.Thread):
    """Posts signed reports one after another until the server stops answering; keeps the
    receipts of the 201s."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.receipts: list[dict[str, Any]] = []
        self.other: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            n = 0
            while not self.halt.is_set():
                n += 1
                try:
                    resp = http.post(SET_USAGE, json=report(n))
                except httpx.HTTPError:
                    return  # the web stopped accepting
                if resp.status_code == 201:
                    self.receipts.append(resp.json())
                else:
                    self.other.append(f"{resp.status_code} {resp.text[:200]}")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    work = tmp_path / "empty"
    work.mkdir()
    return work


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_the_whole_tree_in_order_and_loses_nothing(
    folder: Path, sig: signal.Signals
) -> None:
    first = Run(folder, free_port(), free_port(), "first")
    second = Run(folder, first.port, first.redis_port, "second")
    procs: dict[int, tuple[int, str]] = {}
    try:
        first.start().wait_ready()
        sender = Sender(first.url)
        sender.start()
        first.wait_for("20 reports accepted", lambda: len(sender.receipts) >= 20, COMMIT_DEADLINE)
        procs = tree(first.pid)
        assert len(procs) >= 7, procs  # redis, gunicorn + 2 workers, celery + 1 child, beat
        code = first.stop(sig)  # while the sender keeps sending
        sender.halt.set()
        sender.join(timeout=30)
        assert code == 0, f"exit {code} after {sig.name}\n{first.log()}"
        assert not survivors(procs), f"left running after {sig.name}: {survivors(procs)}"
        assert first.err.read_text() == "", first.log()
        out = first.out.read_text()
        # the order: web stopped before the worker and beat were asked, Redis last
        order = [out.index(f"{name} stopped") for name in ("web.1", "worker.1", "beat.1", "redis")]
        assert order[0] < out.index("stopping worker.1") and max(order[1:3]) < out.index("stopping redis")
        assert not sender.other, sender.other[:5]

        ids = [r["id"] for r in sender.receipts]
        second.start().wait_ready()
        final = {"committed", "superseded"}

        def all_final() -> dict[str, str] | None:
            states = second.states(ids)
            return states if set(states.values()) <= final else None

        states = second.wait_for(f"{len(ids)} accepted reports to reach SQL", all_final, COMMIT_DEADLINE)
        last = max(sender.receipts, key=lambda r: r["sequence"])
        assert states[last["id"]] == "committed", states
        procs = tree(second.pid)
        assert second.stop() == 0, second.log()
        assert not survivors(procs), survivors(procs)
    finally:
        first.cleanup()
        second.cleanup()
        kill_tree(procs)


def test_a_child_that_dies_stops_the_rest_and_fails_the_run(folder: Path) -> None:
    run = Run(folder, free_port(), free_port(), "run")
    procs: dict[int, tuple[int, str]] = {}
    try:
        run.start().wait_ready()
        procs = tree(run.pid)
        worker = next(
            pid
            for pid, (_, cmd) in procs.items()
            if " worker " in cmd and _stat(pid) and _stat(pid)[0] == run.pid  # type: ignore[index]
        )
        os.kill(worker, signal.SIGKILL)
        assert run.popen is not None
        try:
            code = run.popen.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ingest run still runs after its worker was killed\n{run.log()}") from None
        assert code != 0, run.log()
        assert not survivors(procs), f"left running: {survivors(procs)}"
        lines = run.err.read_text().strip().splitlines()
        assert len(lines) == 1, run.log()
        assert "worker.1" in lines[0] and "SIGKILL" in lines[0], lines
    finally:
        run.cleanup()
        kill_tree(procs)
