"""Memory of a web worker holding a large catalog (issue 14), and intake latency while it reloads.

    python -m bench.catalog_memory --resources 100000 [--database-url sqlite|postgresql+psycopg://...]
        [--web-workers 1] [--rate 1000] [--seconds 8] [--no-load] [--json out.json]

1. builds a synthetic catalog (bench.catalog: 10 providers, one offering of 3 components each,
   one plan period per resource) in a fresh database;
2. times ``SqlCatalog.snapshot()`` in this process (the reload a worker does), and the memory
   the snapshot keeps (tracemalloc, a separate run);
3. starts the real web (gunicorn with api.gunicorn_conf, as bench.stack does; its
   post_worker_init loads the catalog) and reports VmRSS, PSS (/proc/PID/smaps_rollup) and
   VmHWM of each worker;
4. unless --no-load: paced set_usage load (bench.loadgen) twice, quiet and with the catalog
   version bumped every --bump seconds (CATALOG_REFRESH=1, so the worker's background thread
   reloads the whole snapshot over and over), and reports p50/p99/max of each, then the
   workers' memory again --settle seconds later;
5. the same web over an empty catalog (unless --no-empty-baseline): a worker's memory that is
   not the catalog's.

The latencies are only comparable between runs on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import catalog as cat
from bench import loadgen
from bench.stack import Database, RedisServer, Stack, children
from bench.workload import make_reports, write_bodies
from ingest.adapters.sql import migrate
from ingest.adapters.sql.catalog import SqlCatalog

SET_USAGE = "/api/marketplace-public-api/set_usage/"


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM and (if readable) PSS of a process, in MB."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(rest.split()[0]) / 1024
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                found["Pss"] = int(line.split()[1]) / 1024
    return {k: round(v, 1) for k, v in found.items()}


def time_snapshot(url: str, runs: int) -> dict[str, Any]:
    engine = sa.create_engine(url)
    source = SqlCatalog(engine)
    source.version()  # connect once, outside the timing
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        snap = source.snapshot()
        times.append(time.perf_counter() - t0)
        del snap
    gc.collect()
    tracemalloc.start()
    snap = source.snapshot()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    resources = len(snap.resources)
    engine.dispose()
    return {
        "seconds_median": round(statistics.median(times), 3),
        "seconds": [round(t, 3) for t in times],
        "traced_kept_mb": round(kept / 2**20, 1),
        "traced_peak_mb": round(peak / 2**20, 1),
        "bytes_per_resource": round(kept / max(1, resources)),
    }


def load(
    port: int, reports: list[Any], workdir: Path, seconds: float, rate: float, parts: int
) -> dict[str, Any]:
    d = workdir / f"load-{time.monotonic_ns()}"
    write_bodies(reports, d, parts)
    try:
        res = loadgen.run(f"http://127.0.0.1:{port}{SET_USAGE}", d, parts, seconds, rate)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {
        "requests": res.requests,
        "rate": round(res.request_rate),
        "status": {str(k): v for k, v in sorted(res.status.items())},
        "errors": res.errors,
        "latency_ms": res.latency_ms,
    }


class Bumper(threading.Thread):
    """Bumps catalog_meta.version every ``every`` seconds: each bump makes every web worker
    reload its snapshot at its next check (CATALOG_REFRESH seconds)."""

    def __init__(self, engine: sa.Engine, every: float) -> None:
        super().__init__(daemon=True)
        self.engine, self.every = engine, every
        self.stopped = threading.Event()
        self.bumps = 0

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            with self.engine.begin() as conn:
                conn.execute(sa.text("UPDATE catalog_meta SET version = version + 1 WHERE id = 1"))
            self.bumps += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.catalog_memory", description=__doc__.split("\n")[0])
    p.add_argument("--resources", type=int, default=100_000)
    p.add_argument("--providers", type=int, default=10)
    p.add_argument("--database-url", default="sqlite", help="sqlite (a file) or a PostgreSQL admin URL")
    p.add_argument("--web-workers", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="timed snapshot builds")
    p.add_argument("--rate", type=float, default=1000.0, help="paced reports per second")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0, help="each load")
    p.add_argument("--bump", type=float, default=2.0, help="seconds between catalog version bumps")
    p.add_argument("--settle", type=float, default=4.0, help="seconds after the reloads before measuring")
    p.add_argument("--no-load", action="store_true", help="memory and build time only")
    p.add_argument(
        "--no-empty-baseline",
        dest="empty_baseline",
        action="store_false",
        help="skip the reference web worker over an empty catalog",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    o = p.parse_args(argv)
    out: dict[str, Any] = {"resources": o.resources, "providers": o.providers}

    def say(text: str) -> None:
        print(f"[catalog_memory] {text}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="ingest-catmem-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        db = Database(o.database_url, workdir)
        stack.callback(db.drop)
        migrate.upgrade(db.url)
        engine = sa.create_engine(db.url)
        stack.callback(engine.dispose)
        t0 = time.monotonic()
        catalog = cat.synthesize(o.providers, o.resources // o.providers)
        cat.load(engine, catalog)
        say(f"catalog {catalog.size} in {time.monotonic() - t0:.1f} s ({db.name or db.url})")

        out["snapshot"] = time_snapshot(db.url, o.runs)
        say(f"snapshot: {out['snapshot']}")

        redis_server = RedisServer(workdir)
        stack.callback(redis_server.stop)
        web_stack = Stack(workdir, db.url, redis_server.url, o.web_workers, {"CATALOG_REFRESH": "1"})
        stack.callback(web_stack.stop)
        web, port = web_stack.web("web", "api.asgi:app", timeout=180)
        workers = children(web.pid)
        time.sleep(2.0)  # past post_worker_init: the catalog loaded, gc tuned
        out["web"] = {
            "workers": {str(pid): proc_memory(pid) for pid in workers},
            "master": proc_memory(web.pid),
        }
        say(f"web after start: {out['web']}")

        if not o.no_load:
            rng = random.Random(14)
            n = int(o.rate * o.seconds * 1.2) + 100
            load(port, make_reports(catalog, min(n, 2000), rng), workdir, 2.0, o.rate, o.connections)  # warm
            out["intake_quiet"] = load(
                port, make_reports(catalog, n, rng), workdir, o.seconds, o.rate, o.connections
            )
            say(f"intake, quiet: {out['intake_quiet']}")
            bumper = Bumper(engine, o.bump)
            bumper.start()
            try:
                out["intake_reloading"] = load(
                    port, make_reports(catalog, n, rng), workdir, o.seconds, o.rate, o.connections
                )
            finally:
                bumper.stopped.set()
                bumper.join()
            out["intake_reloading"]["version_bumps"] = bumper.bumps
            say(f"intake, reloading: {out['intake_reloading']}")
            time.sleep(o.settle)  # the last reload done, its leftovers released
            out["web_after_reloads"] = {str(pid): proc_memory(pid) for pid in workers}
            say(f"web after reloads: {out['web_after_reloads']}")
        web_stack.stop()

        if o.empty_baseline:  # the same web over an empty catalog: what is not the catalog's
            (workdir / "empty").mkdir()
            empty = Database(o.database_url, workdir / "empty")
            stack.callback(empty.drop)
            migrate.upgrade(empty.url)
            bare = Stack(workdir / "empty", empty.url, redis_server.url, 1, {"CATALOG_REFRESH": "1"})
            stack.callback(bare.stop)
            bare_web, _ = bare.web("web-empty", "api.asgi:app", timeout=180)
            time.sleep(2.0)
            out["web_empty_catalog"] = {str(pid): proc_memory(pid) for pid in children(bare_web.pid)}
            say(f"web over an empty catalog: {out['web_empty_catalog']}")

    text = json.dumps(out, indent=2)
    print(text)
    if o.json:
        o.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
