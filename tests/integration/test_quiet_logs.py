"""A real worker and beat, started from the Procfile's own lines, watched for a few drain
ticks: at INFO nothing repeats per tick (beat sends a drain every 2 s), every line is JSON
off a terminal, and LOG_FORMAT=text gives a human line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from ingest.dev import runner
from tests.conftest import migrated_database

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
TICKS = 4  # drains beat sends while we watch (one every 2 s)


def run_worker_and_beat(tmp_path: Path, redis_url: str, **extra: str) -> dict[str, str]:
    url = next(migrated_database("sqlite", tmp_path))
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "PORT": "8000",
        "LOG_LEVEL": "INFO",
        **extra,
    }
    if "LOG_FORMAT" not in extra:
        env.pop("LOG_FORMAT", None)  # off a terminal (a file here): JSON
    processes = runner.procfile_processes((ROOT / "Procfile").read_text())
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "beat")}
    procs = {}
    for name, path in logs.items():
        with path.open("wb") as sink:
            procs[name] = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {processes[name]}"],
                cwd=tmp_path,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60
        while "ready." not in logs["worker"].read_text(errors="replace"):
            assert time.monotonic() < deadline, logs["worker"].read_text(errors="replace")
            assert all(p.poll() is None for p in procs.values()), {n: p.read_text() for n, p in logs.items()}
            time.sleep(0.2)
        time.sleep(2.0 * TICKS + 1)
        # the drains did run: each drain heartbeats its consumer name into the journal's keys
        assert list(client.scan_iter(f"{prefix}:*worker*")), "no drain ran"
    finally:
        for p in procs.values():
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs.values():
            p.wait(timeout=30)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    return {name: path.read_text(errors="replace") for name, path in logs.items()}


def log_lines(text: str) -> list[dict[str, str]]:
    """The JSON log lines of a process's output (Celery's banner is plain text on stdout)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def shape(doc: dict[str, str]) -> str:
    return f"{doc['level']} {doc['logger']} " + re.sub(r"[0-9a-f-]{8,}|\d+(\.\d+)?", "#", doc["msg"])


@pytest.mark.timeout(120)
def test_worker_and_beat_say_nothing_per_tick_at_info(tmp_path, redis_url):
    out = run_worker_and_beat(tmp_path, redis_url)
    for name, text in out.items():
        docs = log_lines(text)
        assert docs, text
        info = [shape(d) for d in docs if d["level"] == "INFO"]
        assert len(info) == len(set(info)), f"{name} repeats an INFO line:\n{text}"
        assert not [line for line in text.splitlines() if "received" in line or "succeeded in" in line]
    assert "beat: Starting..." in out["beat"]
    assert out["beat"].count("Sending due task drain") == 1  # the first one only
    assert "ready." in out["worker"]


@pytest.mark.timeout(120)
def test_log_format_text_gives_a_human_line(tmp_path, redis_url):
    out = run_worker_and_beat(tmp_path, redis_url, LOG_FORMAT="text")
    assert not log_lines(out["beat"])
    assert re.search(
        r"^\d{4}-\d\d-\d\dT[\d:.]+Z INFO +celery\.beat: beat: Starting\.\.\.$", out["beat"], re.M
    )
