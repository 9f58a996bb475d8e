"""Every command of ``ingest``, found by walking the real parser (a new command is covered
without touching this file): ``--help`` exits 0 with text; every command that reads takes
``--json`` and prints JSON, against a real migrated SQLite database and the test Redis; every
moment it prints is ISO 8601 UTC."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.cli import main
from ingest.services.drain import drain, reconcile
from tests.conftest import migrated_database

INGEST = str(Path(sys.executable).parent / "ingest")
SET_USAGE = "/api/marketplace-public-api/set_usage/"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(command words, parser) of every command and command group, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


ALL = list(commands(main.build_parser()))
LEAVES = [
    (path, p) for path, p in ALL if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
]


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_the_walk_finds_the_commands():
    names = {" ".join(path) for path, _ in LEAVES}
    assert {"run", "stats", "reports show", "quarantine list", "catalog show", "db upgrade"} <= names
    assert len(LEAVES) >= 17


@pytest.mark.parametrize("path", [path for path, _ in ALL], ids=[" ".join(p) or "ingest" for p, _ in ALL])
def test_help_exits_zero_with_text(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main.main([*path, "--help"])
    assert done.value.code == 0
    text = out.getvalue()
    assert text.startswith("usage: ingest") and len(text.splitlines()) >= 3, text


def test_help_of_the_installed_script_exits_zero():
    done = subprocess.run([INGEST, "reports", "show", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--json" in done.stdout, done.stderr


# Commands that read and must take --json (the walk below also finds any other that does).
READERS = {
    "catalog show",
    "usage show",
    "reports show",
    "quarantine list",
    "quarantine show",
    "quarantine replay",  # with --dry-run
    "replay",  # with --dry-run
    "stats",
}


def test_every_read_command_takes_json():
    with_json = {" ".join(path) for path, p in LEAVES if "--json" in options(p)}
    assert with_json >= READERS, READERS - with_json


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only: the output format does not depend on the database."""
    yield from migrated_database("sqlite", tmp_path)


@pytest.fixture
def world(settings, runtime, client, demo, tmp_path) -> dict[str, Any]:
    """A committed report, a quarantined one, a queued one and a reconciler pass."""

    def post(resource: str, amount: str) -> dict[str, Any]:
        claims = {"resource": resource, "usages": [{"type": "cpu_hours", "amount": amount}]}
        resp = client.simulate_post(SET_USAGE, json=demo.body(claims))
        assert resp.status_code == 201, resp.text
        return dict(resp.json)

    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    committed = post(demo.resource, "4")
    quarantined = post(demo.resource2, "5")
    runtime.catalog_source.remove_resource(uuid.UUID(demo.resource2))
    drain(runtime.queue, runtime.committer, "test", 50, 0.01, 10)
    reconcile(runtime.queue, runtime.committer, "test", 60, 50, 3600, 0, True)
    queued = post(demo.resource, "6")
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
    }
    return {
        "env": env,
        "cwd": tmp_path,
        "committed": committed["id"],
        "quarantined": quarantined["id"],
        "queued": queued["id"],
        "since": started.isoformat(),
        "resource": demo.resource,
    }


def read_argvs(w: dict[str, Any]) -> dict[str, list[list[str]]]:
    """How to run each read command (every command with --json must be named here)."""
    return {
        "catalog show": [[]],
        "usage show": [["--resource", w["resource"]]],
        "reports show": [[w["committed"]], [w["quarantined"]], [w["queued"]]],
        "quarantine list": [[]],
        "quarantine show": [[w["quarantined"]]],
        "quarantine replay": [["--all", "--dry-run"]],
        "replay": [["--since", w["since"], "--dry-run"]],
        "stats": [[]],
        "archive stats": [[]],
        "archive verify": [[]],
        "waldur status": [[]],  # the bridge is off here: says so
        "waldur failures list": [[]],
        "waldur failures show": [],  # needs a forward failure: tests/integration/test_forwarder.py
    }


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MOMENTS = {"accepted_at", "committed_at", "at", "date", "first_accepted_at", "last_accepted_at"}


def moments(doc: Any, skip: frozenset[str] = frozenset({"payload"})) -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in skip:
                continue
            if k in MOMENTS and v is not None:
                yield k, v
            else:
                yield from moments(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from moments(v)


# Commands that need WALDUR_URL: their --json is checked against the fake Waldur
# (tests/integration/test_waldur_sync.py)
NEEDS_WALDUR = {"waldur sync"}


def test_every_read_command_prints_json_with_utc_times(world):
    argvs = read_argvs(world)
    with_json = {" ".join(path) for path, p in LEAVES if "--json" in options(p)} - NEEDS_WALDUR
    assert with_json <= set(argvs), f"a read command without arguments here: {with_json - set(argvs)}"
    seen: dict[str, Any] = {}
    for name in sorted(with_json):
        for extra in argvs[name]:
            argv = [*name.split(), *extra, "--json"]
            done = subprocess.run(
                [INGEST, *argv],
                env=world["env"],
                cwd=world["cwd"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, f"{argv}: {done.stderr}"
            doc = json.loads(done.stdout)
            seen[" ".join(argv)] = doc
            for key, value in moments(doc):
                assert isinstance(value, str) and ISO_UTC.match(value), f"{argv}: {key}={value!r}"
    stats = seen["stats --json"]
    assert ISO_UTC.match(stats["last_reconcile"]["at"])  # an epoch float before
    assert seen[f"reports show {world['queued']} --json"]["state"] == "queued"
    assert seen[f"quarantine show {world['quarantined']} --json"]["reason_code"] == "resource_missing"
    assert [r["id"] for r in seen["quarantine replay --all --dry-run --json"]] == [world["quarantined"]]
    assert seen[f"replay --since {world['since']} --dry-run --json"]["entries"] == 3


def test_without_json_a_report_reads_as_a_table_with_utc_times(world):
    done = subprocess.run(
        [INGEST, "reports", "show", world["committed"]],
        env=world["env"],
        cwd=world["cwd"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "committed" in done.stdout and re.search(r"\d\d:\d\d:\d\d\.\d{3}Z", done.stdout)
    assert not done.stdout.lstrip().startswith("{")


@pytest.mark.parametrize(
    "argv",
    [["replay", "--since", "2026-11-01T00:00:00Z", "--json"], ["quarantine", "replay", "--all", "--json"]],
)
def test_json_on_a_command_that_writes_needs_dry_run(world, argv):
    done = subprocess.run(
        [INGEST, *argv], env=world["env"], cwd=world["cwd"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--dry-run" in done.stderr and not done.stdout


def test_the_run_example_names_the_ingest_the_user_has(monkeypatch, tmp_path):
    from ingest.dev import runner

    bindir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ.get("PATH", ""))
    assert "\n  ingest push --url http://127.0.0.1:8000" in runner.example(8000)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    assert f"\n  {bindir}/ingest usage show" in runner.example(8000)
