"""The service as a user installs it: the wheel, without extras, in a fresh venv outside the
repository, run from an empty folder.

One module-scoped fixture builds the wheel (``pip wheel --no-deps`` of a copy of the source
tree, so no stale ``build/`` of the checkout gets in) and installs it into a new venv; pip
fetches the dependencies from the machine's package index. That is slow (about a minute), so
every test here shares it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ingest import config
from ingest.dev import embedded_redis, runner
from tests.conftest import free_port
from tests.helpers import Demo, make_demo

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0
STOP_DEADLINE = 60.0
OPERATOR = "operator-token-wheel-0123456789"
SET_USAGE = "/api/marketplace-public-api/set_usage/"
DEMO_CUSTOMER = "7f3e2a10-0000-4000-8000-000000000001"
DEMO_RESOURCE = "7f3e2a10-0000-4000-8000-0000000000a1"
SKIP = shutil.ignore_patterns(
    ".venv",
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "var",
    "__pycache__",
    ".*_cache",
    ".hypothesis",  # other test processes write there while this copies
    "*.db*",
    "tests",
    "bench",
)


def procfile(text: str) -> dict[str, str]:
    return runner.procfile_processes(text)


def test_the_packaged_procfile_is_the_repositorys() -> None:
    """``ingest run`` runs ingest/dev/Procfile; Procfile platforms run the top-level one."""
    top = procfile((ROOT / "Procfile").read_text())
    assert set(top) == {"web", "worker", "forwarder", "beat"}
    assert procfile(runner.packaged_procfile()) == top


# -- the installed package ------------------------------------------------------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (outside the repository) with the wheel installed, without extras."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("usage_ingest-*.whl")
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        timeout=600,
    )
    return env_dir


def clean_environment(venv: Path, **values: str) -> dict[str, str]:
    """This machine's environment without our configuration or this venv on PATH, and
    nothing that would let the repository's source be imported."""
    ours = {name for name, *_ in config.VARIABLES} | {"PROMETHEUS_MULTIPROC_DIR", "VIRTUAL_ENV"}
    ours |= {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    here = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != here]
    env["PATH"] = os.pathsep.join(path)
    env.update(PYTHONUNBUFFERED="1", **values)
    return env


def wait_for(
    what: str, probe: Callable[[], T | None], check: Callable[[], None], timeout: float = DEADLINE
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        check()
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def stop_group(popen: subprocess.Popen[bytes]) -> int:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    try:
        return popen.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        return -9
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)


