"""Batch-mode intake: reports/s accepted through set_usages/ at several batch sizes, in one run.

``python -m bench.batchmode [--sizes 1,10,100,1000] [--duration 10] [--clients 3]
[--appendfsync always|everysec]``
starts a fresh database and Redis, our gunicorn web (no workers, so only intake is measured),
pre-signs distinct reports, and has client processes post gzip batches over keep-alive HTTP
for a fixed time. It counts only items answered 201, and checks at the end that the journal
holds exactly that many reports.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import multiprocessing
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench import catalog as bench_catalog
from bench import workload
from bench.harness import slope, steady_problems
from bench.stack import Database, RedisServer, Stack
from ingest.adapters.redis.journal import RedisQueue
from ingest.adapters.sql import migrate as db
from ingest.adapters.sql.unit_of_work import make_engine

PATH = "/api/marketplace-public-api/set_usages/"


def _bodies(cat: bench_catalog.Catalog, size: int, count: int, rng: random.Random) -> list[bytes]:
    """``count`` gzip bodies of ``size`` reports, each batch from one provider."""
    by_provider: dict[int, list[int]] = {}
    for index, ref in enumerate(cat.resources):
        by_provider.setdefault(ref.provider, []).append(index)
    bodies = []
    for _ in range(count):
        provider = rng.randrange(len(cat.providers))
        tokens = []
        for _ in range(size):
            ref = cat.resources[rng.choice(by_provider[provider])]
            claims = {
                "resource": ref.uuid,
                "usages": [
                    {"type": c, "amount": a}
                    for (c, _), a in zip(bench_catalog.COMPONENTS, workload._amounts_next(), strict=True)
                ],
            }
            tokens.append(workload.sign(claims, cat.providers[provider].secret))
        body = {"customer": cat.providers[provider].customer, "reports": tokens}
        bodies.append(gzip.compress(orjson.dumps(body), 1))
    return bodies


def _client(port: int, bodies: list[bytes], duration: float, out: Any, interval: float = 0.0) -> None:
    """Post ``bodies`` for ``duration`` s: back to back, or one every ``interval`` s (open
    loop: a late request is sent at once, the schedule is not shifted)."""
    accepted = requests = 0
    latencies: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.monotonic() + duration
    t0 = time.monotonic()
    i = 0
    while time.monotonic() < deadline and i < len(bodies):
        if interval > 0:
            time.sleep(max(0.0, t0 + i * interval - time.monotonic()))
        started = time.perf_counter()
        try:
            conn.request(
                "POST",
                PATH,
                body=bodies[i],
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - started)
        i += 1
        requests += 1
        if resp.status == 207:
            accepted += sum(1 for r in json.loads(data)["results"] if r["status"] == 201)
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out.put((accepted, requests, latencies))


def measure(
    port: int, bodies: list[bytes], clients: int, duration: float, interval: float = 0.0
) -> dict[str, Any]:
    queue: Any = multiprocessing.Queue()
    share = len(bodies) // clients
    procs = [
        multiprocessing.Process(
            target=_client, args=(port, bodies[k * share : (k + 1) * share], duration, queue, interval)
        )
        for k in range(clients)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    accepted = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[2])
    pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1)) if lat else (lambda q: None)
    return {
        "accepted": accepted,
        "requests": sum(r[1] for r in results),
        "seconds": round(elapsed, 2),
        "reports_per_s": round(accepted / elapsed),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
    }


def _watch(queue: RedisQueue, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    t0 = time.monotonic()
    while not stop.wait(0.25):
        samples.append((time.monotonic() - t0, queue.backlog()))


def steady(
    port: int,
    cat: bench_catalog.Catalog,
    queue: RedisQueue,
    size: int,
    rates: list[float],
    clients: int,
    duration: float,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """Web + workers + beat + load on one box: offer each rate through batches of ``size``
    and watch the backlog (accepted - acknowledged), judged as ingest bench's steady phase
    judges it (harness.steady_problems)."""
    rows = []
    for rate in rates:
        interval = clients * size / rate
        count = clients * (int(duration / interval) + 2)
        bodies = _bodies(cat, size, count, rng)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(queue, stop, samples), daemon=True)
        watcher.start()
        try:
            result = measure(port, bodies, clients, duration, interval)
        finally:
            stop.set()
            watcher.join(5)
        end = queue.backlog()
        late = [(x, y) for x, y in samples if x >= duration / 2]
        growth = slope(late)
        problems = steady_problems(rate, result["reports_per_s"], end, late, size)
        drained_by = time.monotonic() + 120
        while queue.backlog() > 0 and time.monotonic() < drained_by:
            time.sleep(0.25)
        result.update(
            offered_per_s=rate,
            batch_size=size,
            backlog_end=end,
            backlog_max=max((y for _, y in samples), default=0),
            backlog_growth_per_s=round(growth, 1),
            bounded=not problems,
            problems=problems,
        )
        rows.append(result)
        print(
            f"steady, batches of {size}, offered {rate:,.0f}/s: accepted "
            f"{result['reports_per_s']:,}/s, backlog end {end} max {result['backlog_max']}, "
            f"growth {growth:.0f}/s, {'bounded' if not problems else ', '.join(problems)}"
        )
    return rows


def _steady_report(rows: list[dict[str, Any]], workers: int) -> str:
    best = max((r["reports_per_s"] for r in rows if r["bounded"]), default=0)
    lines = [
        f"Steady state through the batch endpoint: web + {workers} worker(s) + beat + "
        f"clients on one box. Highest rate with a bounded backlog: **{best:,} reports/s**."
        "",
        "",
        "| batch size | offered/s | accepted/s | p50 ms | p99 ms | backlog end / max | growth/s | bounded |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    lines += [
        f"| {r['batch_size']} | {r['offered_per_s']:,.0f} | {r['reports_per_s']:,} | "
        f"{r['p50_ms']} | {r['p99_ms']} | {r['backlog_end']} / {r['backlog_max']} | "
        f"{r['backlog_growth_per_s']:.0f} | "
        f"{'yes' if r['bounded'] else 'no (' + ', '.join(r['problems']) + ')'} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batchmode")
    parser.add_argument("--sizes", default="1,10,100,1000")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--database-url", default="postgresql+psycopg://root@127.0.0.1:5432/test")
    parser.add_argument("--output", default="bench/results")
    parser.add_argument(
        "--appendfsync",
        default="everysec",
        choices=["always", "everysec", "no"],
        help="the Redis AOF fsync policy to measure under",
    )
    parser.add_argument(
        "--steady",
        default="",
        help="offered rates (reports/s, comma-separated): instead of intake "
        "alone, run workers and beat too and report whether the backlog "
        "stays bounded at each rate, with batches of the first --sizes",
    )
    parser.add_argument("--workers", type=int, default=1, help="Celery workers for --steady")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ingest-batchmode-"))
    database = Database(args.database_url, work)
    redis_server = RedisServer(work, appendfsync=args.appendfsync)
    stack = Stack(
        work,
        database.url,
        redis_server.url,
        args.web_workers,
        {"BATCH_MAX_REPORTS": str(max(sizes)), "MAX_BACKLOG": "100000000"},
    )
    rows = []
    try:
        db.upgrade(database.url)
        engine = make_engine(database.url)
        cat = bench_catalog.synthesize(10, 200)
        bench_catalog.load(engine, cat)
        engine.dispose()
        _proc, port = stack.web("web", "api.asgi:app")
        rng = random.Random(7)
        if args.steady:
            for index in range(args.workers):
                stack.worker(index)
            stack.beat()
            rows = steady(
                port,
                cat,
                RedisQueue(redis_server.client, "ingest"),
                sizes[0],
                [float(r) for r in args.steady.split(",")],
                args.clients,
                args.duration,
                rng,
            )
            sizes = []
        for size in sizes:
            # enough bodies that no client runs out within the duration
            count = max(args.clients * 4, int(40_000 * args.duration / size / 2))
            bodies = _bodies(cat, size, count, rng)
            before = int(redis_server.client.xlen("ingest:journal") or 0)
            result = measure(port, bodies, args.clients, args.duration)
            result["journal_added"] = int(redis_server.client.xlen("ingest:journal")) - before
            result["batch_size"] = size
            result["journal_matches"] = result["journal_added"] == result["accepted"]
            rows.append(result)
            print(
                f"batch {size:>5}: {result['reports_per_s']:>7,} reports/s accepted "
                f"({result['requests']} requests, p50 {result['p50_ms']} ms, "
                f"p99 {result['p99_ms']} ms, journal matches: {result['journal_matches']})"
            )
    finally:
        stack.stop()
        redis_server.stop()
        database.drop()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    if args.steady:
        name = f"{stamp}-batchmode-steady"
        (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
        (out / f"{name}.md").write_text(_steady_report(rows, args.workers))
        print(_steady_report(rows, args.workers))
        return 0
    name = f"{stamp}-batchmode-{args.appendfsync}"
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| batch size | reports/s accepted | requests | p50 ms | p99 ms | journal = accepted |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    lines += [
        f"| {r['batch_size']} | {r['reports_per_s']:,} | {r['requests']} | {r['p50_ms']} "
        f"| {r['p99_ms']} | {'yes' if r['journal_matches'] else 'NO'} |"
        for r in rows
    ]
    (out / f"{name}.md").write_text(
        f"appendfsync {args.appendfsync}, {args.clients} clients, {args.duration} s each\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print("\n".join(lines))
    return 0 if all(r["journal_matches"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
