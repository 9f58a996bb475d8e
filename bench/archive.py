"""The journal archive (issue 15): Redis memory, steady state and drain with and without it, in one run.

``python -m bench --archive [--duration 300] [--rate R] [--backlog 100000] ...``
(``make bench ARGS=--archive``; ``--duration 60`` for a quick run)

Two stacks of the same workload (catalog, report mix, offered rate), each with its own
PostgreSQL database, Redis server and processes:

- **without**: ``JOURNAL_ARCHIVE_DIR=off``, ``JOURNAL_RETENTION_MINUTES=1440`` (every accepted
  report stays in the Redis journal, as before the archive);
- **with**: ``JOURNAL_ARCHIVE_DIR=<a temporary directory>``, ``JOURNAL_RETENTION_MINUTES=1``
  (short, so the reconciler's trimming shows within the run).

Both run the reconciler every ``--reconcile-interval`` s (5), so the archive is the only
difference. In order:

1. **Rate** (unless ``--rate``): on the *without* stack, web + worker + beat, the unpaced
   accepted rate, then the harness's steady steps (bench.harness.Bench.steady_step) at rising
   fractions of it until one is not bounded (backlog, acceptance) or its HTTP p99 passes
   ``--max-p99-ms``; the steady runs offer ``--rate-fraction`` (0.8) of the highest bounded.
2. **Drain**: ``--backlog`` reports pre-filled straight into the journal with no worker
   running, then drained to SQL by ``--drain-workers`` Celery workers (the harness's drain
   phase, verified against the reference), alternately without, with, with, without
   (``--drain-rounds`` pairs), so a drift of the shared machine falls on both.
3. **Steady state**: each stack in turn, web + worker + beat, offered the rate for
   ``--duration`` s (one harness steady step: backlog bounded, HTTP latency, accept-to-commit
   delay, then verified). A thread samples Redis every second: ``used_memory`` (INFO memory),
   the stream's length, entries added and acknowledged by the commit group, so accepted/s and
   committed/s come from the same window.
4. **Archive on disk**: bytes of the *with* stack's archive directory per report it
   finalised, and the output of ``ingest archive stats --json``.

Results: bench/results/<name>-archive.json and .md, and <name>-archive-memory.png (Redis
used_memory against time, both runs on one chart).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import catalog as cat
from bench.bridge import _ingest, _last_json
from bench.harness import GROUP, STREAM, Bench, Options, machine_info, med, slope
from bench.report import _f, _ratio
from bench.stack import REPO, Database, Proc, RedisServer, Stack
from bench.workload import Reference
from ingest.adapters.sql import migrate

Log = Callable[[str], None]
MB = 1048576
TARGETS = {"drain_ratio": 0.95, "bytes_per_report": 150.0}


class Side(Bench):
    """One of the two stacks: its own database, Redis, processes and journal settings."""

    def __init__(self, label: str, opts: Options, workdir: Path, extra_env: dict[str, str]) -> None:
        super().__init__(opts)
        self.label = label
        self.workdir = workdir
        self.extra_env = extra_env

    def start(self, catalog: cat.Catalog) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = Database(self.o.database_url, self.workdir)
        migrate.upgrade(self.db.url)
        self.engine = sa.create_engine(self.db.url)
        self.catalog = catalog
        cat.load(self.engine, catalog)
        self.redis = RedisServer(self.workdir, self.o.redis)
        self.r = self.redis.client
        self.stack = Stack(self.workdir, self.db.url, self.redis.url, self.o.web_workers, self.extra_env)
        self.reset_journal()

    def close(self) -> None:
        for name, method in (("stack", "stop"), ("redis", "stop"), ("engine", "dispose"), ("db", "drop")):
            part = getattr(self, name, None)
            if part is not None:
                with contextlib.suppress(Exception):
                    getattr(part, method)()

    @contextlib.contextmanager
    def running(self) -> Iterator[list[Proc]]:
        """Web, ``steady_workers`` Celery workers and beat, as the Procfile runs them; yields
        the workers."""
        self.web, self.port = self.stack.web("web", "api.asgi:app")
        workers = self.start_workers(self.o.steady_workers)
        beat = self.stack.beat()
        try:
            yield workers
        finally:
            self.stack.stop([beat, *workers, self.web])

    def redis_sample(self) -> dict[str, Any]:
        """used_memory, the stream's length and entries added, and what the commit group
        acknowledged (entries read less pending: finalised in SQL)."""
        mem = self.r.info("memory")
        stream = self.r.xinfo_stream(STREAM)
        acked: int | None = None
        for g in self.r.xinfo_groups(STREAM):
            name = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
            if name == GROUP and g.get("entries-read") is not None:
                acked = int(g["entries-read"]) - int(g["pending"])
        return {
            "used_memory": int(mem["used_memory"]),
            "used_memory_rss": int(mem["used_memory_rss"]),
            "length": int(stream["length"]),
            "added": int(stream.get("entries-added", 0) or 0),
            "acked": acked if acked is not None else self.final_reports(),
            # the last trim's cut-off: only the reconciler trims here (no maxmemory), so it
            # moves once a pass that had something past the retention to trim
            "trimmed": (self.r.get(f"{STREAM}:trimmed") or b"").decode(),
        }

    def log_errors(self) -> dict[str, Any]:
        return log_errors(self.workdir)


def log_errors(workdir: Path) -> dict[str, Any]:
    """ERROR lines (plain or JSON logs) and tracebacks in the processes' logs of a stack."""
    marks = (" ERROR", "[ERROR]", '"level":"ERROR"', '"level": "ERROR"', "Traceback")
    lines = []
    for path in sorted(workdir.glob("*.log")):
        with contextlib.suppress(OSError):
            lines += [
                f"{path.stem}: {line.strip()[:400]}"
                for line in path.read_text(errors="replace").splitlines()
                if any(m in line for m in marks)
            ]
    return {"count": len(lines), "first": lines[:5]}


