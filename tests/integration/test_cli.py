"""The ingest command line, as an operator runs it: real processes, real Redis and SQL.
Bad arguments get one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

INGEST = str(Path(sys.executable).parent / "ingest")


@pytest.fixture
def run(settings, runtime, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
    }

    def call(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [INGEST, *argv], env=env, capture_output=True, text=True, timeout=60, input=stdin, cwd=tmp_path
        )

    return call


BAD = [
    ["usage", "show", "--resource", "nope"],
    ["usage", "show", "--resource", "7f3e2a10-0000-4000-8000-0000000000a1", "--period", "11-2026"],
    ["usage", "show"],
    ["catalog", "load", "/no/such/file.json"],
    ["catalog", "remove-resource", "7f3e2a10-0000-4000-8000-0000000000ff"],
    ["catalog", "set-state", "bad-uuid", "OK"],
    ["reports", "show", "0123456789abcdef0123456789abcdef"],
    ["quarantine", "show", "nope"],
    ["quarantine", "replay"],
    ["quarantine", "purge"],
    ["quarantine", "list", "--since", "yesterday"],
    ["replay"],
    ["replay", "--since", "2026-11-01T00:00:00Z", "--until", "2026-10-01T00:00:00Z"],
    ["push", "--customer", "x", "cpu=1"],
    [
        "push",
        "--customer",
        "7f3e2a10-0000-4000-8000-000000000001",
        "--resource",
        "7f3e2a10-0000-4000-8000-0000000000a1",
        "--secret",
        "s",
        "cpu=abc",
    ],
    ["sign", "--secret", "s", "cpu=1"],
    ["providers", "rotate-secret", "7f3e2a10-0000-4000-8000-0000000000ff"],
    ["providers", "rotate-secret", "7f3e2a10-0000-4000-8000-000000000001", "--grace", "soon"],
    ["stats", "--interval", "x"],
    ["no-such-command"],
    [],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) or "nothing" for a in BAD])
def test_bad_arguments_get_one_line_and_nonzero_exit(run, argv):
    out = run(*argv)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "error" in lines[0] and "Traceback" not in out.stderr + out.stdout


def test_purge_without_a_terminal_asks_for_yes(run, demo):
    out = run("quarantine", "purge", "--all")
    assert out.returncode == 0 and "nothing to purge" in out.stdout


def test_catalog_show_never_prints_secrets(run, demo):
    out = run("catalog", "show", "--json")
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    assert {p["customer"] for p in doc["service_providers"]} >= {demo.provider}
    assert demo.secret not in out.stdout


def test_catalog_load_yaml_is_idempotent(run, demo, tmp_path):
    import yaml

    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(demo.doc()))
    first, second = run("catalog", "load", str(path)), run("catalog", "load", str(path))
    assert first.returncode == 0 and first.stdout == second.stdout
    assert "6 resources" in first.stdout


def test_stats_and_quarantine_list_as_json(run):
    stats = run("stats", "--json")
    assert stats.returncode == 0 and json.loads(stats.stdout)["backlog"] == 0
    listed = run("quarantine", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_rotate_secret_prints_the_new_secret_once(run, demo):
    out = run("providers", "rotate-secret", demo.provider, "--grace", "30m")
    assert out.returncode == 0 and "new secret" in out.stdout
