"""Start the fake Waldur as a real process and steer it: what tests, the e2e suite, the demo
and the benchmark use.

    with process.start(seed=doc) as fake:
        client = AuthenticatedClient(base_url=fake.url, token=fake.token)
        ...
        assert fake.stats()["api_secret_code_posts"] == 0
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

READY = "listening on "


class FakeWaldur:
    """A running fake: ``url`` (ends with ``/``), ``token`` (staff), control helpers."""

    def __init__(self, proc: subprocess.Popen[str], url: str, token: str, log: IO[str] | None) -> None:
        self.proc, self.url, self.token, self._log = proc, url, token, log
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=30)

    @property
    def base_url(self) -> str:
        """The URL without the trailing slash, as AuthenticatedClient(base_url=...) wants it."""
        return self.url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, path, json=body, params=params)
        response.raise_for_status()
        return response.json() if response.content else None

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        """Recorded set_usage calls from index ``since``: index, time, user, payload, status, body."""
        found: list[dict[str, Any]] = self._call("GET", "/__fake__/calls", params={"since": since})["calls"]
        return found

    def usages(self) -> list[dict[str, Any]]:
        """Stored component usages: resource, type, billing_period, plan_period, usage, ..."""
        found: list[dict[str, Any]] = self._call("GET", "/__fake__/usages")
        return found

    def stats(self) -> dict[str, Any]:
        """``requests`` ("GET /api/...": {status: n}), ``set_usage_calls``, ``api_secret_code_posts``."""
        found: dict[str, Any] = self._call("GET", "/__fake__/stats")
        return found

    def fault(
        self,
        status: int | None = None,
        count: int | None = None,
        retry_after: float | None = None,
        reset: bool = False,
        resource: str | None = None,
        body: Any = None,
        html: bool | None = None,
    ) -> dict[str, Any]:
        """The next ``count`` (default 1) set_usage calls answer ``status`` (or reset their
        connection); with ``resource`` and no count, every call for that resource."""
        doc: dict[str, Any] = {"reset": reset}
        for key, value in (("status", status), ("count", count), ("retry_after", retry_after),
                           ("resource", resource), ("body", body), ("html", html)):  # fmt: skip
            if value is not None:
                doc[key] = value
        found: dict[str, Any] = self._call("POST", "/__fake__/faults", doc)
        return found

    def clear_faults(self) -> None:
        self._call("POST", "/__fake__/faults", {"clear": True})

    def merge(self, doc: dict[str, Any]) -> dict[str, int]:
        """Add or change providers, offerings, resources and users (the seed format)."""
        found: dict[str, int] = self._call("POST", "/__fake__/catalog", doc)
        return found

    def set_resource(self, uuid: str, **changes: Any) -> dict[str, Any]:
        """Change ``state``, ``plan`` (a switch: new plan period) or ``name``; bumps modified."""
        found: dict[str, Any] = self._call("POST", f"/__fake__/resources/{uuid}", changes)
        return found

    def unlink(self, uuid: str) -> None:
        """Hard-delete a resource, as Waldur's staff ``unlink`` does."""
        self._call("DELETE", f"/__fake__/resources/{uuid}")

    def rotate(self, customer: str) -> str:
        """A new api_secret_code for the provider of ``customer``; answers it."""
        secret: str = self._call("POST", f"/__fake__/rotate/{customer}")["api_secret_code"]
        return secret

    def configure(self, **changes: Any) -> dict[str, Any]:
        """``rate``, ``rate_mode``, ``latency_ms``, ``mode``, ``time_zone``, ``now``, ``token_lifetime``."""
        found: dict[str, Any] = self._call("POST", "/__fake__/config", changes)
        return found

    def stop(self, timeout: float = 10) -> int | None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> FakeWaldur:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start(
    port: int = 0,
    mode: str = "8",
    seed: dict[str, Any] | str | Path | None = None,
    token: str = "fake-staff-token",
    extra_args: Sequence[str] = (),
    log_path: str | Path | None = None,
    host: str = "127.0.0.1",
    timeout: float = 60,
) -> FakeWaldur:
    """Spawn ``python -m ingest.dev.fake_waldur`` and wait for its listening line.

    ``seed`` is a document (written to a temporary file), a path, ``"demo"``, or None (empty;
    use ``extra_args=["--generate", "1000"]``). Its output goes to ``log_path`` if given."""
    args = [sys.executable, "-m", "ingest.dev.fake_waldur", "--host", host, "--port", str(port)]
    args += ["--token", token, "--mode", mode]
    written: str | None = None
    if seed == "demo":
        args.append("--demo")
    elif isinstance(seed, dict):
        handle, name = tempfile.mkstemp(prefix="fake-waldur-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            json.dump(seed, f)
        args += ["--seed", name]
        written = name
    elif seed is not None:
        args += ["--seed", str(seed)]
    args += list(extra_args)
    log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115 (kept by FakeWaldur)
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=log or subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines, log), daemon=True).start()
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            raise RuntimeError(f"fake Waldur did not start in {timeout}s: {''.join(seen)}") from None
        if line is None:
            raise RuntimeError(f"fake Waldur exited ({proc.wait()}): {''.join(seen)}")
        seen.append(line)
        if READY in line:
            url = line.split(READY, 1)[1].strip()
            if written:
                os.unlink(written)  # read at start-up, before the listening line
            return FakeWaldur(proc, url, token, log)


def _pump(stream: IO[str], lines: queue.Queue[str | None], log: IO[str] | None) -> None:
    """Keep reading the child's stdout (so it never blocks on a full pipe)."""
    for line in stream:
        lines.put(line)
        if log is not None:
            log.write(line)
            log.flush()
    lines.put(None)