@contextlib.contextmanager
def sampling(side: Side, interval: float = 1.0) -> Iterator[list[dict[str, Any]]]:
    """Sample ``side``'s Redis every ``interval`` s in a thread while the block runs."""
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def loop() -> None:
        while True:
            with contextlib.suppress(Exception):  # a sample lost is not a run lost
                samples.append({"t": round(time.monotonic() - t0, 2), **side.redis_sample()})
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)


def load_window(samples: list[dict[str, Any]]) -> tuple[int, int]:
    """Indices of the last sample before the stream grew and of the last one that grew:
    the load as Redis saw it."""
    grew = [i for i in range(1, len(samples)) if samples[i]["added"] > samples[i - 1]["added"]]
    if not grew:
        return 0, max(0, len(samples) - 1)
    return grew[0] - 1, grew[-1]


def memory_summary(samples: list[dict[str, Any]], settled_after: float) -> dict[str, Any]:
    """Redis used_memory over the load window, in MB: just before the load, at its end, the
    maximum, the slope (MB/min) over the whole window and over its part ``settled_after`` s
    past the start (once the short retention's trimming has begun); the journal's bytes per
    entry added; and accepted (added) and committed (acknowledged) reports/s between the
    first and the last sample inside the load, so that neither rate counts a second without
    load."""
    if len(samples) < 3:
        return {}
    lo, hi = load_window(samples)
    window = samples[lo : hi + 1]
    t0 = window[0]["t"]
    points = [(s["t"] - t0, s["used_memory"]) for s in window]
    settled = [(t, m) for t, m in points if t >= settled_after]
    inner = window[1:-1] if len(window) > 3 else window  # both ends inside the load
    seconds = inner[-1]["t"] - inner[0]["t"]

    def per_s(key: str) -> float:
        return round((inner[-1][key] - inner[0][key]) / seconds, 1) if seconds > 0 else 0.0

    added = window[-1]["added"] - window[0]["added"]
    per_min = 60 / MB
    return {
        "window_seconds": round(window[-1]["t"] - t0, 1),
        "start_mb": round(window[0]["used_memory"] / MB, 1),
        "end_mb": round(window[-1]["used_memory"] / MB, 1),
        "max_mb": round(max(m for _, m in points) / MB, 1),
        "slope_mb_per_min": round(slope(points) * per_min, 2),
        "settled_after_s": settled_after,
        "settled_slope_mb_per_min": round(slope(settled) * per_min, 2) if len(settled) >= 10 else None,
        "bytes_per_entry_added": round((window[-1]["used_memory"] - window[0]["used_memory"]) / added)
        if added
        else None,
        "stream_length_end": window[-1]["length"],
        "added_per_s": per_s("added"),
        "committed_per_s": per_s("acked"),
        **reconcile_passes(window),
    }


