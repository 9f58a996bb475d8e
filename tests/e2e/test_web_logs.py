"""gunicorn's own lines (the master's "Listening at", "Booting worker") come out in our format,
like every other line of the web: JSON off a terminal, a human line with LOG_FORMAT=text."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port, migrated_database
from tests.e2e.conftest import _environment, web_argv

pytestmark = pytest.mark.e2e


def _web_lines(tmp_path: Path, redis_url: str, **extra: str) -> list[str]:
    url = next(migrated_database("sqlite", tmp_path))
    port = free_port()
    env = {**_environment(url, redis_url, f"logs-{uuid.uuid4().hex[:8]}", port), **extra}
    proc = subprocess.Popen(web_argv(), env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if "Booting worker" in line and sum("Booting worker" in x for x in lines) == 2:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)  # the shutdown's lines too
    lines += [x for x in (rest or "").splitlines() if x]
    return lines


def test_gunicorns_lines_are_json_off_a_terminal(tmp_path: Path, redis_url: str) -> None:
    lines = _web_lines(tmp_path, redis_url)
    records = [json.loads(line) for line in lines]  # every line: no gunicorn "[INFO]" line
    ours = [r for r in records if r.get("logger") == "gunicorn.error"]
    messages = [r["msg"] for r in ours]
    assert any(m.startswith("Listening at: http://0.0.0.0:") for m in messages), messages
    assert sum(m.startswith("Booting worker with pid") for m in messages) == 2
    assert all(r["level"] in {"INFO", "WARNING", "ERROR"} and r["t"].endswith("Z") for r in ours)


def test_log_format_text_gives_gunicorn_a_human_line(tmp_path: Path, redis_url: str) -> None:
    lines = _web_lines(tmp_path, redis_url, LOG_FORMAT="text")
    listening = [line for line in lines if "Listening at: http://0.0.0.0:" in line]
    assert listening and not listening[0].startswith("{") and "gunicorn.error" in listening[0]
