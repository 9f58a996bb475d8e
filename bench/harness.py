"""The benchmark run: set up, measure every phase, verify, hand the numbers to the report.

Phases (each measurement is repeated ``runs`` times and summarised by its median):
  intake    our web alone (no workers): accepted reports/s and latency at the maximum rate
            and at 50% of it; baselines (a) and (c) at their maximum, interleaved run by run;
            then workers drain what was accepted and the result is checked against the
            load generator's reference.
  drain     a backlog pre-filled straight into the journal stream, drained by 1 and 2 Celery
            workers (drain tasks sent as needed), and by baseline (b) with 1 and 2 processes.
  steady    web + worker + beat + load together at stepped offered rates; the highest rate
            at which the backlog stays bounded and the acceptance-to-commit delay.
  memory    RSS of web and Celery workers under load; Redis bytes per queued report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gzip
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from bench import catalog as cat
from bench import loadgen
from bench.stack import REPO, Database, RedisServer, Stack, children, rss_bytes
from bench.workload import Reference, Report, envelopes, make_reports, write_bodies

PREFIX = "ingest"  # REDIS_PREFIX default
STREAM = f"{PREFIX}:journal"
GROUP = "commit"
RAW_GROUP = "raw"
SET_USAGE = "/api/marketplace-public-api/set_usage/"
DRAIN_TASK = "workers.tasks.drain"


@dataclasses.dataclass
class Options:
    providers: int = 50
    resources: int = 2000
    runs: int = 3
    duration: float = 10.0
    connections: int = 16
    paced_connections: int = 32
    web_workers: int = 3
    backlog: int = 1_000_000
    drain_workers: tuple[int, ...] = (1, 2)
    drain_timeout: float = 600.0
    steady_fractions: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0)
    steady_rates: tuple[float, ...] = ()
    steady_duration: float = 20.0
    steady_workers: int = 1
    steady_runs: int = 1
    database_url: str = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
    redis: str = "embedded"
    output: Path = REPO / "bench" / "results"
    loadgen: str = "auto"
    phases: tuple[str, ...] = ("intake", "drain", "steady")
    baselines: bool = True
    profile: bool = False
    keep: bool = False
    quick: bool = False
    seed: int = 5
    stamp: str = "bench"
    max_rate_guess: float = 10000.0
    log: Any = print


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def med(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


class Bench:
    def __init__(self, opts: Options) -> None:
        self.o = opts
        self.log = opts.log
        self.rng = random.Random(opts.seed)
        self.results: dict[str, Any] = {"notes": [], "correctness": []}
        self._loads = 0

    # -- setup ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        o = self.o
        started = time.time()
        self.results.update(
            {
                "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "options": {
                    k: (str(v) if isinstance(v, Path) else v)
                    for k, v in dataclasses.asdict(o).items()
                    if k != "log"
                },
                "machine": machine_info(),
            }
        )
        self.workdir = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
        self.log(f"work directory {self.workdir}")
        with contextlib.ExitStack() as stack:
            if not o.keep:
                stack.callback(shutil.rmtree, self.workdir, True)
            self.db = Database(o.database_url, self.workdir)
            stack.callback(self.db.drop)
            self.log(f"database {self.db.name or self.db.url}")
            from ingest.adapters.sql import migrate as migrations

            migrations.upgrade(self.db.url)
            self.engine = sa.create_engine(self.db.url)
            stack.callback(self.engine.dispose)
            t0 = time.monotonic()
            self.catalog = cat.synthesize(o.providers, o.resources)
            cat.load(self.engine, self.catalog)
            self.results["catalog"] = {
                "size": self.catalog.size,
                "resources": len(self.catalog.resources),
                "load_seconds": round(time.monotonic() - t0, 2),
            }
            self.log(f"catalog {self.catalog.size} loaded in {time.monotonic() - t0:.1f} s")
            if self.db.is_postgres:
                from bench.baselines import WALDUR_DDL

                with self.engine.begin() as conn:
                    conn.execute(sa.text(WALDUR_DDL))
            self.redis = RedisServer(self.workdir, o.redis)
            stack.callback(self.redis.stop)
            self.results["machine"]["redis"] = f"{self.redis.version} ({self.redis.binary})"
            self.r = self.redis.client
            self.stack = Stack(self.workdir, self.db.url, self.redis.url, o.web_workers)
            stack.callback(self.stack.stop)
            self.reset_journal()
            if "intake" in o.phases or "steady" in o.phases:
                self.web, self.port = self.stack.web("web", "api.asgi:app")
            for name, phase in (
                ("intake", self.phase_intake),
                ("drain", self.phase_drain),
                ("steady", self.phase_steady),
            ):
                if name not in o.phases:
                    continue
                try:
                    phase()
                except Exception as exc:  # keep what the other phases measured
                    import traceback

                    self.log(traceback.format_exc())
                    self.results["notes"].append(
                        f"phase {name} failed: {type(exc).__name__}: {str(exc)[:500]}"
                    )
                    self.results["correctness"].append({"phase": name, "ok": False, "error": str(exc)[:500]})
                    self.stack.stop([p for p in self.stack.procs if p.name != "web"])
        self.results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.results["elapsed_seconds"] = round(time.time() - started, 1)
        self.results["machine"]["loadavg_end"] = os.getloadavg()
        summarize(self.results)
        return self.results

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def warm_seconds(self) -> float:
        """Long enough for every web worker to load the catalog snapshot (about 2.5 s for
        100,000 resources on an idle machine)."""
        return 3.0 if len(self.catalog.resources) <= 10_000 else 10.0

    def reset_journal(self) -> None:
        self.r.delete(STREAM, f"{PREFIX}:seq", f"{PREFIX}:kick", "celery", "bench:bare")
        self.r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)

    def truncate(self) -> None:
        with self.engine.begin() as conn:
            if self.db.is_postgres:
                conn.execute(sa.text("TRUNCATE usage_reports, component_usages"))
            else:
                conn.execute(sa.text("DELETE FROM usage_reports"))
                conn.execute(sa.text("DELETE FROM component_usages"))

    def group_done(self, group: str) -> bool:
        """Everything in the stream was delivered to ``group`` and acknowledged."""
        tail = self.r.xrevrange(STREAM, "+", "-", count=1)
        last = _s(tail[0][0]) if tail else "0-0"
        for g in self.r.xinfo_groups(STREAM):
            if _s(g["name"]) == group:
                return _s(g["last-delivered-id"]) == last and int(g["pending"]) == 0
        return False

    def final_reports(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.text("SELECT count(*) FROM usage_reports WHERE state <> 'queued'")).scalar()
                or 0
            )

    def backlog(self) -> int:
        """Accepted but not committed: the group's lag + pending on Redis 7; elsewhere (the
        embedded Redis is 6.2) journal entries (the journal is emptied at each reset and not
        trimmed within a run) minus reports final in SQL. Not the sequence: it is clock based."""
        for g in self.r.xinfo_groups(STREAM):
            if _s(g["name"]) == GROUP and g.get("lag") is not None:
                return int(g["lag"]) + int(g["pending"])
        return int(self.r.xlen(STREAM)) - self.final_reports()

    def load(
        self, port: int, reports: list[Report], duration: float, rate: float = 0.0, parts: int | None = None
    ) -> tuple[loadgen.LoadResult, list[list[Report]]]:
        self._loads += 1
        parts = parts or (self.o.paced_connections if rate else self.o.connections)
        d = self.workdir / f"load{self._loads}"
        split = write_bodies(reports, d, parts)
        try:
            res = loadgen.run(
                f"http://127.0.0.1:{port}{SET_USAGE}", d, parts, duration, rate, engine=self.o.loadgen
            )
        finally:
            shutil.rmtree(d, ignore_errors=True)
        return res, split

    def reports_for(self, duration: float, rate: float = 0.0, dry_run: bool = False) -> list[Report]:
        n = int((rate * 1.1 if rate else self.o.max_rate_guess) * duration) + 100
        return make_reports(self.catalog, n, self.rng, dry_run)

    def add_reference(self, ref: Reference, res: loadgen.LoadResult, split: list[list[Report]]) -> None:
        last: dict[int, int] = {}
        for part, line, status, seq, period in res.records:
            last[part] = line
            if status == 201 and seq:
                ref.add(self.catalog, split[part - 1][line - 1], seq, period)
        for part, reports in enumerate(split, start=1):
            if reports:  # the request each connection had in flight when the load stopped
                ref.add_in_flight(reports[last.get(part, 0) % len(reports)])

    def web_workers(self, proc: Any) -> list[int]:
        return children(proc.pid)

    def start_workers(self, n: int) -> list[Any]:
        self.r.delete("celery")
        procs = []
        for i in range(n):
            procs.append(self.stack.worker(i + 1))
        return procs

    def celery_children(self, workers: list[Any]) -> list[int]:
        return [c for w in workers for c in children(w.pid)]

    def wait_idle(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.r.llen("celery") and not self.r.hlen("unacked"):
                return
            time.sleep(0.1)
        self.results["notes"].append("Celery tasks still running after a phase (waited 60 s)")

    def wait_drained(self, timeout: float, kicker: Kicker | None = None) -> tuple[bool, float]:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.group_done(GROUP):
                return True, time.monotonic() - start
            time.sleep(0.05)
        return False, time.monotonic() - start

    def verify(self, label: str, ref: Reference) -> dict[str, Any]:
        """Every accepted report is final in usage_reports; the usage table equals the
        reference (last accepted value per key)."""
        with self.engine.connect() as conn:
            states: dict[str, int] = {
                str(k): int(v)
                for k, v in conn.execute(sa.text("SELECT state, count(*) FROM usage_reports GROUP BY state"))
            }
            final = {
                int(s)
                for (s,) in conn.execute(sa.text("SELECT seq FROM usage_reports WHERE state <> 'queued'"))
            }
            unseen = sorted(final - ref.accepted)
            in_flight = 0
            for i in range(0, len(unseen), 1000):
                for seq, token, period in conn.execute(
                    sa.text(
                        "SELECT seq, token, billing_period FROM usage_reports WHERE seq IN "
                        "(" + ",".join(str(int(s)) for s in unseen[i : i + 1000]) + ")"
                    )
                ):
                    candidates = ref.in_flight.get(token)
                    if candidates and period is not None:
                        ref.add(self.catalog, candidates[0], int(seq), str(period)[:10])
                        in_flight += 1
            rows = conn.execute(
                sa.text(
                    "SELECT resource_uuid, component_type, billing_period, amount, report_seq "
                    "FROM component_usages"
                )
            ).all()
        got = {(str(_uuid(r[0])), r[1], str(r[2])[:10]): (int(r[4]), r[3]) for r in rows}
        missing = len(ref.accepted - final)
        unknown = len(final - ref.accepted)
        wrong = sum(
            1 for k, v in ref.best.items() if k not in got or got[k][0] != v[0] or _dec(got[k][1]) != v[1]
        )
        extra = len(set(got) - set(ref.best))
        ok = missing == 0 and wrong == 0 and extra == 0 and unknown == 0 and states.get("quarantined", 0) == 0
        out = {
            "phase": label,
            "ok": ok,
            "accepted": len(ref.accepted),
            "final_states": {str(k): int(v) for k, v in states.items()},
            "in_flight_at_stop_accepted": in_flight,
            "accepted_not_final": missing,
            "final_not_known_to_client": unknown,
            "usage_keys": len(ref.best),
            "usage_mismatches": wrong,
            "usage_extra_rows": extra,
        }
        self.results["correctness"].append(out)
        self.log(f"verify {label}: {'OK' if ok else 'FAILED'} {out}")
        return out

    # -- phase 1: intake -------------------------------------------------------------------------

    def warm_up(self, port: int, seconds: float, ref: Reference | None = None) -> None:
        """Real reports, so that every worker also imports and connects what the first
        accepted report needs (the kick's Celery producer); recorded in ``ref``."""
        res, split = self.load(port, make_reports(self.catalog, 3000, self.rng), seconds)
        if ref is not None:
            self.add_reference(ref, res, split)
        self.r.delete("bench:bare")

    def phase_intake(self) -> None:
        o = self.o
        self.log("phase intake")
        base: dict[str, tuple[Any, int]] = {}
        if o.baselines:
            base["bare"] = self.stack.web("bare", "bench.baselines:bare_app")
            base["bare_sync"] = self.stack.web(
                "bare_sync", "bench.baselines:bare_sync_app", worker_class="sync"
            )
            if self.db.is_postgres:  # Waldur runs Django on gunicorn's sync workers
                base["waldur"] = self.stack.web("waldur", "bench.baselines:waldur_app", worker_class="sync")
            else:
                self.results["notes"].append("baseline (c) needs PostgreSQL: skipped")
        ref = Reference()
        self.warm_up(self.port, self.warm_seconds, ref)
        for _, port in base.values():
            self.warm_up(port, 1.0)
        runs: dict[str, list[dict[str, Any]]] = {"ours_max": [], "ours_half": []}
        for name in base:
            runs[f"{name}_max"] = []
        web_pids = self.web_workers(self.web)
        peak_rss: dict[int, int] = {p: 0 for p in web_pids}
        redis_per_report: list[float] = []
        profile_done = not o.profile
        for run in range(o.runs):
            # ours at the maximum rate
            reports = self.reports_for(o.duration)
            queued_before = self.r.xlen(STREAM)  # nothing drains here: the journal only grows
            before = self.redis.used_memory()
            spy = None
            if not profile_done and web_pids:
                spy = start_pyspy(web_pids[0], o.duration + 30, self.workdir / "profile-web.txt")
            with sampler(web_pids, peak_rss):
                res, split = self.load(self.port, reports, o.duration)
            if spy is not None:
                self.results["profile_web"] = finish_pyspy(
                    spy, self.workdir / "profile-web.txt", o.output, f"{o.stamp}-profile-web.txt"
                )
                profile_done = True
            after = self.redis.used_memory()
            if res.accepted:
                redis_per_report.append((after - before) / res.accepted)
            self.add_reference(ref, res, split)
            runs["ours_max"].append({**summary(res), "journal_entries_before": queued_before})
            self.log(f"  run {run + 1} ours max: {fmt(res)}")
            for name, (_, port) in base.items():
                res_b, _ = self.load(port, self.reports_for(o.duration), o.duration)
                runs[f"{name}_max"].append(summary(res_b))
                self.log(f"  run {run + 1} {name} max: {fmt(res_b)}")
                self.r.delete("bench:bare")
            half = res.accepted_rate * 0.5
            if half > 0:
                res_h, split_h = self.load(self.port, self.reports_for(o.duration, half), o.duration, half)
                self.add_reference(ref, res_h, split_h)
                runs["ours_half"].append({**summary(res_h), "offered": half})
                self.log(f"  run {run + 1} ours at 50% ({half:.0f}/s): {fmt(res_h)}")
        self.results["intake"] = runs
        self.results.setdefault("memory", {})["web_worker_rss_mb_intake"] = _mb(
            max(peak_rss.values(), default=0)
        )
        self.results["memory"]["redis_bytes_per_report_intake"] = round(med(redis_per_report))
        for proc, _ in base.values():
            self.stack.stop([proc])
        # what was accepted must be committed, exactly as the reference says
        workers = self.start_workers(2)
        kicker = Kicker(self.r, self.redis.url, 2)
        queued = len(ref.accepted)
        kicker.start()
        try:
            done, secs = self.wait_drained(max(120.0, queued / 500))
        finally:
            kicker.stop()
        self.results["intake_backlog_drain"] = {
            "reports": queued,
            "seconds": round(secs, 2),
            "complete": done,
            "reports_per_s": round(queued / secs) if secs else 0,
        }
        self.log(f"  intake backlog of {queued} drained by 2 workers in {secs:.1f} s")
        self.wait_idle()
        self.verify("intake", ref)
        self.stack.stop(workers)

    # -- phase 2: drain --------------------------------------------------------------------------

    def prefill(self, count: int) -> tuple[Reference, float]:
        """Append ``count`` v1 envelopes as the web would: a block of sequences taken with
        INCRBY, then one XADD per report (fields s, i, r), pipelined 1,000 at a time."""
        ref = Reference()
        before = self.redis.used_memory()
        batch: list[tuple[Report, bytes, str, str]] = []

        def flush() -> None:
            last = int(self.r.incrby(f"{PREFIX}:seq", len(batch)))
            first = last - len(batch) + 1
            pipe = self.r.pipeline(transaction=False)
            for i, (_, raw, _, report_id) in enumerate(batch):
                pipe.xadd(STREAM, {"s": first + i, "i": report_id, "r": raw})
            pipe.execute()
            for i, (report, _, period, _) in enumerate(batch):
                ref.add(self.catalog, report, first + i, period)
            batch.clear()

        for item in envelopes(self.catalog, count, self.rng):
            batch.append(item)
            if len(batch) >= 1000:
                flush()
        if batch:
            flush()
        after = self.redis.used_memory()
        return ref, (after - before) / max(1, count)

    def reset_group(self, group: str, at: str = "0") -> None:
        with contextlib.suppress(redis.ResponseError):
            self.r.xgroup_destroy(STREAM, group)
        self.r.xgroup_create(STREAM, group, id=at)

    def warm_workers(self, n: int) -> None:
        """Give each fresh worker a batch first (it loads the catalog snapshot on its first
        batch): entries appended past the backlog, drained, then deleted again."""
        self.reset_group(GROUP, at="$")
        batch = 600 * n
        last = int(self.r.incrby(f"{PREFIX}:seq", batch))
        pipe = self.r.pipeline(transaction=False)
        for i, (_, raw, _, report_id) in enumerate(envelopes(self.catalog, batch, self.rng)):
            pipe.xadd(STREAM, {"s": last - batch + 1 + i, "i": report_id, "r": raw})
        ids = pipe.execute()
        kicker = Kicker(self.r, self.redis.url, n)
        kicker.start()
        try:
            self.wait_drained(120.0)
        finally:
            kicker.stop()
        self.wait_idle()
        for i in range(0, len(ids), 1000):
            self.r.xdel(STREAM, *ids[i : i + 1000])
        self.truncate()

    def phase_drain(self) -> None:
        o = self.o
        self.log(f"phase drain: pre-filling {o.backlog} reports")
        self.reset_journal()
        self.truncate()
        t0 = time.monotonic()
        ref, per_report = self.prefill(o.backlog)
        self.results.setdefault("memory", {})["redis_bytes_per_report_prefill"] = round(per_report)
        self.log(f"  pre-filled in {time.monotonic() - t0:.1f} s, {per_report:.0f} Redis bytes per report")
        out: dict[str, Any] = {"backlog": o.backlog, "ours": {}, "raw": {}}
        profile_done = not o.profile
        for n in o.drain_workers:
            workers = self.start_workers(n)
            self.warm_workers(n)
            ours: list[dict[str, Any]] = []
            raw: list[dict[str, Any]] = []
            for run in range(o.runs):
                self.truncate()
                self.reset_group(GROUP)
                kids = self.celery_children(workers)
                peak = {p: 0 for p in kids}
                kicker = Kicker(self.r, self.redis.url, n)
                spy = None
                if not profile_done and kids and n == 1:
                    spy = start_pyspy(kids[0], o.drain_timeout + 30, self.workdir / "profile-worker.txt")
                with sampler(kids, peak):
                    kicker.start()
                    try:
                        done, secs = self.wait_drained(o.drain_timeout)
                    finally:
                        kicker.stop()
                if spy is not None:
                    self.results["profile_worker"] = finish_pyspy(
                        spy, self.workdir / "profile-worker.txt", o.output, f"{o.stamp}-profile-worker.txt"
                    )
                    profile_done = True
                count = o.backlog if done else self.final_reports()
                item = {
                    "workers": n,
                    "reports": count,
                    "seconds": round(secs, 3),
                    "complete": done,
                    "reports_per_s": round(count / secs) if secs else 0,
                    "worker_rss_mb": _mb(max(peak.values(), default=0)),
                }
                ours.append(item)
                self.log(
                    f"  run {run + 1} ours, {n} worker(s): {item['reports_per_s']}/s"
                    f"{'' if done else ' (capped, incomplete)'}"
                )
                self.wait_idle()
                if done and run == 0:
                    self.verify(f"drain-{n}w", ref)
                if o.baselines and self.db.is_postgres:
                    raw.append(self.raw_drain(n, ref if run == 0 else None))
                    self.log(f"  run {run + 1} baseline (b), {n} process(es): {raw[-1]['reports_per_s']}/s")
            out["ours"][str(n)] = ours
            if raw:
                out["raw"][str(n)] = raw
            self.stack.stop(workers)
        if o.baselines and not self.db.is_postgres:
            self.results["notes"].append("baseline (b) needs PostgreSQL: skipped")
        self.results["drain"] = out
        self.results["memory"]["celery_worker_rss_mb_drain"] = max(
            (r["worker_rss_mb"] for runs in out["ours"].values() for r in runs), default=0
        )
        self.reset_journal()
        self.truncate()

    def raw_drain(self, n: int, ref: Reference | None) -> dict[str, Any]:
        self.truncate()
        self.reset_group(RAW_GROUP)
        go = f"bench:go:{time.monotonic_ns()}"
        procs = []
        for i in range(n):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.baselines",
                        "consume",
                        "--redis-url",
                        self.redis.url,
                        "--database-url",
                        self.db.libpq_url,
                        "--stream",
                        STREAM,
                        "--group",
                        RAW_GROUP,
                        "--name",
                        f"raw{i}",
                        "--go-key",
                        go,
                    ],
                    cwd=str(REPO),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(self.r.exists(f"{go}:ready:raw{i}") for i in range(n)):
                break
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.02)
        self.r.set(go, "1", ex=3600)
        start = time.monotonic()
        done = False
        while time.monotonic() - start < self.o.drain_timeout:
            done = self.group_done(RAW_GROUP)
            if done or all(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
        secs = time.monotonic() - start
        self.r.set(f"{go}:stop", "1", ex=3600)  # a capped run: consumers stop after a batch
        outputs = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate(timeout=10)
            outputs.append(out.decode(errors="replace"))
        failed = [o[-1500:] for p, o in zip(procs, outputs, strict=True) if p.returncode != 0]
        if failed:
            self.results["notes"].append(f"baseline (b) consumer failed: {failed[0]}")
        consumed = sum(int(m.group(1)) for o in outputs if (m := re.search(r"consumed (\d+) in", o)))
        count = self.o.backlog if done else consumed
        if ref is not None and done:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT resource_uuid, component_type, billing_period, amount, report_seq "
                        "FROM component_usages"
                    )
                ).all()
            got = {(str(_uuid(r[0])), r[1], str(r[2])[:10]): (int(r[4]), _dec(r[3])) for r in rows}
            wrong = sum(1 for k, v in ref.best.items() if got.get(k) != v)
            self.results["correctness"].append(
                {
                    "phase": f"baseline-b-{n}p",
                    "ok": wrong == 0 and len(got) == len(ref.best),
                    "usage_mismatches": wrong,
                    "usage_keys": len(ref.best),
                }
            )
        return {
            "processes": n,
            "reports": count,
            "seconds": round(secs, 3),
            "complete": done,
            "reports_per_s": round(count / secs) if secs else 0,
        }

    # -- phase 3: steady state ---------------------------------------------------------------------

    def steady_rates(self) -> list[float]:
        if self.o.steady_rates:
            return list(self.o.steady_rates)
        top = med([r["accepted_per_s"] for r in self.results.get("intake", {}).get("ours_max", [])])
        if not top:
            top = 4000.0
        return [round(top * f) for f in self.o.steady_fractions]

    def phase_steady(self) -> None:
        o = self.o
        self.log("phase steady")
        self.reset_journal()
        self.truncate()
        workers = self.start_workers(o.steady_workers)
        beat = self.stack.beat()
        all_runs: list[dict[str, Any]] = []
        ref = Reference()
        peak_web: dict[int, int] = {}
        peak_celery: dict[int, int] = {}
        try:
            rates = self.steady_rates()
            # warm the fresh workers (first task imports and connects), recorded like the rest
            warm = self.warm_seconds
            res, split = self.load(self.port, self.reports_for(warm, rates[0]), warm, rates[0])
            self.add_reference(ref, res, split)
            self.wait_drained(60.0)
            for run in range(o.steady_runs):
                steps: list[dict[str, Any]] = []
                # explicit rates are stepped as given; derived ones go on past the measured
                # maximum intake (+15% a step, at most 4 more) while the backlog stays bounded
                extra = 0 if o.steady_rates else 4
                schedule = list(rates)
                while schedule:
                    rate = schedule.pop(0)
                    step = self.steady_step(rate, ref, workers, peak_web, peak_celery)
                    steps.append(step)
                    self.log(
                        f"  run {run + 1} offered {rate:.0f}/s: accepted "
                        f"{step['accepted_per_s']:.0f}/s, backlog end {step['backlog_end']}"
                        f", growth {step['backlog_growth_per_s']:.0f}/s, delay p50/p99 "
                        f"{step['commit_delay_ms']['p50']:.0f}/"
                        f"{step['commit_delay_ms']['p99']:.0f} ms, "
                        f"{'bounded' if step['bounded'] else 'NOT bounded: '}"
                        f"{', '.join(step['problems'])}"
                    )
                    if not step["bounded"]:
                        break
                    if not schedule and extra:
                        extra -= 1
                        schedule.append(round(rate * 1.15))
                bounded = [s for s in steps if s["bounded"]]
                best = max(bounded, key=lambda s: s["accepted_per_s"]) if bounded else None
                all_runs.append(
                    {
                        "steps": steps,
                        "highest_bounded_per_s": best["accepted_per_s"] if best else 0,
                        "at_highest": best,
                    }
                )
            self.wait_idle()
            self.verify("steady", ref)
        finally:
            self.stack.stop([beat, *workers])
        self.results["steady"] = {"workers": o.steady_workers, "runs": all_runs}
        mem = self.results.setdefault("memory", {})
        mem["web_worker_rss_mb_steady"] = _mb(max(peak_web.values(), default=0))
        mem["celery_worker_rss_mb_steady"] = _mb(max(peak_celery.values(), default=0))

    def steady_step(
        self,
        rate: float,
        ref: Reference,
        workers: list[Any],
        peak_web: dict[int, int],
        peak_celery: dict[int, int],
    ) -> dict[str, Any]:
        o = self.o
        seq_before = int(self.r.get(f"{PREFIX}:seq") or 0)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        web_pids = self.web_workers(self.web)
        celery_pids = self.celery_children(workers)

        def watch() -> None:
            t0 = time.monotonic()
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    samples.append((time.monotonic() - t0, self.backlog()))
                for pids, peak in ((web_pids, peak_web), (celery_pids, peak_celery)):
                    for p in pids:
                        peak[p] = max(peak.get(p, 0), rss_bytes(p))
                stop.wait(0.25)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            res, split = self.load(
                self.port, self.reports_for(o.steady_duration, rate), o.steady_duration, rate
            )
        finally:
            stop.set()
            t.join(timeout=5)
        self.add_reference(ref, res, split)
        end_backlog = self.backlog()
        second_half = [(x, y) for x, y in samples if x >= o.steady_duration / 2 and y >= 0]
        growth = slope(second_half)
        drained, drain_secs = self.wait_drained(max(30.0, 3 * o.steady_duration))
        seq_after = int(self.r.get(f"{PREFIX}:seq") or 0)
        delays = self.commit_delays(seq_before + 1, seq_after)
        non201 = res.requests - res.accepted
        problems = steady_problems(rate, res.accepted_rate, end_backlog, second_half, 500)
        if non201 > 0.01 * max(1, res.requests):
            problems.append("non-201 answers")
        bounded = not problems
        return {
            "offered_per_s": rate,
            "accepted_per_s": round(res.accepted_rate, 1),
            "requests": res.requests,
            "non_201": non201,
            "errors": res.errors,
            "latency_ms": res.latency_ms,
            "backlog_end": end_backlog,
            "backlog_max": max((y for _, y in samples), default=0),
            "backlog_growth_per_s": round(growth, 1),
            "drained_after_s": round(drain_secs, 2),
            "drained": drained,
            "commit_delay_ms": {
                "p50": round(pct(delays, 50) * 1000, 1),
                "p99": round(pct(delays, 99) * 1000, 1),
                "n": len(delays),
            },
            "bounded": bounded,
            "problems": problems,
        }

    def commit_delays(self, lo: int, hi: int) -> list[float]:
        if hi < lo:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT accepted_at, committed_at FROM usage_reports WHERE seq BETWEEN :lo AND "
                    ":hi AND committed_at IS NOT NULL"
                ),
                {"lo": lo, "hi": hi},
            ).all()
        return [(c - a).total_seconds() for a, c in rows]