def reconcile_passes(window: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the reconciler trimmed the journal during the load (with a short retention:
    every pass once the retention has passed; with 24 h: never). Intervals between two trims
    seen by the 1-s sampler (the first one starts the count)."""
    moves = [
        window[i]["t"]
        for i in range(1, len(window))
        if window[i].get("trimmed") != window[i - 1].get("trimmed")
    ]
    gaps = sorted(b - a for a, b in zip(moves, moves[1:], strict=False))
    if not gaps:
        return {"reconcile_passes": len(moves)}
    return {
        "reconcile_passes": len(moves),
        "reconcile_interval_p50_s": round(gaps[len(gaps) // 2], 1),
        "reconcile_interval_max_s": round(gaps[-1], 1),
    }


def dir_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) of every file below ``path``."""
    sizes = [f.stat().st_size for f in path.rglob("*") if f.is_file()] if path.exists() else []
    return sum(sizes), len(sizes)


# -- the phases ---------------------------------------------------------------------------------


def find_rate(side: Side, opts: argparse.Namespace, log: Log) -> dict[str, Any]:
    """The offered rate of the steady runs: ``--rate-fraction`` of the highest rate the stack
    sustains bounded (harness steady steps at rising fractions of its unpaced rate)."""
    o = side.o
    o.steady_duration = opts.calibration_seconds
    steps: list[dict[str, Any]] = []
    with side.running() as workers:
        ref = Reference()
        side.warm_up(side.port, side.warm_seconds, ref)
        side.wait_drained(60.0)
        res, split = side.load(
            side.port, side.reports_for(opts.calibration_seconds), opts.calibration_seconds
        )
        side.add_reference(ref, res, split)
        side.wait_drained(120.0)
        top = res.accepted_rate
        log(f"rate: unpaced {top:.0f} accepted/s with {o.steady_workers} worker(s) running")
        schedule = [round(top * f) for f in (0.5, 0.7, 0.85, 1.0)]
        extra = 2  # past the unpaced rate, +15% a step, while bounded
        while schedule:
            rate = schedule.pop(0)
            step = side.steady_step(rate, ref, workers, {}, {})
            p99 = float(step["latency_ms"].get("p99", 0.0))
            ok = bool(step["bounded"]) and p99 <= opts.max_p99_ms
            steps.append({**step, "p99_ok": p99 <= opts.max_p99_ms, "sustained": ok})
            log(
                f"rate: offered {rate}/s, accepted {step['accepted_per_s']:.0f}/s, HTTP p99 {p99:.0f} ms, "
                f"backlog end {step['backlog_end']}: {'sustained' if ok else 'NOT sustained'} "
                f"{', '.join(step['problems'])}"
            )
            if not ok:
                break
            if not schedule and extra:
                extra -= 1
                schedule.append(round(rate * 1.15))
        side.wait_idle()
    side.truncate()
    sustained = [s["accepted_per_s"] for s in steps if s["sustained"]]
    best = max(sustained) if sustained else 0.5 * top
    return {
        "unpaced_per_s": round(top, 1),
        "highest_sustained_per_s": best,
        "fraction": opts.rate_fraction,
        "rate": round(best * opts.rate_fraction),
        "max_p99_ms": opts.max_p99_ms,
        "steps": [
            {k: v for k, v in s.items() if k != "latency_ms"} | {"p99_ms": s["latency_ms"].get("p99")}
            for s in steps
        ],
    }


def drain_round(side: Side, archive: Path | None, log: Log) -> dict[str, Any]:
    """The harness's drain phase once: pre-fill, then time the workers to SQL."""
    if archive is not None:
        side.stack.env["JOURNAL_ARCHIVE_DIR"] = str(archive)
    side.phase_drain()
    n = str(side.o.drain_workers[0])
    run = dict(side.results["drain"]["ours"][n][0])
    run["redis_bytes_per_report"] = side.results["memory"].get("redis_bytes_per_report_prefill")
    log(
        f"drain {side.label}: {run['reports']:,} reports in {run['seconds']} s = {run['reports_per_s']:,}/s"
        f"{'' if run['complete'] else ' (capped, incomplete)'}"
    )
    return run


def steady(side: Side, rate: float, duration: float, settled_after: float, log: Log) -> dict[str, Any]:
    """One steady step of ``duration`` s at ``rate`` with Redis sampled every second."""
    side.o.steady_duration = duration
    with side.running() as workers:
        ref = Reference()
        side.warm_up(side.port, side.warm_seconds, ref)
        side.wait_drained(60.0)
        final_before = side.final_reports()
        log(f"steady {side.label}: {rate:,.0f} reports/s offered for {duration:.0f} s")
        with sampling(side) as samples:
            step = side.steady_step(rate, ref, workers, {}, {})
        side.wait_idle()
        finalised = side.final_reports()
        check = side.verify(f"steady-{side.label}", ref)
    memory = memory_summary(samples, settled_after)
    out = {
        **step,
        "memory": memory,
        "finalised_in_run": finalised - final_before,
        "finalised_total": finalised,
        "correct": check["ok"],
        "samples": samples,
    }
    log(
        f"steady {side.label}: accepted {step['accepted_per_s']:,.0f}/s, committed "
        f"{memory.get('committed_per_s', 0):,.0f}/s, HTTP p99 {step['latency_ms'].get('p99', 0):.0f} ms, "
        f"Redis {memory.get('start_mb')} -> {memory.get('end_mb')} MB "
        f"({memory.get('slope_mb_per_min')} MB/min), {'bounded' if step['bounded'] else 'NOT bounded'}"
    )
    return out


def archive_on_disk(side: Side, directory: Path, reports: int) -> dict[str, Any]:
    """Bytes of the archive directory per report finalised, and ``ingest archive stats``."""
    size, files = dir_bytes(directory)
    out: dict[str, Any] = {
        "directory_bytes": size,
        "files": files,
        "reports_finalised": reports,
        "bytes_per_report": round(size / reports, 1) if size and reports else None,
    }
    env = dict(side.stack.env, JOURNAL_ARCHIVE_DIR=str(directory))
    try:
        _secs, text = _ingest(env, "archive", "stats", "--json")
        out["stats"] = _last_json(text)
    except (RuntimeError, OSError) as exc:
        out["stats"] = None
        out["stats_error"] = str(exc)[-500:]
    return out


# -- the run --------------------------------------------------------------------------------------


def run(opts: argparse.Namespace, log: Log) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        "machine": machine_info(),
        "notes": [],
    }
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-archive-"))
    log(f"work directory {work}")
    base_env = {"RECONCILE_INTERVAL": f"{opts.reconcile_interval:g}"}
    envs = {
        "without": {**base_env, "JOURNAL_ARCHIVE_DIR": "off", "JOURNAL_RETENTION_MINUTES": "1440"},
        "with": {
            **base_env,
            "JOURNAL_ARCHIVE_DIR": str(work / "with" / "archive-steady"),
            "JOURNAL_RETENTION_MINUTES": f"{opts.retention_minutes:g}",
        },
    }
    results["settings"] = envs
    Path(envs["with"]["JOURNAL_ARCHIVE_DIR"]).mkdir(parents=True)
    sides: dict[str, Side] = {}
    try:
        catalog = cat.synthesize(opts.providers, opts.resources)
        results["catalog"] = catalog.size
        for label, env in envs.items():
            o = Options(
                providers=opts.providers,
                resources=opts.resources,
                runs=1,
                backlog=opts.backlog,
                drain_workers=(opts.drain_workers,),
                drain_timeout=opts.drain_timeout,
                steady_workers=opts.steady_workers,
                web_workers=opts.web_workers,
                database_url=opts.database_url,
                redis=opts.redis,
                loadgen=opts.loadgen,
                baselines=False,
                output=opts.output,
                seed=opts.seed,
                log=log,
            )
            sides[label] = side = Side(label, o, work / label, env)
            side.start(catalog)
            log(f"{label}: database {side.db.name}, Redis {side.redis.version} on port {side.redis.port}")
        without, with_ = sides["without"], sides["with"]
        results["machine"]["redis"] = f"{without.redis.version} ({without.redis.binary})"

        if opts.rate:
            results["rate"] = {"rate": opts.rate, "given": True}
        else:
            results["rate"] = find_rate(without, opts, log)
        rate = float(results["rate"]["rate"])
        log(f"rate: the steady runs offer {rate:,.0f} reports/s")

        drain_dir = work / "with" / "archive-drain"
        drain_dir.mkdir(parents=True)
        drains: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for _ in range(opts.drain_rounds):
            for label in ("without", "with", "with", "without"):
                side = sides[label]
                drains[label].append(drain_round(side, drain_dir if label == "with" else None, log))
        results["drain"] = drains
        # each run also appends the batches that warm its fresh workers (Bench.warm_workers)
        drain_entries = sum(r["reports"] + 600 * opts.drain_workers for r in drains["with"])
        results["archive_drain"] = archive_on_disk(with_, drain_dir, drain_entries)
        with_.stack.env["JOURNAL_ARCHIVE_DIR"] = envs["with"]["JOURNAL_ARCHIVE_DIR"]

        settled = opts.retention_minutes * 60 + 2 * opts.reconcile_interval
        results["steady"] = {}
        for label in ("without", "with"):
            results["steady"][label] = steady(sides[label], rate, opts.duration, settled, log)
        results["archive"] = archive_on_disk(
            with_, Path(envs["with"]["JOURNAL_ARCHIVE_DIR"]), results["steady"]["with"]["finalised_total"]
        )
        results["correctness"] = [
            {**c, "phase": f"{label}: {c['phase']}"}
            for label, s in sides.items()
            for c in s.results["correctness"]
        ]
        results["log_errors"] = {label: s.log_errors() for label, s in sides.items()}
        for label, s in sides.items():
            results["notes"] += [f"{label}: {n}" for n in s.results["notes"]]
    finally:
        for side in sides.values():
            side.close()
        if opts.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    summarize(results)
    return results


