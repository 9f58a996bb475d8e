"""The catalog sync against the fake Waldur, a real process spoken to through the official
client, in both of its modes (8.x, and 7.0.7's filters), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
import redis

from api.app import create_app
from ingest import bootstrap
from ingest.config import Settings
from ingest.domain import signing
from ingest.services import catalog_file
from ingest.services.waldur_sync import ConfigurationError
from tests.helpers import Demo

process = pytest.importorskip("ingest.dev.fake_waldur.process")

INGEST = str(Path(sys.executable).parent / "ingest")


@pytest.fixture(params=["8", "7.0.7"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(mode: str, demo: Demo) -> Iterator[Any]:
    with process.start(mode=mode, seed=demo.doc()) as running:
        yield running


def bridge_runtime(settings: Settings, fake: Any, **changes: Any) -> bootstrap.Runtime:
    values = {"waldur_url": fake.url, "waldur_token": fake.token, "waldur_secret_grace": 600.0, **changes}
    s = dataclasses.replace(settings, **values)
    return bootstrap.Runtime(s)


@pytest.fixture
def rt(settings: Settings, fake: Any) -> Iterator[bootstrap.Runtime]:
    runtime = bridge_runtime(settings, fake)
    yield runtime
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(f"{settings.redis_prefix}:*"))
    if keys:
        client.delete(*keys)
    runtime.engine.dispose()


def expected_catalog(demo: Demo, now: dt.datetime) -> dict[str, Any]:
    """The seed as the catalog should hold it after a sync: Waldur lists no plan period that
    ended before this month."""
    doc = catalog_file.parse(demo.doc())
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return {
        "offerings": {
            o["uuid"]: {c["type"]: c["billing_type"] for c in o["components"]} for o in doc["offerings"]
        },
        "resources": {
            r["uuid"]: (
                r["offering_uuid"],
                r["state"],
                r["plan_uuid"],
                sorted(
                    (pp["uuid"], pp["start"], pp["end"])
                    for pp in r["plan_periods"]
                    if pp["end"] is None or pp["end"] >= month
                ),
            )
            for r in doc["resources"]
        },
        "providers": {p["customer_uuid"]: p["api_secret_code"] for p in doc["service_providers"]},
    }


def held_catalog(rt: bootstrap.Runtime) -> dict[str, Any]:
    snap = rt.catalog_source.snapshot()
    return {
        "offerings": {o.uuid: dict(o.components) for o in snap.offerings.values()},
        "resources": {
            r.uuid: (r.offering, r.state, r.plan, sorted((p.uuid, p.start, p.end) for p in r.plan_periods))
            for r in snap.resources.values()
        },
        "providers": {p.customer: p.secret for p in snap.providers.values()},
    }


def test_a_first_full_sync_loads_the_exact_catalog(
    rt: bootstrap.Runtime, fake: Any, demo: Demo, mode: str
) -> None:
    summary = rt.catalog_sync.run()
    assert (summary["mode"], summary["reason"]) == ("full", "first sync")
    assert summary["server_version"].startswith("7" if mode == "7.0.7" else "8")
    want, held = expected_catalog(demo, dt.datetime.now(dt.UTC)), held_catalog(rt)
    assert held["offerings"] == want["offerings"]
    assert held["resources"] == want["resources"]
    # the provider the seed gave no secret has one the fake made up: everything else exact
    no_secret = uuid.UUID(demo.no_secret_provider)
    assert held["providers"].pop(no_secret)
    want["providers"].pop(no_secret)
    assert held["providers"] == want["providers"]
    assert fake.stats()["api_secret_code_posts"] == 0
    state = rt.sync_state.read()
    assert state.last_full_at is not None and state.last_error is None
    assert state.server_version == summary["server_version"]


def test_changes_show_up_after_the_next_sync(rt: bootstrap.Runtime, fake: Any, demo: Demo, mode: str) -> None:
    sync = rt.catalog_sync
    sync.run()
    version = rt.catalog_source.version()

    # a state change and a new resource: the next incremental sync
    fake.set_resource(demo.resource2, state="Terminating")
    new = str(uuid.uuid4())
    fake.merge(
        {
            "resources": [
                {
                    "uuid": new,
                    "offering": demo.offering,
                    "name": "new",
                    "state": "OK",
                    "plan": None,
                    "plan_periods": [
                        {"uuid": str(uuid.uuid4()), "start": "2026-01-01T00:00:00Z", "end": None}
                    ],
                }
            ]
        }
    )
    summary = sync.run()
    assert summary["mode"] == "incremental"
    assert summary["resource_filter"] == ("date" if mode == "7.0.7" else "date-time")
    assert summary["changes"]["resources"] == {"added": 1, "updated": 1, "removed": 0}
    assert summary["changes"]["plan_periods"]["added"] == 1
    snap = rt.catalog_source.snapshot()
    assert snap.resources[uuid.UUID(demo.resource2)].state == "Terminating"
    assert len(snap.resources[uuid.UUID(new)].plan_periods) == 1
    assert snap.version == version + 1

    # nothing changed: no version bump (the web caches do not reload)
    assert sync.run()["changed"] is False
    assert rt.catalog_source.version() == version + 1

    # a rotated secret: the new one verifies, and the old one during WALDUR_SECRET_GRACE
    rotated = fake.rotate(demo.provider)
    summary = sync.run()
    assert summary["secrets"]["rotated"] == 1
    provider = rt.catalog_source.snapshot().providers[uuid.UUID(demo.provider)]
    assert provider.secrets(dt.datetime.now(dt.UTC)) == [rotated, demo.secret]
    assert provider.secrets(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=601)) == [rotated]
    web = falcon.testing.TestClient(create_app(lambda: rt.intake, {}, rt.settings.max_body_bytes))
    rt.kick = lambda: None  # type: ignore[method-assign]
    for secret in (demo.secret, rotated):
        claims = {"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": "1.50"}]}
        body = {"customer": demo.provider, "data": signing.sign(claims, secret)}
        answer = web.simulate_post("/api/marketplace-public-api/set_usage/", json=body)
        assert answer.status_code == 201, answer.text

    # an unlinked resource: kept by an incremental sync, removed by the next full one
    fake.unlink(demo.erred_resource)
    assert uuid.UUID(demo.erred_resource) in rt.catalog_source.snapshot().resources
    assert sync.run()["changes"]["resources"]["removed"] == 0
    summary = sync.run(full=True)
    assert summary["changes"]["resources"]["removed"] == 1
    assert summary["vanished_confirmed"] is True
    assert uuid.UUID(demo.erred_resource) not in rt.catalog_source.snapshot().resources
    assert fake.stats()["api_secret_code_posts"] == 0


def test_a_dry_run_changes_nothing(rt: bootstrap.Runtime, fake: Any) -> None:
    summary = rt.catalog_sync.run(dry_run=True)
    assert summary["changed"] and summary["changes"]["resources"]["added"] == 6
    assert rt.catalog_source.version() == 0
    assert rt.sync_state.read().last_sync_at is None


def test_a_refused_token_is_a_configuration_error(settings: Settings, fake: Any) -> None:
    runtime = bridge_runtime(settings, fake, waldur_token="not-a-token")
    try:
        with pytest.raises(ConfigurationError, match="WALDUR_TOKEN") as raised:
            runtime.catalog_sync.run()
        assert "Invalid token." in str(raised.value)
        assert runtime.sync_state.read().last_error == str(raised.value)
        assert runtime.catalog_source.version() == 0
    finally:
        runtime.engine.dispose()


def test_the_command(settings: Settings, fake: Any, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
        "WALDUR_URL": fake.url,
        "WALDUR_TOKEN": fake.token,
    }

    def ingest(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [INGEST, *argv], env={**env, **extra}, capture_output=True, text=True, timeout=120, cwd=tmp_path
        )

    dry = ingest("waldur", "sync", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was written" in dry.stdout
    done = ingest("waldur", "sync")
    assert done.returncode == 0, done.stderr
    assert "full sync (first sync)" in done.stdout and "resources          6 added" in done.stdout
    assert fake.token not in done.stdout + done.stderr
    again = ingest("waldur", "sync", "--json")
    doc = json.loads(again.stdout)
    assert doc["mode"] == "incremental" and doc["changed"] is False
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", doc["started_at"])
    bad = ingest("waldur", "sync", WALDUR_TOKEN="wrong")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "ingest: error: Waldur refused WALDUR_TOKEN (Invalid token.): set a valid token of a staff user"
    ]
    unset = ingest("waldur", "sync", WALDUR_URL="", WALDUR_TOKEN="")
    assert unset.returncode == 2 and "set WALDUR_URL and WALDUR_TOKEN" in unset.stderr


@pytest.mark.parametrize("count", [3000])
def test_a_sync_of_a_few_thousand_resources(settings: Settings, mode: str, count: int) -> None:
    with process.start(mode=mode, extra_args=["--generate", str(count)]) as big:
        runtime = bridge_runtime(settings, big)
        try:
            began = time.monotonic()
            full = runtime.catalog_sync.run()
            full_s = time.monotonic() - began
            assert full["changes"]["resources"]["added"] == count
            assert full["changes"]["plan_periods"]["added"] == count
            began = time.monotonic()
            incremental = runtime.catalog_sync.run()
            incremental_s = time.monotonic() - began
            assert incremental["mode"] == "incremental" and not incremental["changed"]
            kind = settings.database_url.split(":", 1)[0]
            print(
                f"\ncatalog sync of {count} resources (fake Waldur {mode}, {kind}): "
                f"full {full_s:.2f} s, incremental {incremental_s:.2f} s "
                f"({incremental['seen']['resources']} resources read back by the modified filter)"
            )
        finally:
            runtime.engine.dispose()


def test_the_task(
    settings: Settings, rt: bootstrap.Runtime, fake: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from workers import sync as task

    monkeypatch.setattr(bootstrap, "runtime", lambda: rt)
    assert task.sync.run()["mode"] == "full"
    assert task.sync.run()["mode"] == "incremental"
    with rt.catalog_sync.lock():  # as if another process were syncing
        assert task.sync.run() == {"skipped": "busy"}

    standalone = bootstrap.Runtime(dataclasses.replace(settings, waldur_url=""))
    monkeypatch.setattr(bootstrap, "runtime", lambda: standalone)
    assert task.sync.run() == {"skipped": "standalone"}

    refused = bridge_runtime(settings, fake, waldur_token="expired")
    monkeypatch.setattr(bootstrap, "runtime", lambda: refused)
    try:
        with caplog.at_level("ERROR", logger="workers.sync"):
            assert task.sync.run() == {"error": "unauthorized"}
        assert [r.levelname for r in caplog.records if "WALDUR_TOKEN" in r.getMessage()] == ["ERROR"]
        assert "Invalid token." in (refused.sync_state.read().last_error or "")
    finally:
        refused.engine.dispose()


def test_the_lock_holds_across_processes(rt: bootstrap.Runtime) -> None:
    """Another process (not just another object) finds the sync taken while one runs."""
    code = (
        "import sys\n"
        "from ingest.services.sync_ports import SyncBusy\n"
        "from ingest.adapters.sql.sync_state import SqlSyncLock\n"
        "from ingest.adapters.sql.unit_of_work import make_engine\n"
        "try:\n"
        "    with SqlSyncLock(make_engine(sys.argv[1]))():\n"
        "        print('took it')\n"
        "except SyncBusy as exc:\n"
        "    print('busy:', exc)\n"
    )

    def other() -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, rt.settings.database_url], capture_output=True, text=True, timeout=60
        )
        return done.stdout.strip() + done.stderr.strip()

    with rt.catalog_sync.lock():
        assert other().startswith("busy: another catalog sync is running")
    assert other() == "took it"


def test_waldur_offerings_scopes_the_sync(settings: Settings, fake: Any, demo: Demo) -> None:
    runtime = bridge_runtime(settings, fake, waldur_offerings=(uuid.UUID(demo.offering).hex,))
    try:
        summary = runtime.catalog_sync.run()
        snap = runtime.catalog_source.snapshot()
        assert set(snap.offerings) == {uuid.UUID(demo.offering)}
        assert uuid.UUID(demo.other_resource) not in snap.resources
        assert set(snap.providers) == {uuid.UUID(demo.provider)}  # no other provider's secret
        requests = fake.stats()["requests"]
        reads = [
            sum(n.values()) for k, n in requests.items() if k.startswith("GET ") and "api_secret_code" in k
        ]
        assert reads == [1], requests
        assert summary["scope"] == [uuid.UUID(demo.offering).hex]
    finally:
        runtime.engine.dispose()