# -- small pieces ------------------------------------------------------------------------------


class Kicker:
    """Keeps one drain task queued per worker, as the web's kick and beat would."""

    def __init__(self, client: redis.Redis, redis_url: str, workers: int) -> None:
        from celery import Celery

        self.r = client
        self.workers = workers
        self.producer = Celery("ingest-bench", broker=redis_url, set_as_current=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        for _ in range(self.workers):
            self.producer.send_task(DRAIN_TASK, expires=120)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(Exception):
                if self.r.llen("celery") < self.workers:
                    self.producer.send_task(DRAIN_TASK, expires=120)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.producer.close()


@contextlib.contextmanager
def sampler(pids: list[int], peak: dict[int, int], interval: float = 0.25) -> Any:
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for p in pids:
                peak[p] = max(peak.get(p, 0), rss_bytes(p))
            stop.wait(interval)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        stop.set()
        t.join(timeout=5)


def start_pyspy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (sampling, non-blocking) on one process until finish_pyspy or ``seconds``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--nonblocking",
            "-r",
            "200",
            "-d",
            str(max(1, int(seconds))),
            "-p",
            str(pid),
            "-f",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish_pyspy(proc: subprocess.Popen[bytes], raw: Path, output: Path, stamp_name: str) -> dict[str, Any]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if not raw.exists():
        err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
        return {"error": f"py-spy produced nothing: {err}"}
    from bench.report import profile_summary

    output.mkdir(parents=True, exist_ok=True)
    text = raw.read_text()
    kept = output / (stamp_name + ".gz")  # collapsed stacks: flamegraph.pl / speedscope read them
    kept.write_bytes(gzip.compress(text.encode(), 9))
    return {**profile_summary(text), "raw": kept.name}


def summary(res: loadgen.LoadResult) -> dict[str, Any]:
    return {
        "accepted_per_s": round(res.accepted_rate, 1),
        "requests_per_s": round(res.request_rate, 1),
        "requests": res.requests,
        "accepted": res.accepted,
        "status": {str(k): v for k, v in res.status.items()},
        "errors": res.errors,
        "latency_ms": res.latency_ms,
        "seconds": round(res.duration, 2),
    }


def fmt(res: loadgen.LoadResult) -> str:
    lat = res.latency_ms
    return (
        f"{res.accepted_rate:.0f} accepted/s ({res.requests} requests, status "
        f"{dict(sorted(res.status.items()))}), p50 {lat.get('p50', 0):.1f} ms, "
        f"p99 {lat.get('p99', 0):.1f} ms"
    )


def steady_problems(
    rate: float, accepted_rate: float, end_backlog: int, second_half: list[tuple[float, int]], batch: int
) -> list[str]:
    """Why a steady-state step was not bounded (empty: it was): less than 90% of the offered
    rate accepted, more than two batches or half a second of load left at the end, or a
    backlog that grew over the second half of the step to a size that matters."""
    problems = []
    if end_backlog > max(2 * batch, 0.5 * rate):
        problems.append("backlog left at the end")
    late_max = max((y for _, y in second_half), default=0)
    if slope(second_half) > 0.05 * rate and late_max > max(batch, 0.25 * rate):
        problems.append("backlog growing")
    if accepted_rate < 0.9 * rate:
        problems.append("accepted < 90% of offered")
    return problems


def slope(points: list[tuple[float, int]]) -> float:
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [float(p[1]) for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _uuid(v: Any) -> Any:
    import uuid

    return v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))