def summarize(res: dict[str, Any]) -> None:
    """The table's numbers: per side and with/without ratios."""
    s: dict[str, Any] = {}
    for label in ("without", "with"):
        st = res.get("steady", {}).get(label, {})
        mem = st.get("memory", {})
        drains = res.get("drain", {}).get(label, [])
        s[label] = {
            "accepted_per_s": st.get("accepted_per_s"),
            "committed_per_s": mem.get("committed_per_s"),
            "http_p99_ms": st.get("latency_ms", {}).get("p99"),
            "commit_delay_p99_ms": st.get("commit_delay_ms", {}).get("p99"),
            "bounded": st.get("bounded"),
            "drain_per_s": med([r["reports_per_s"] for r in drains]) if drains else None,
            "drain_runs_per_s": [r["reports_per_s"] for r in drains],
            "memory_start_mb": mem.get("start_mb"),
            "memory_end_mb": mem.get("end_mb"),
            "memory_max_mb": mem.get("max_mb"),
            "memory_slope_mb_per_min": mem.get("slope_mb_per_min"),
            "memory_settled_slope_mb_per_min": mem.get("settled_slope_mb_per_min"),
            "reconcile_passes": mem.get("reconcile_passes"),
            "reconcile_interval_p50_s": mem.get("reconcile_interval_p50_s"),
            "reconcile_interval_max_s": mem.get("reconcile_interval_max_s"),
            "stream_length_end": mem.get("stream_length_end"),
            "redis_bytes_per_entry": mem.get("bytes_per_entry_added"),
        }

    def ratio(key: str) -> float | None:
        a, b = s["with"].get(key), s["without"].get(key)
        return round(a / b, 3) if a and b else None

    ratios = {k: ratio(k) for k in ("accepted_per_s", "committed_per_s", "drain_per_s")}
    bpr = res.get("archive", {}).get("bytes_per_report")
    res["summary"] = {**s, "ratios": ratios, "bytes_per_report": bpr}
    res["targets"] = {
        f"drain with archive >= {TARGETS['drain_ratio']:.2f}x without": (
            None if ratios["drain_per_s"] is None else ratios["drain_per_s"] >= TARGETS["drain_ratio"]
        ),
        f"archive <= {TARGETS['bytes_per_report']:.0f} bytes a report": (
            None if bpr is None else bpr <= TARGETS["bytes_per_report"]
        ),
    }
    res["all_correct"] = bool(res.get("correctness")) and all(c.get("ok") for c in res["correctness"])


