"""The cost of replica acknowledgement: intake with REDIS_MIN_REPLICAS_ACK 0 and 1, in one run.

``python -m bench.replicas [--duration 8] [--clients 3] [--size 1] [--appendfsync everysec]``
starts a fresh database, a Redis primary and one local replica, and our gunicorn web (no
workers: intake only) twice, once per setting. For each it measures the highest rate
(clients posting back to back) and then p50/p99 at half that rate (open loop), through
set_usages/ with batches of ``--size`` reports (1: one accept script per request, as
set_usage). Prints both and their ratios (ack=1 / ack=0).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench import catalog as bench_catalog
from bench.batchmode import _bodies, measure
from bench.stack import Database, RedisServer, Stack, free_port
from ingest.adapters.sql import migrate as db
from ingest.adapters.sql.unit_of_work import make_engine


def _replica(primary: RedisServer, work: Path, appendfsync: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    directory = work / "replica"
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            primary.binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
            "--save",
            "",
            "--replicaof",
            "127.0.0.1",
            str(primary.port),
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            str(directory / "redis.log"),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info: Any = primary.client.info("replication")
        if int(info.get("connected_slaves", 0)) >= 1 and info.get("slave0", {}).get("state") == "online":
            return proc, port
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the replica did not come online")


def run_mode(
    work: Path, database_url: str, redis_url: str, ack: int, args: argparse.Namespace, cat: Any
) -> dict[str, Any]:
    stack = Stack(
        work / f"ack{ack}",
        database_url,
        redis_url,
        args.web_workers,
        {
            "BATCH_MAX_REPORTS": str(max(args.size, 1)),
            "MAX_BACKLOG": "100000000",
            "REDIS_MIN_REPLICAS_ACK": str(ack),
            "REDIS_ACK_TIMEOUT_MS": str(args.ack_timeout_ms),
        },
    )
    (work / f"ack{ack}").mkdir(parents=True, exist_ok=True)
    rng = random.Random(ack + 7)
    try:
        _proc, port = stack.web("web", "api.asgi:app")
        warm = _bodies(cat, args.size, 200, rng)
        measure(port, warm, args.clients, 2.0)
        count = max(args.clients * 4, int(30_000 * args.duration / args.size / 2))
        top = measure(port, _bodies(cat, args.size, count, rng), args.clients, args.duration)
        half_rate = top["reports_per_s"] / 2
        interval = args.clients * args.size / max(half_rate, 1.0)
        n = args.clients * (int(args.duration / interval) + 2)
        half = measure(port, _bodies(cat, args.size, n, rng), args.clients, args.duration, interval)
    finally:
        stack.stop()
    row = {
        "min_replicas_ack": ack,
        "max_reports_per_s": top["reports_per_s"],
        "max_p99_ms": top["p99_ms"],
        "half_offered_per_s": round(half_rate),
        "half_reports_per_s": half["reports_per_s"],
        "half_p50_ms": half["p50_ms"],
        "half_p99_ms": half["p99_ms"],
    }
    print(
        f"REDIS_MIN_REPLICAS_ACK={ack}: max {row['max_reports_per_s']:,}/s (p99 {row['max_p99_ms']} ms); "
        f"at 50% ({row['half_offered_per_s']:,}/s): p50 {row['half_p50_ms']} ms, p99 {row['half_p99_ms']} ms"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--size", type=int, default=1, help="reports per set_usages request")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--ack-timeout-ms", type=int, default=100)
    parser.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"])
    parser.add_argument("--database-url", default="postgresql+psycopg://root@127.0.0.1:5432/test")
    parser.add_argument("--output", default="bench/results")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ingest-replicas-"))
    database = Database(args.database_url, work)
    primary = RedisServer(work, appendfsync=args.appendfsync)
    replica, replica_port = _replica(primary, work, args.appendfsync)
    rows: list[dict[str, Any]] = []
    try:
        db.upgrade(database.url)
        engine = make_engine(database.url)
        cat = bench_catalog.synthesize(10, 200)
        bench_catalog.load(engine, cat)
        engine.dispose()
        for ack in (0, 1):
            rows.append(run_mode(work, database.url, primary.url, ack, args, cat))
        behind = primary.client.xlen("ingest:journal") - redis.Redis(port=replica_port).xlen("ingest:journal")
    finally:
        replica.terminate()
        replica.wait(10)
        primary.stop()
        database.drop()
    zero, one = rows
    ratio = {
        "max_rate": round(one["max_reports_per_s"] / max(zero["max_reports_per_s"], 1), 3),
        "half_p99": round((one["half_p99_ms"] or 0) / max(zero["half_p99_ms"] or 1e-9, 1e-9), 3),
        "half_p99_delta_ms": round((one["half_p99_ms"] or 0) - (zero["half_p99_ms"] or 0), 2),
    }
    summary = {"rows": rows, "ack1_over_ack0": ratio, "replica_behind_at_end": behind, "size": args.size}
    print(
        f"ack=1 / ack=0: max rate x{ratio['max_rate']}, p99 at 50% x{ratio['half_p99']} "
        f"({ratio['half_p99_delta_ms']:+} ms); replica behind at the end: {behind} entries"
    )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{time.strftime('%Y-%m-%d')}-replicas.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