def _dec(v: Any) -> Any:
    from decimal import Decimal

    return Decimal(str(v)).quantize(Decimal("0.01"))


def _mb(b: int) -> float:
    return round(b / 1048576, 1)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        info["git"] = rev + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib import metadata

    versions = {}
    for pkg in (
        "falcon",
        "gunicorn",
        "celery",
        "redis",
        "PyJWT",
        "SQLAlchemy",
        "psycopg",
        "msgspec",
        "orjson",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    info["versions"] = versions
    info["loadgen"] = "wrk" if loadgen.wrk_available() else "python"
    return info


TARGETS = {
    "intake_vs_a": 0.85,
    "p99_half_load_ms": 25.0,
    "drain_vs_b_2w": 0.5,
    "drain_2w_per_s": 30000.0,
    "steady_per_s": 3500.0,
    "intake_vs_c": 10.0,
}


def summarize(res: dict[str, Any]) -> None:
    """Medians, ratios to the baselines and the issue's targets."""
    m: dict[str, Any] = {}
    intake = res.get("intake", {})
    for key, runs in intake.items():
        m[f"{key}_per_s"] = med([r["accepted_per_s"] for r in runs])
        m[f"{key}_p50_ms"] = med([r["latency_ms"].get("p50", 0) for r in runs])
        m[f"{key}_p99_ms"] = med([r["latency_ms"].get("p99", 0) for r in runs])
    drain = res.get("drain", {})
    for kind in ("ours", "raw"):
        for n, runs in drain.get(kind, {}).items():
            m[f"drain_{kind}_{n}_per_s"] = med([r["reports_per_s"] for r in runs])
    steady = res.get("steady", {})
    if steady.get("runs"):
        m["steady_highest_bounded_per_s"] = med([r["highest_bounded_per_s"] for r in steady["runs"]])
        best = [r["at_highest"] for r in steady["runs"] if r.get("at_highest")]
        if best:
            m["steady_commit_delay_p50_ms"] = med([b["commit_delay_ms"]["p50"] for b in best])
            m["steady_commit_delay_p99_ms"] = med([b["commit_delay_ms"]["p99"] for b in best])
            m["steady_latency_p99_ms"] = med([b["latency_ms"].get("p99", 0) for b in best])
    res["medians"] = m

    def ratio(a: str, b: str) -> float | None:
        return round(m[a] / m[b], 3) if m.get(a) and m.get(b) else None

    ratios = {
        "intake_vs_a": ratio("ours_max_per_s", "bare_max_per_s"),
        "intake_vs_a_sync": ratio("ours_max_per_s", "bare_sync_max_per_s"),
        "intake_vs_c": ratio("ours_max_per_s", "waldur_max_per_s"),
        "drain_vs_b_1w": ratio("drain_ours_1_per_s", "drain_raw_1_per_s"),
        "drain_vs_b_2w": ratio("drain_ours_2_per_s", "drain_raw_2_per_s"),
    }
    res["ratios"] = ratios

    def met(value: float | None, target: float, higher: bool = True) -> bool | None:
        if value is None:
            return None
        return value >= target if higher else value <= target

    res["targets"] = {
        "intake >= 85% of (a)": met(ratios["intake_vs_a"], TARGETS["intake_vs_a"]),
        "p99 <= 25 ms at 50% load": met(
            m.get("ours_half_p99_ms") if intake.get("ours_half") else None,
            TARGETS["p99_half_load_ms"],
            higher=False,
        ),
        "drain >= 50% of (b), 2 workers": met(ratios["drain_vs_b_2w"], TARGETS["drain_vs_b_2w"]),
        "drain >= 30,000/s, 2 workers": met(m.get("drain_ours_2_per_s"), TARGETS["drain_2w_per_s"]),
        "steady >= 3,500/s, bounded backlog": met(
            m.get("steady_highest_bounded_per_s"), TARGETS["steady_per_s"]
        ),
        "intake >= 10x (c)": met(ratios["intake_vs_c"], TARGETS["intake_vs_c"]),
    }
    res["all_correct"] = all(c.get("ok") for c in res.get("correctness", []))