# -- output ---------------------------------------------------------------------------------------


def markdown(res: dict[str, Any], png: str | None) -> str:
    s = res.get("summary", {})
    w, a, r = s.get("without", {}), s.get("with", {}), s.get("ratios", {})
    o = res.get("options", {})
    rate = res.get("rate", {})
    mach = res.get("machine", {})
    env = res.get("settings", {})
    lines = [
        "# Journal archive benchmark",
        "",
        f"{res.get('started')}, git {mach.get('git', '?')}, {mach.get('cpus')} CPUs, Redis "
        f"{mach.get('redis', '?')}, load generator {mach.get('loadgen')}, PostgreSQL; catalog "
        f"{res.get('catalog')}; web {o.get('web_workers')} gunicorn workers, {o.get('steady_workers')} "
        f"Celery worker(s) in the steady runs, {o.get('drain_workers')} draining; total "
        f"{res.get('elapsed_seconds')} s.",
        "",
        f"- without: {_env(env.get('without', {}))}",
        f"- with: {_env(env.get('with', {}))}",
        "",
        (
            f"Offered rate {_f(rate.get('rate'))} reports/s for {o.get('duration'):g} s each: "
            + (
                "given (--rate)."
                if rate.get("given")
                else f"{rate.get('fraction')} of the highest rate the without stack sustained "
                f"({_f(rate.get('highest_sustained_per_s'))}/s: backlog bounded, HTTP p99 <= "
                f"{rate.get('max_p99_ms')} ms, in {o.get('calibration_seconds'):g}-s steps; unpaced "
                f"{_f(rate.get('unpaced_per_s'))}/s)."
            )
        ),
        "",
        "| measure | without archive | with archive | with / without |",
        "|---|---:|---:|---:|",
        f"| steady accepted reports/s | {_f(w.get('accepted_per_s'))} | {_f(a.get('accepted_per_s'))} "
        f"| {_ratio(r.get('accepted_per_s'))} |",
        f"| steady committed reports/s (acknowledged, same window) | {_f(w.get('committed_per_s'))} | "
        f"{_f(a.get('committed_per_s'))} | {_ratio(r.get('committed_per_s'))} |",
        f"| steady HTTP p99 (ms) | {_f(w.get('http_p99_ms'), 1)} | {_f(a.get('http_p99_ms'), 1)} | |",
        f"| steady accept-to-commit p99 (ms) | {_f(w.get('commit_delay_p99_ms'))} | "
        f"{_f(a.get('commit_delay_p99_ms'))} | |",
        f"| steady backlog bounded | {_f(w.get('bounded'))} | {_f(a.get('bounded'))} | |",
        f"| drain of {o.get('backlog', 0):,} pre-filled reports, reports/s (median; runs) | "
        f"{_f(w.get('drain_per_s'))} ({_runs(w)}) | {_f(a.get('drain_per_s'))} ({_runs(a)}) | "
        f"{_ratio(r.get('drain_per_s'))} |",
        f"| Redis used_memory at start / end of the load (MB) | {_f(w.get('memory_start_mb'), 1)} / "
        f"{_f(w.get('memory_end_mb'), 1)} | {_f(a.get('memory_start_mb'), 1)} / "
        f"{_f(a.get('memory_end_mb'), 1)} | |",
        f"| Redis used_memory slope, whole load (MB/min) | {_f(w.get('memory_slope_mb_per_min'), 2)} | "
        f"{_f(a.get('memory_slope_mb_per_min'), 2)} | |",
        f"| same, after retention + 2 reconciles (MB/min) | "
        f"{_f(w.get('memory_settled_slope_mb_per_min'), 2)} | "
        f"{_f(a.get('memory_settled_slope_mb_per_min'), 2)} | |",
        f"| reconciler trims in the load; interval p50 / max (s) | {_f(w.get('reconcile_passes'))}; "
        f"{_f(w.get('reconcile_interval_p50_s'), 1)} / {_f(w.get('reconcile_interval_max_s'), 1)} | "
        f"{_f(a.get('reconcile_passes'))}; {_f(a.get('reconcile_interval_p50_s'), 1)} / "
        f"{_f(a.get('reconcile_interval_max_s'), 1)} | |",
        f"| journal entries in Redis at the end | {_f(w.get('stream_length_end'))} | "
        f"{_f(a.get('stream_length_end'))} | |",
        f"| Redis used_memory net growth per report accepted (bytes) | {_f(w.get('redis_bytes_per_entry'))} "
        f"| {_f(a.get('redis_bytes_per_entry'))} | |",
        f"| archive bytes per report on disk | | {_f(s.get('bytes_per_report'), 1)} | |",
        "",
    ]
    arch = res.get("archive", {})
    drain_arch = res.get("archive_drain", {})
    if arch.get("stats") is not None:
        stats = json.dumps(arch["stats"], indent=2)
    else:
        why = (arch.get("stats_error") or "").strip().splitlines()
        stats = f"(not available: {why[-1] if why else '?'})"
    lines += [
        f"Archive after the steady run: {_f(arch.get('directory_bytes'))} bytes in {arch.get('files')} "
        f"file(s) for {_f(arch.get('reports_finalised'))} reports finalised; after the drains "
        f"(pre-filled envelopes, each drained report appended once a round): "
        f"{_f(drain_arch.get('bytes_per_report'), 1)} bytes a report.",
        "",
        "`ingest archive stats --json` after the steady run:",
        "",
        "```",
        stats,
        "```",
        "",
        "## Targets",
        "",
        "| target | met |",
        "|---|:---:|",
    ]
    for k, v in res.get("targets", {}).items():
        lines.append(f"| {k} | {'-' if v is None else 'yes' if v else '**no**'} |")
    lines += [
        "",
        "## Correctness",
        "",
        "| phase | ok | accepted | not final | mismatches |",
        "|---|:---:|---:|---:|---:|",
    ]
    for c in res.get("correctness", []):
        lines.append(
            f"| {c['phase']} | {_f(c['ok'])} | {_f(c.get('accepted'))} | "
            f"{_f(c.get('accepted_not_final'))} | {_f(c.get('usage_mismatches'))} |"
        )
    errors = res.get("log_errors", {})
    if any(e.get("count") for e in errors.values()):
        lines += [
            "",
            "Errors in the processes' logs: " + ", ".join(f"{k} {e['count']}" for k, e in errors.items()),
            "",
        ]
        lines += [f"- {k}: `{line}`" for k, e in errors.items() for line in e.get("first", [])]
    if res.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    if png:
        lines += ["", f"![Redis used_memory]({png})"]
    return "\n".join(lines) + "\n"


