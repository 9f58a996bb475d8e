"""Bounded HTTP load from a separate process: wrk with a Lua script, or a Python fallback.

Each load "part" is one connection with its own file of pre-signed bodies (bodies-N.txt), so
every response can be matched to the request it answers: a connection never has more than
one request in flight. A part replays its file from the top if it runs out (the reference is
built from acceptance sequences, so a repeat is harmless). Open-loop pacing: with a target
rate, each part sends on a fixed schedule (interval = parts / rate); without one, as fast as
the server answers. Only loopback addresses are accepted as targets.

Output (both engines): a text file of ``summary``/``latency`` lines, then one line per
response: ``part line status seq billing_period``.

    python -m bench.loadgen --url http://127.0.0.1:8000/path --dir D --parts 32 \
        --duration 10 [--rate 2000] [--engine wrk|python] --out results.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

LUA = r"""
-- ingest bench: one connection per wrk thread, bodies from bodies-<tid>.txt, open-loop pacing
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local tsbuf = ffi.new("bench_timespec[1]")
local function now_ms()
  ffi.C.clock_gettime(1, tsbuf)
  return tonumber(tsbuf[0].tv_sec) * 1000 + tonumber(tsbuf[0].tv_nsec) / 1e6
end

local threads = {}
local nthreads = 0

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end

function init(args)
  local dir = args[1]
  interval = tonumber(args[2])
  local path = args[3]
  local f = assert(io.open(dir .. "/bodies-" .. tid .. ".txt", "r"))
  reqs = {}
  local headers = {["Content-Type"] = "application/json"}
  for line in f:lines() do
    if #line > 0 then reqs[#reqs + 1] = wrk.format("POST", path, headers, line) end
  end
  f:close()
  n = #reqs
  nxt = 0
  cur = 0
  recs = {}
  due = nil
end

function delay()
  if interval <= 0 then return 0 end
  local t = now_ms()
  if due == nil then due = t + math.random() * interval end
  local d = due - t
  due = due + interval
  if d < -1000 then due = t + interval end
  if d <= 0 then return 0 end
  return math.floor(d + 0.5)
end

function request()
  nxt = nxt + 1
  if nxt > n then nxt = 1 end
  cur = nxt
  return reqs[nxt]
end

