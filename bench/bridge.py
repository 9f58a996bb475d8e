"""The Waldur bridge under load: forwarding to a Waldur as slow as the real one, in one run.

``python -m bench.bridge [--resources 20000] [--rate 5000] [--duration 120] [--waldur-rate 54]
[--sync-resources 100000] [--database-url ...]`` (``make bench ARGS=--bridge`` runs it too)

1. **Catalog sync**: a fake Waldur (ingest/dev/fake_waldur) holding ``--sync-resources``
   resources; ``ingest waldur sync --full`` into an empty database, then, after a few resources
   changed in Waldur, an incremental ``ingest waldur sync``: wall time of each.
2. **Forwarding**: a fake Waldur capped at ``--waldur-rate`` set_usage calls/s (Waldur's own
   measured ceiling on 2 cores is 54), our web + worker + forwarder + beat, and providers
   pushing ``--rate`` reports/s over ``--resources`` resources through the batch endpoint for
   ``--duration`` s. Every second: the age of the oldest dirty outbox key (the forward lag)
   and the calls Waldur received. Reported: forward calls/s, reports absorbed per Waldur call,
   forward lag p50/p99/max, whether the lag stayed bounded (its growth over the second half of
   the run), and, after the load stops, the time until Waldur holds every committed value.
   The end check compares every (resource, component) Waldur holds with our committed usage.

Results go to bench/results/<stem>-bridge.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import catalog as bench_catalog
from bench.batchmode import _bodies, measure
from bench.harness import pct, slope
from bench.stack import REPO, Database, RedisServer, Stack
from ingest.adapters.sql import migrate as db
from ingest.adapters.sql.unit_of_work import make_engine
from ingest.dev.fake_waldur import process as fake_waldur

TOKEN = "bench-waldur-token"


def seed_document(cat: bench_catalog.Catalog) -> dict[str, Any]:
    """The bench catalog as a fake Waldur seed (our catalog document format)."""
    start = bench_catalog.PERIOD_START.isoformat()
    return {
        "service_providers": [
            {"customer": p.customer, "name": f"provider-{i}", "api_secret_code": p.secret}
            for i, p in enumerate(cat.providers)
        ],
        "offerings": [
            {
                "uuid": p.offering,
                "customer": p.customer,
                "name": f"offering-{i}",
                "components": [
                    {"type": name, "billing_type": billing, "measured_unit": "unit"}
                    for name, billing in bench_catalog.COMPONENTS
                ],
            }
            for i, p in enumerate(cat.providers)
        ],
        "resources": [
            {
                "uuid": r.uuid,
                "offering": cat.providers[r.provider].offering,
                "name": f"r{i}",
                "state": "OK",
                "plan": bench_catalog._plan(cat.providers[r.provider].offering),
                "plan_periods": [{"uuid": r.plan_period, "start": start, "end": None}],
            }
            for i, r in enumerate(cat.resources)
        ],
    }


def _ingest(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ingest.cli.main", *args],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ingest {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return elapsed, done.stdout


def phase_sync(work: Path, admin_url: str, resources: int, log: Any) -> dict[str, Any]:
    cat = bench_catalog.synthesize(max(1, resources // 2000), min(resources, 2000))
    seed = work / "sync-seed.json"
    seed.write_text(json.dumps(seed_document(cat)))
    database = Database(admin_url, work / "sync")
    waldur = fake_waldur.start(port=0, mode="8", seed=seed, token=TOKEN, log_path=work / "fake-sync.log")
    try:
        db.upgrade(database.url)
        env = _env(database.url, "redis://127.0.0.1:1/0", waldur.url)
        # an incremental sync re-reads what changed since the last sync started, minus a 60 s
        # margin for clock skew: seed Waldur's rows further back than that, or the incremental
        # measured below would re-read all of them (the worst case, not the usual one)
        time.sleep(62)
        log(f"sync: full sync of {len(cat.resources):,} resources")
        full, out_full = _ingest(env, "waldur", "sync", "--full", "--json")
        changed = [r.uuid for r in cat.resources[:: max(1, len(cat.resources) // 100)]]
        for uuid_ in changed:
            waldur.set_resource(uuid_, state="Updating")
        time.sleep(1.1)  # past the watermark's second
        log(f"sync: incremental sync after {len(changed)} resources changed")
        incremental, out_inc = _ingest(env, "waldur", "sync", "--json")
        return {
            "resources": len(cat.resources),
            "full_seconds": round(full, 1),
            "incremental_seconds": round(incremental, 1),
            "changed_resources": len(changed),
            "full_summary": _last_json(out_full),
            "incremental_summary": _last_json(out_inc),
        }
    finally:
        waldur.stop()
        database.drop()


def _last_json(text: str) -> Any:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    try:
        return json.loads(text)
    except ValueError:
        return text[-500:]


def _env(database_url: str, redis_url: str, waldur_url: str, **extra: str) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "WALDUR_URL": waldur_url,
        "WALDUR_TOKEN": TOKEN,
        "LOG_FORMAT": "json",
        **extra,
    }


def _lag(engine: sa.Engine) -> tuple[float, int]:
    """(age in seconds of the oldest dirty outbox key, dirty keys)."""
    with engine.connect() as conn:
        oldest, count = conn.execute(
            sa.text("SELECT min(dirty_since), count(*) FROM usage_outbox WHERE dirty_since IS NOT NULL")
        ).one()
    if oldest is None:
        return 0.0, 0
    if isinstance(oldest, str):
        oldest = dt.datetime.fromisoformat(oldest)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds()), int(count)


def _calls(waldur: Any) -> int:
    """set_usage calls Waldur answered 201."""
    counts = waldur.stats()["requests"].get("POST /api/marketplace-component-usages/set_usage/", {})
    return int(counts.get("201", 0))


def _watch(engine: sa.Engine, waldur: Any, stop: threading.Event, samples: list[dict[str, Any]]) -> None:
    t0 = time.monotonic()
    while not stop.wait(1.0):
        try:
            lag, dirty = _lag(engine)
            samples.append(
                {"t": round(time.monotonic() - t0, 1), "lag": lag, "dirty": dirty, "calls": _calls(waldur)}
            )
        except Exception as exc:  # a sample lost is not a run lost
            samples.append({"t": round(time.monotonic() - t0, 1), "error": str(exc)[:200]})


def _mismatches(engine: sa.Engine, waldur: Any) -> int:
    """(resource, component) pairs whose committed amount Waldur does not hold."""
    ours: dict[tuple[str, str], Decimal] = {}
    with engine.connect() as conn:
        for resource, component, amount in conn.execute(
            sa.text("SELECT resource_uuid, component_type, amount FROM component_usages")
        ):
            ours[(str(resource).replace("-", ""), component)] = Decimal(str(amount))
    theirs: dict[tuple[str, str], Decimal] = {}
    for row in waldur.usages():
        theirs[(str(row["resource"]).replace("-", ""), row["type"])] = Decimal(str(row["usage"]))
    return sum(1 for key, value in ours.items() if theirs.get(key) != value)


def phase_forward(work: Path, admin_url: str, opts: argparse.Namespace, log: Any) -> dict[str, Any]:
    providers = max(1, opts.resources // 2000)
    cat = bench_catalog.synthesize(providers, opts.resources // providers)
    seed = work / "forward-seed.json"
    seed.write_text(json.dumps(seed_document(cat)))
    database = Database(admin_url, work / "forward")
    redis_server = RedisServer(work)
    waldur = fake_waldur.start(
        port=0,
        mode="8",
        seed=seed,
        token=TOKEN,
        extra_args=["--rate", str(opts.waldur_rate)],
        log_path=work / "fake-forward.log",
    )
    extra = {
        "WALDUR_FORWARD_RATE": str(opts.forward_rate),
        "WALDUR_FORWARD_CONCURRENCY": str(opts.forward_concurrency),
        "WALDUR_SYNC_INTERVAL": "3600",
    }
    stack = Stack(work, database.url, redis_server.url, opts.web_workers, _env("", "", waldur.url, **extra))
    stack.env.update(DATABASE_URL=database.url, REDIS_URL=redis_server.url)
    engine = make_engine(database.url)
    try:
        db.upgrade(database.url)
        _ingest(stack.env, "waldur", "sync", "--full")
        _web, port = stack.web("web", "api.asgi:app")
        stack.worker(1)
        stack._start(
            "forwarder",
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--loglevel", "INFO",
             "--concurrency", "2", "--pool", "prefork", "-Q", "waldur", "-n", f"fwd.{port}@%h"],
        )  # fmt: skip
        stack.beat()
        rng = random.Random(opts.seed)
        size = 50
        clients = 2
        interval = clients * size / opts.rate
        count = clients * (int(opts.duration / interval) + 2)
        log(f"forward: signing {count * size:,} reports")
        bodies = _bodies(cat, size, count, rng)
        samples: list[dict[str, Any]] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(engine, waldur, stop, samples), daemon=True)
        calls_before = _calls(waldur)
        watcher.start()
        log(
            f"forward: {opts.rate:,.0f} reports/s over {len(cat.resources):,} resources "
            f"for {opts.duration:.0f} s"
        )
        try:
            load = measure(port, bodies, clients, opts.duration, interval)
            load_end = time.monotonic()
            caught_up = None
            deadline = load_end + opts.catch_up_timeout
            while time.monotonic() < deadline:
                lag, dirty = _lag(engine)
                if dirty == 0:
                    caught_up = round(time.monotonic() - load_end, 1)
                    break
                time.sleep(1.0)
        finally:
            stop.set()
            watcher.join(5)
        calls = _calls(waldur) - calls_before
        during = [s for s in samples if "lag" in s and s["t"] <= opts.duration]
        lags = [s["lag"] for s in during]
        late = [(s["t"], s["lag"]) for s in during if s["t"] >= opts.duration / 2]
        rate_window = [s for s in during if s["t"] >= 5]
        calls_per_s = (
            (rate_window[-1]["calls"] - rate_window[0]["calls"])
            / (rate_window[-1]["t"] - rate_window[0]["t"])
            if len(rate_window) >= 2 and rate_window[-1]["t"] > rate_window[0]["t"]
            else 0.0
        )
        with engine.connect() as conn:
            committed = conn.execute(
                sa.text("SELECT count(*) FROM usage_reports WHERE state = 'committed'")
            ).scalar()
        mismatched = _mismatches(engine, waldur) if caught_up is not None else None
        growth = slope(late) if len(late) >= 2 else 0.0
        return {
            "resources": len(cat.resources),
            "offered_per_s": opts.rate,
            "accepted_per_s": load["reports_per_s"],
            "intake_p99_ms": load["p99_ms"],
            "waldur_rate_cap": opts.waldur_rate,
            "forward_rate_setting": opts.forward_rate,
            "forward_calls": calls,
            "forward_calls_per_s": round(calls_per_s, 1),
            "reports_committed": int(committed or 0),
            "reports_per_call": round(int(committed or 0) / calls, 1) if calls else None,
            "lag_p50_s": round(pct(lags, 50), 1) if lags else None,
            "lag_p99_s": round(pct(lags, 99), 1) if lags else None,
            "lag_max_s": round(max(lags), 1) if lags else None,
            "lag_growth_per_s": round(growth, 2),
            "lag_bounded": growth <= 0.1 and (max(lags) if lags else 0) < opts.duration,
            "caught_up_after_s": caught_up,
            "values_not_in_waldur": mismatched,
            "samples": samples,
        }
    finally:
        stack.stop()
        waldur.stop()
        redis_server.stop()
        engine.dispose()
        database.drop()


def markdown(results: dict[str, Any]) -> str:
    s = results.get("sync", {})
    f = results.get("forward", {})
    lines = ["# Waldur bridge benchmark", ""]
    if s:
        lines += [
            f"Catalog sync of {s['resources']:,} resources from the fake Waldur: full "
            f"**{s['full_seconds']} s**, incremental after {s['changed_resources']} changed "
            f"**{s['incremental_seconds']} s**.",
            "",
        ]
    if f:
        lines += [
            f"Forwarding: {f['offered_per_s']:,.0f} reports/s offered over {f['resources']:,} resources "
            f"(accepted {f['accepted_per_s']:,}/s, intake p99 {f['intake_p99_ms']} ms), Waldur capped at "
            f"{f['waldur_rate_cap']} calls/s, WALDUR_FORWARD_RATE={f['forward_rate_setting']}.",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| forward calls/s | {f['forward_calls_per_s']} |",
            f"| reports absorbed per Waldur call | {f['reports_per_call']} |",
            f"| forward lag p50 / p99 / max (s) | {f['lag_p50_s']} / {f['lag_p99_s']} / {f['lag_max_s']} |",
            f"| lag growth over the second half (s/s) | {f['lag_growth_per_s']} |",
            f"| lag bounded | {'yes' if f['lag_bounded'] else 'no'} |",
            f"| Waldur caught up after the load stopped (s) | {f['caught_up_after_s']} |",
            f"| committed values Waldur does not hold at the end | {f['values_not_in_waldur']} |",
        ]
    return "\n".join(lines) + "\n"


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--resources", type=int, default=20_000, help="resources reported on")
    p.add_argument("--rate", type=float, default=5_000, help="reports/s the providers offer")
    p.add_argument("--duration", type=float, default=120, help="seconds of load")
    p.add_argument("--waldur-rate", type=float, default=54, help="set_usage calls/s the fake Waldur takes")
    p.add_argument("--forward-rate", type=float, default=50, help="WALDUR_FORWARD_RATE")
    p.add_argument("--forward-concurrency", type=int, default=8, help="WALDUR_FORWARD_CONCURRENCY")
    p.add_argument(
        "--catch-up-timeout", type=float, default=900, help="seconds to wait for Waldur to catch up"
    )
    p.add_argument("--sync-resources", type=int, default=100_000, help="resources of the sync phase; 0: skip")
    p.add_argument("--no-forward", action="store_true", help="only the sync phase")
    p.add_argument("--web-workers", type=int, default=2)
    p.add_argument("--database-url", default="postgresql+psycopg://root@127.0.0.1:5432/postgres")
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--name", default=dt.date.today().isoformat())
    p.add_argument("--seed", type=int, default=5)
    return p


def main(argv: list[str] | None = None) -> int:
    opts = configure(argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)).parse_args(
        argv
    )
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[bridge {time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat()}
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        work = Path(tmp)
        if opts.sync_resources:
            results["sync"] = phase_sync(work, opts.database_url, opts.sync_resources, log)
            log(
                f"sync: {results['sync']['full_seconds']} s full, "
                f"{results['sync']['incremental_seconds']} s incremental"
            )
        if not opts.no_forward:
            results["forward"] = phase_forward(work, opts.database_url, opts, log)
    opts.output.mkdir(parents=True, exist_ok=True)
    stem = opts.output / f"{opts.name}-bridge"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    text = markdown(results)
    stem.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    forward = results.get("forward")
    return 0 if forward is None or forward.get("values_not_in_waldur") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
