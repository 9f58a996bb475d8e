"""The process tree of ``ingest run``: start every process of the formation in its own
process group, relay its output with a name prefix, and stop the tree in order.

Stop order (on SIGTERM, SIGINT or SIGHUP to ``ingest run``, or when a child dies): every
``web`` first (gunicorn stops accepting and finishes the requests in flight), then the other
process types (Celery's warm shutdown: the batch in hand is committed), then the embedded
Redis (SIGTERM: it flushes its append-only file). Each process gets SIGTERM alone (its own
children are its business); once it has exited, or after its grace period, whatever is left
of its process group (gunicorn workers, Celery pool children) gets SIGKILL. A second stop
signal kills what is left at once.
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
from collections.abc import Mapping
from datetime import datetime
from typing import IO, Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# seconds a process type gets to stop after SIGTERM before its group is killed
GRACE = {"web": 35.0, "redis": 15.0}  # gunicorn's graceful_timeout is 25 s
DEFAULT_GRACE = 60.0  # a Celery worker finishes its batch (DRAIN_BUDGET) first
POLL = 0.1


def stop_rank(kind: str) -> int:
    """Waves of the orderly stop: web, then the other process types, then Redis."""
    return {"web": 0, "redis": 2}.get(kind, 1)


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@dataclasses.dataclass
class Child:
    name: str
    kind: str
    popen: subprocess.Popen[bytes]
    relay: threading.Thread | None = None
    signalled: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid


class Supervisor:
    def __init__(self, out: IO[str] | None = None) -> None:
        self.children: list[Child] = []
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self.width = 6
        self.stop_signal: str | None = None  # the stop signal received first
        self._force = False
        self._stopping = False

    # -- signals ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    @staticmethod
    def restore_signal_handlers(previous: Mapping[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is None:
            self.stop_signal = name
        elif self._stopping:
            self._force = True

    @property
    def stop_requested(self) -> bool:
        return self.stop_signal is not None

    # -- starting --------------------------------------------------------------------------

    def adopt(self, name: str, kind: str, popen: subprocess.Popen[bytes]) -> Child:
        """Supervise a process started elsewhere (its own process group, output handled)."""
        child = Child(name, kind, popen)
        self.children.append(child)
        return child

    def start(self, name: str, kind: str, command: str, env: Mapping[str, str]) -> Child:
        """Start ``command`` (Procfile syntax: a shell line) in a new session; the shell
        execs the command, so the pid we signal is the program's."""
        popen = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child = self.adopt(name, kind, popen)
        self.width = max(self.width, len(name))
        child.relay = threading.Thread(target=self._relay, args=(child,), name=f"relay-{name}", daemon=True)
        child.relay.start()
        self.say(f"{name} started (pid {popen.pid}): {command}")
        return child

    def _relay(self, child: Child) -> None:
        assert child.popen.stdout is not None
        for raw in iter(child.popen.stdout.readline, b""):
            self._write(child.name, raw.decode(errors="replace").rstrip("\n"))
        child.popen.stdout.close()

    def _write(self, name: str, line: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        with self._lock:
            self.out.write(f"{stamp} {name:<{self.width}} | {line}\n")
            self.out.flush()

    def say(self, line: str) -> None:
        self._write("ingest", line)

    # -- running and stopping --------------------------------------------------------------

    def wait(self) -> str | None:
        """Block until a stop signal arrives (None) or a child exits (the reason, one line)."""
        while not self.stop_requested:
            for child in self.children:
                code = child.popen.poll()
                if code is not None:
                    return f"{child.name} (pid {child.pid}) exited unexpectedly ({describe(code)})"
            time.sleep(POLL)
        return None

    def order(self) -> str:
        """The stop order, for a log line: ``web.1, then worker.1 + beat.1, then redis``."""
        ranks = sorted({stop_rank(c.kind) for c in self.children})
        waves = [" + ".join(c.name for c in self.children if stop_rank(c.kind) == r) for r in ranks]
        return ", then ".join(waves)

    def stop(self) -> list[str]:
        """Stop every child, wave by wave; return what did not stop cleanly (one line each)."""
        self._stopping = True
        problems: list[str] = []
        for rank in sorted({stop_rank(c.kind) for c in self.children}):
            wave = [c for c in self.children if stop_rank(c.kind) == rank]
            for child in wave:
                if child.popen.poll() is None:
                    self.say(f"stopping {child.name} (SIGTERM to pid {child.pid})")
                    child.signalled = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGTERM)
            started = time.monotonic()
            while any(c.popen.poll() is None for c in wave) and not self._force:
                if all(time.monotonic() - started > GRACE.get(c.kind, DEFAULT_GRACE) for c in wave):
                    break
                time.sleep(POLL)
            for child in wave:
                killed = child.popen.poll() is None
                if killed:
                    grace = GRACE.get(child.kind, DEFAULT_GRACE)
                    why = "a second stop signal" if self._force else f"{grace:.0f} s"
                    problems.append(f"{child.name} (pid {child.pid}) did not stop after {why}: killed")
                self._kill_group(child)
                code = child.popen.wait()
                if child.relay is not None:
                    child.relay.join(timeout=5)
                if killed or not child.signalled:
                    continue
                if code == 0:
                    self.say(f"{child.name} stopped")
                else:
                    problems.append(f"{child.name} (pid {child.pid}) stopped with {describe(code)}")
        self.children = []
        return problems

    @staticmethod
    def _kill_group(child: Child) -> None:
        """SIGKILL what is left of the child's process group (it leads one: new session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