function response(status, headers, body)
  local seq, period = "-", "-"
  if status == 201 then
    seq = string.match(body, '"sequence":(%d+)') or "-"
    period = string.match(body, '"billing_period":"([%d%-]+)"') or "-"
  end
  recs[#recs + 1] = cur .. " " .. status .. " " .. seq .. " " .. period
end

function done(summary, latency, requests)
  local out = assert(io.open(os.getenv("BENCH_WRK_OUT"), "w"))
  local e = summary.errors
  out:write(string.format("summary %d %d %d %d %d %d %d\n", summary.duration, summary.requests,
    e.connect, e.read, e.write, e.status, e.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    out:write(string.format("latency %g %d\n", p, latency:percentile(p)))
  end
  out:write(string.format("latency max %d\n", latency.max))
  for _, t in ipairs(threads) do
    local id = t:get("tid")
    local recs = t:get("recs")
    for _, r in ipairs(recs) do out:write(id, " ", r, "\n") end
  end
  out:close()
end
"""


@dataclasses.dataclass
class LoadResult:
    duration: float  # seconds
    requests: int
    status: dict[int, int]
    errors: dict[str, int]
    latency_ms: dict[str, float]  # p50, p90, p99, p99.9, max
    records: list[tuple[int, int, int, int, str]]  # part, line (1-based), status, seq, period

    @property
    def accepted(self) -> int:
        return self.status.get(201, 0)

    @property
    def accepted_rate(self) -> float:
        return self.accepted / self.duration if self.duration else 0.0

    @property
    def request_rate(self) -> float:
        return self.requests / self.duration if self.duration else 0.0


def parse_output(path: Path) -> LoadResult:
    duration = 0.0
    requests = 0
    errors: dict[str, int] = {}
    latency: dict[str, float] = {}
    status: dict[int, int] = {}
    records: list[tuple[int, int, int, int, str]] = []
    with path.open() as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "summary":
                duration = int(parts[1]) / 1e6
                requests = int(parts[2])
                errors = dict(
                    zip(("connect", "read", "write", "status", "timeout"), map(int, parts[3:8]), strict=True)
                )
            elif parts[0] == "latency":
                name = "max" if parts[1] == "max" else f"p{parts[1]}"
                latency[name] = int(parts[2]) / 1000.0
            else:
                code = int(parts[2])
                status[code] = status.get(code, 0) + 1
                seq = int(parts[3]) if parts[3] != "-" else 0
                records.append((int(parts[0]), int(parts[1]), code, seq, parts[4]))
    return LoadResult(duration, requests, status, errors, latency, records)


def _check_loopback(url: str) -> tuple[str, int, str]:
    split = urlsplit(url)
    host = split.hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to load {host}: the benchmark only targets loopback")
    return host, split.port or 80, split.path or "/"


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run(
    url: str,
    directory: Path,
    parts: int,
    duration: float,
    rate: float = 0.0,
    engine: str = "auto",
    out: Path | None = None,
    timeout: float = 5.0,
) -> LoadResult:
    """Run one bounded load in a separate process and return its parsed result."""
    _check_loopback(url)
    out = out or directory / "load.txt"
    if out.exists():
        out.unlink()
    interval_ms = parts * 1000.0 / rate if rate > 0 else 0.0
    if engine == "auto":
        engine = "wrk" if wrk_available() else "python"
    secs = max(1, round(duration))
    if engine == "wrk":
        script = directory / "bench.lua"
        script.write_text(LUA)
        split = urlsplit(url)
        base = f"{split.scheme}://{split.netloc}"
        cmd = [
            "wrk",
            "-t",
            str(parts),
            "-c",
            str(parts),
            "-d",
            f"{secs}s",
            "--timeout",
            f"{max(1, round(timeout))}s",
            "-s",
            str(script),
            base,
            "--",
            str(directory),
            f"{interval_ms:.4f}",
            split.path,
        ]
        env = dict(os.environ, BENCH_WRK_OUT=str(out))
    else:
        cmd = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--dir",
            str(directory),
            "--parts",
            str(parts),
            "--duration",
            str(secs),
            "--interval-ms",
            f"{interval_ms:.4f}",
            "--out",
            str(out),
            "--timeout",
            str(timeout),
        ]
        env = dict(os.environ)
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=secs + timeout + 60)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"load generator failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return parse_output(out)


# -- the Python fallback: processes x threads, one blocking keep-alive connection per thread ----

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")
_SEQ = re.compile(rb'"sequence":(\d+)')
_PERIOD = re.compile(rb'"billing_period":"([\d-]+)"')


class _Conn:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _open(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        sock = self._open()
        sock.sendall(request)
        while b"\r\n\r\n" not in self.buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before headers")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        m = _STATUS.match(head)
        if not m:
            raise ConnectionError("bad status line")
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value.strip())
            elif lname == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in body")
            rest += chunk
        body, self.buf = rest[:length], rest[length:]
        if close:
            self.close()
        return int(m.group(1)), body


def _part(
    host: str,
    port: int,
    path: str,
    directory: str,
    part: int,
    interval: float,
    deadline: float,
    timeout: float,
    out: list[object],
) -> None:
    lines = [ln for ln in Path(directory, f"bodies-{part}.txt").read_bytes().split(b"\n") if ln]
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in lines
    ]
    conn = _Conn(host, port, timeout)
    latencies: list[float] = []
    records: list[tuple[int, int, int, int, str]] = []
    errors = 0
    i = 0
    due = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if interval > 0:
            if due > now:
                time.sleep(min(due - now, deadline - now))
                if time.monotonic() >= deadline:
                    break
            due = max(due + interval, time.monotonic() - 1.0)
        line = i % len(requests)
        i += 1
        started = time.perf_counter()
        try:
            status, body = conn.exchange(requests[line])
        except (OSError, ConnectionError, ValueError):
            errors += 1
            conn.close()
            continue
        latencies.append(time.perf_counter() - started)
        seq, period = 0, "-"
        if status == 201:
            m1, m2 = _SEQ.search(body), _PERIOD.search(body)
            seq = int(m1.group(1)) if m1 else 0
            period = m2.group(1).decode() if m2 else "-"
        records.append((part, line + 1, status, seq, period))
    conn.close()
    out.append((latencies, records, errors))


def _process(
    host: str,
    port: int,
    path: str,
    directory: str,
    parts: list[int],
    interval: float,
    deadline: float,
    timeout: float,
    queue: object,
) -> None:
    out: list[object] = []
    threads = [
        threading.Thread(
            target=_part, args=(host, port, path, directory, p, interval, deadline, timeout, out)
        )
        for p in parts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(out)  # type: ignore[attr-defined]


def python_main(args: argparse.Namespace) -> int:
    host, port, path = _check_loopback(args.url)
    procs = max(1, min(os.cpu_count() or 1, args.parts))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    started = time.monotonic()
    deadline = started + args.duration
    interval = args.interval_ms / 1000.0
    workers = [
        ctx.Process(
            target=_process,
            args=(
                host,
                port,
                path,
                args.dir,
                list(range(k + 1, args.parts + 1, procs)),
                interval,
                deadline,
                args.timeout,
                queue,
            ),
        )
        for k in range(procs)
    ]
    for w in workers:
        w.start()
    results = [queue.get(timeout=args.duration + args.timeout + 30) for _ in workers]
    for w in workers:
        w.join(timeout=10)
    elapsed = time.monotonic() - started
    latencies: list[float] = []
    records: list[tuple[int, int, int, int, str]] = []
    errors = 0
    for chunk in results:
        for lat, recs, errs in chunk:
            latencies.extend(lat)
            records.extend(recs)
            errors += errs
    latencies.sort()

    def pct(p: float) -> int:
        if not latencies:
            return 0
        return int(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e6)

    with open(args.out, "w") as f:
        non2xx = sum(1 for r in records if r[2] > 399)
        f.write(f"summary {int(elapsed * 1e6)} {len(records)} 0 {errors} 0 {non2xx} 0\n")
        for p in (50, 90, 99, 99.9):
            f.write(f"latency {p:g} {pct(p)}\n")
        f.write(f"latency max {int(latencies[-1] * 1e6) if latencies else 0}\n")
        for r in records:
            f.write(" ".join(map(str, r)) + "\n")
    return 0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("--url", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--parts", type=int, default=16)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--interval-ms", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--out", required=True)
    return python_main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