def _env(env: dict[str, str]) -> str:
    return ", ".join(
        f"`{k}={Path(v).name if k == 'JOURNAL_ARCHIVE_DIR' and v != 'off' else v}`" for k, v in env.items()
    )


def _runs(side: dict[str, Any]) -> str:
    return ", ".join(_f(v) for v in side.get("drain_runs_per_s", [])) or "-"


def plot(res: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        res["notes"].append("matplotlib is not installed: no plot")
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    settings = res.get("settings", {})
    for label, color in (("without", "#d62728"), ("with", "#1f77b4")):
        samples = res.get("steady", {}).get(label, {}).get("samples", [])
        if not samples:
            continue
        lo, hi = load_window(samples)
        t0 = samples[lo]["t"]
        shown = [x for x in samples if x["t"] - t0 >= -2]
        minutes = settings.get(label, {}).get("JOURNAL_RETENTION_MINUTES", "?")
        name = f"{label} archive (retention {minutes} min)"
        ax.plot([x["t"] - t0 for x in shown], [x["used_memory"] / MB for x in shown], color=color, label=name)
        ax.axvline(samples[hi]["t"] - t0, color=color, linestyle=":", linewidth=0.8)
    retention = float(res.get("options", {}).get("retention_minutes", 1)) * 60
    ax.axvline(retention, color="grey", linestyle="--", linewidth=0.8, label="short retention passed")
    rate = res.get("rate", {}).get("rate")
    ax.set_title(f"Redis used_memory under {_f(rate)} reports/s (dotted: load stops)")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("used_memory (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(res: dict[str, Any], output: Path, name: str) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-archive"
    png = plot(res, output / f"{stem}-memory.png")
    res["plot"] = png.name if png else None
    js = output / f"{stem}.json"
    js.write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = output / f"{stem}.md"
    md.write_text(markdown(res, res["plot"]))
    return [js, md, *([png] if png else [])]


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--duration", type=float, default=300, help="seconds of each steady run (default 300)")
    p.add_argument(
        "--rate",
        type=float,
        help="offered reports/s of the steady runs (default: found, see --rate-fraction)",
    )
    p.add_argument("--rate-fraction", type=float, default=0.8, help="of the highest sustained rate found")
    p.add_argument("--max-p99-ms", type=float, default=100.0, help="HTTP p99 a sustained rate keeps under")
    p.add_argument("--calibration-seconds", type=float, default=4.0, help="seconds of each rate-finding step")
    p.add_argument("--backlog", type=int, default=100_000, help="reports pre-filled for each drain run")
    p.add_argument("--drain-workers", type=int, default=2, help="Celery workers of the drain runs")
    p.add_argument(
        "--drain-rounds", type=int, default=1, help="rounds of without, with, with, without drains"
    )
    p.add_argument("--drain-timeout", type=float, default=300.0, help="cap in seconds on one drain run")
    p.add_argument("--steady-workers", type=int, default=1, help="Celery workers of the steady runs")
    p.add_argument(
        "--retention-minutes", type=float, default=1.0, help="JOURNAL_RETENTION_MINUTES with the archive"
    )
    p.add_argument("--reconcile-interval", type=float, default=5.0, help="RECONCILE_INTERVAL of both stacks")
    p.add_argument("--providers", type=int, default=20)
    p.add_argument("--resources", type=int, default=500, help="resources per provider, 3 components each")
    p.add_argument("--web-workers", type=int, default=3)
    p.add_argument("--redis", default="system", help="redis-server: system (on PATH), embedded or a path")
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument(
        "--database-url",
        default="postgresql+psycopg://root@127.0.0.1:5432/postgres",
        help="admin URL of a PostgreSQL server: a database per stack is created and dropped",
    )
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--name", default=dt.date.today().isoformat(), help="file name stem (default: the date)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, archive)")
    p.add_argument("--seed", type=int, default=5)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench --archive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    opts = configure(parser).parse_args(argv)
    if opts.database_url.startswith("sqlite"):
        parser.error("the archive benchmark runs on PostgreSQL")
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[archive {time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        results = run(opts, log)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    files = write(results, opts.output, opts.name)
    print(markdown(results, results.get("plot")))
    for f in files:
        print(f"wrote {f}")
    return 0 if results.get("all_correct") else 1


if __name__ == "__main__":
    sys.exit(main())