def test_the_installed_package_does_not_come_from_the_repository(venv: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ingest, api, workers, schemas; print(ingest.__file__)"],
        cwd=tmp_path,
        env=clean_environment(venv),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(out.stdout.strip()).is_relative_to(venv), out.stdout


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = embedded_redis.start(port, tmp_path / "redis")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def test_every_procfile_process_type_runs_from_an_empty_folder(
    venv: Path, tmp_path: Path, private_redis: str
) -> None:
    """web answers /readyz, the worker commits a signed report, beat sends its drain."""
    work = tmp_path / "empty"
    work.mkdir()
    demo: Demo = make_demo()
    port = free_port()
    env = clean_environment(
        venv,
        PORT=str(port),
        DATABASE_URL=f"sqlite:///{work / 'ingest.db'}",
        REDIS_URL=private_redis,
        OPERATOR_TOKEN=OPERATOR,
        WEB_CONCURRENCY="1",
        CATALOG_REFRESH="0.2",
        FLUSH_INTERVAL="0.05",
    )
    env["PATH"] = str(venv / "bin") + os.pathsep + env["PATH"]
    ingest = str(venv / "bin" / "ingest")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(demo.doc()))
    for argv in (["db", "upgrade"], ["catalog", "load", str(catalog)]):
        done = subprocess.run([ingest, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    logs: dict[str, Path] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in procfile((ROOT / "Procfile").read_text()).items():
            logs[name] = tmp_path / f"{name}.log"
            with logs[name].open("wb") as sink:
                procs[name] = subprocess.Popen(
                    ["/bin/sh", "-c", f"exec {command}"],
                    cwd=work,
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )

        def tail() -> str:
            return "\n".join(f"--- {n} ---\n{p.read_text(errors='replace')[-3000:]}" for n, p in logs.items())

        def alive() -> None:
            dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            assert not dead, f"died: {dead}\n{tail()}"

        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def ready() -> bool:
            try:
                return http.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("GET /readyz == 200", ready, alive)
        claims = {"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": "7"}]}
        resp = http.post(SET_USAGE, json=demo.body(claims))
        assert resp.status_code == 201, resp.text
        receipt: dict[str, Any] = resp.json()

        def committed() -> bool:
            status = http.get(receipt["status_url"], headers={"Authorization": f"Token {OPERATOR}"})
            return status.status_code == 200 and status.json().get("state") == "committed"

        wait_for(f"report {receipt['id']} committed", committed, alive)
        shown = subprocess.run(
            [ingest, "reports", "show", receipt["id"]], cwd=work, env=env, capture_output=True, text=True
        )
        assert shown.returncode == 0 and "committed" in shown.stdout, shown.stdout + shown.stderr
        wait_for(
            "beat to send a drain",
            lambda: "Sending due task drain" in logs["beat"].read_text(errors="replace"),
            alive,
        )
        http.close()
    finally:
        codes = {name: stop_group(p) for name, p in procs.items()}
    assert codes == {name: 0 for name in procs}, codes
    # what they leave is their data: the database and the journal archive (var/archive)
    left = [name for name in os.listdir(work) if not name.startswith("ingest.db")]
    assert left == ["var"] and os.listdir(work / "var") == ["archive"], left
    stats = subprocess.run(
        [ingest, "archive", "stats", "--json"], cwd=work, env=env, capture_output=True, text=True
    )
    assert stats.returncode == 0 and json.loads(stats.stdout)["entries"] == 1, stats.stdout + stats.stderr


def test_ingest_run_from_an_empty_folder(venv: Path, tmp_path: Path) -> None:
    """``ingest run`` of the installed package: embedded Redis, migrations, demo catalog, the
    packaged Procfile; its example names this installation's ``ingest`` and works as printed;
    SIGTERM stops it with exit status 0."""
    work = tmp_path / "empty"
    work.mkdir()
    port = free_port()
    env = clean_environment(venv, PORT=str(port), WEB_CONCURRENCY="1", OPERATOR_TOKEN=OPERATOR)
    out = tmp_path / "run.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [str(venv / "bin" / "ingest"), "run", "--redis-port", str(free_port())],
            cwd=work,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:

        def alive() -> None:
            assert proc.poll() is None, f"ingest run exited {proc.returncode}\n{out.read_text()}"

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("GET /readyz == 200", ready, alive, timeout=90)
        text = out.read_text()
        assert "Procfile does not exist" not in text
        # the example's push, exactly as printed (continuation lines joined)
        example = text.replace("\\\n", " ")
        push = next(line.strip() for line in example.splitlines() if " push --url " in line)
        # the embedded Redis is not on its default port here, so the example says which
        assert re.sub(r"^REDIS_URL=\S+ ", "", push).startswith(str(venv / "bin" / "ingest") + " push"), push
        assert ".venv/bin/ingest" not in text
        done = subprocess.run(["/bin/sh", "-c", push], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.startswith("201 "), done.stdout + done.stderr
        receipt = json.loads(done.stdout.partition(" ")[2])

        def committed() -> bool:
            status = httpx.get(
                f"http://127.0.0.1:{port}{receipt['status_url']}",
                headers={"Authorization": f"Token {OPERATOR}"},
            )
            return status.status_code == 200 and status.json().get("state") == "committed"

        wait_for("the example's report to be committed", committed, alive)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_DEADLINE) == 0, out.read_text()[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert re.search(r"\bredis stopped\b", out.read_text()), out.read_text()[-3000:]
