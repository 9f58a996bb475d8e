"""Write bench/results/<date>.json, <date>.md and PNG plots; summarise py-spy profiles."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

ISSUE_TARGETS_NOTE = (
    "Targets from issue 5: intake >= 85% of (a) with p99 <= 25 ms at 50% "
    "load; drain >= 50% of (b) and >= 30,000 reports/s with 2 workers; steady "
    "state >= 3,500 reports/s with no backlog growth; intake >= 10x (c)."
)


def write(results: dict[str, Any], output: Path, stamp: str) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    files = []
    plots = plot(results, output, stamp)
    results["plots"] = [p.name for p in plots]
    js = output / f"{stamp}.json"
    js.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md = output / f"{stamp}.md"
    md.write_text(markdown(results, stamp))
    files += [js, md, *plots]
    return files


def _f(v: Any, digits: int = 0) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


def _ratio(v: Any) -> str:
    return "-" if v is None else f"{v * 100:.0f}%" if v < 2 else f"{v:.1f}x"


def markdown(res: dict[str, Any], stamp: str) -> str:
    m = res.get("medians", {})
    r = res.get("ratios", {})
    o = res.get("options", {})
    mach = res.get("machine", {})
    lines = [f"# ingest bench {stamp}", ""]
    lines.append(
        f"Machine: {mach.get('cpus')} CPUs, Python {mach.get('python')}, load "
        f"generator {mach.get('loadgen')}, git {mach.get('git', '?')}; load average "
        f"{_la(mach.get('loadavg_start'))} at start, {_la(mach.get('loadavg_end'))} at "
        f"end. Catalog: {res.get('catalog', {}).get('size', '-')}. Each figure is the "
        f"median of {o.get('runs')} run(s) of {o.get('duration')} s"
        f"{' (--quick)' if o.get('quick') else ''}; web: gunicorn with "
        f"{o.get('web_workers')} workers (the product's gunicorn_conf: uvicorn workers; "
        f"(c) and the sync (a) on gunicorn's sync worker)."
    )
    lines.append("")
    if res.get("intake"):
        lines += [
            "## Intake (web alone, no workers)",
            "",
            "| | accepted reports/s | p50 ms | p99 ms | ours as ratio |",
            "|---|---:|---:|---:|---:|",
            f"| **ours, max rate** | {_f(m.get('ours_max_per_s'))} | "
            f"{_f(m.get('ours_max_p50_ms'), 1)} | {_f(m.get('ours_max_p99_ms'), 1)} | |",
        ]
        if res["intake"].get("ours_half"):
            offered = res["intake"]["ours_half"][0].get("offered", 0)
            lines.append(
                f"| **ours, 50% of max** (offered ~{_f(offered)}/s) | "
                f"{_f(m.get('ours_half_per_s'))} | {_f(m.get('ours_half_p50_ms'), 1)} | "
                f"{_f(m.get('ours_half_p99_ms'), 1)} | |"
            )
        if "bare_max_per_s" in m:
            lines.append(
                f"| (a) bare Falcon + PyJWT + one LPUSH | {_f(m['bare_max_per_s'])} | "
                f"{_f(m.get('bare_max_p50_ms'), 1)} | {_f(m.get('bare_max_p99_ms'), 1)}"
                f" | {_ratio(r.get('intake_vs_a'))} |"
            )
        if "bare_sync_max_per_s" in m:
            lines.append(
                f"| (a) on gunicorn's sync worker (reference, not a ceiling) | "
                f"{_f(m['bare_sync_max_per_s'])} | {_f(m.get('bare_sync_max_p50_ms'), 1)} | "
                f"{_f(m.get('bare_sync_max_p99_ms'), 1)} | {_ratio(r.get('intake_vs_a_sync'))} |"
            )
        if "waldur_max_per_s" in m:
            lines.append(
                f"| (c) synchronous Waldur-style | {_f(m['waldur_max_per_s'])} | "
                f"{_f(m.get('waldur_max_p50_ms'), 1)} | "
                f"{_f(m.get('waldur_max_p99_ms'), 1)} | {_ratio(r.get('intake_vs_c'))} |"
            )
        before = [x.get("journal_entries_before") for x in res["intake"].get("ours_max", [])]
        if any(v is not None for v in before):
            lines += [
                "",
                "No worker runs in this phase, so the journal only grows: our "
                "maximum-rate runs started with "
                f"{', '.join(_f(v) for v in before)} entries queued.",
            ]
        d = res.get("intake_backlog_drain")
        if d:
            lines += [
                "",
                f"The {d['reports']:,} reports accepted above were then drained by 2 "
                f"workers in {d['seconds']} s ({_f(d['reports_per_s'])}/s).",
            ]
        lines.append("")
    if res.get("drain"):
        d = res["drain"]
        lines += [
            f"## Drain of a pre-filled backlog ({d['backlog']:,} reports, 3 usage lines each)",
            "",
            "| worker processes | ours reports/s | (b) raw COPY + merge reports/s | ratio |",
            "|---:|---:|---:|---:|",
        ]
        for n in d.get("ours", {}):
            incomplete = any(not x["complete"] for x in d["ours"][n])
            lines.append(
                f"| {n} | {_f(m.get(f'drain_ours_{n}_per_s'))}"
                f"{' (capped)' if incomplete else ''} | "
                f"{_f(m.get(f'drain_raw_{n}_per_s'))} | "
                f"{_ratio(r.get(f'drain_vs_b_{n}w'))} |"
            )
        lines.append("")
    if res.get("steady"):
        s = res["steady"]
        lines += [
            f"## Steady state (web + {s['workers']} worker(s) + beat + load generator)",
            "",
            f"Highest offered rate with a bounded backlog: **"
            f"{_f(m.get('steady_highest_bounded_per_s'))} reports/s**; "
            f"acceptance-to-commit delay there p50 {_f(m.get('steady_commit_delay_p50_ms'))}"
            f" ms, p99 {_f(m.get('steady_commit_delay_p99_ms'))} ms.",
            "",
            "| run | offered/s | accepted/s | non-201 | HTTP p50 / p99 ms | backlog end / max "
            "| growth/s | commit delay p50 / p99 ms | bounded |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
        ]
        for i, run in enumerate(s["runs"], start=1):
            for st in run["steps"]:
                lat = st["latency_ms"]
                lines.append(
                    f"| {i} | {_f(st['offered_per_s'])} | {_f(st['accepted_per_s'])} | "
                    f"{st['non_201']} | {_f(lat.get('p50'), 1)} / {_f(lat.get('p99'), 1)} | "
                    f"{st['backlog_end']} / {st['backlog_max']} | "
                    f"{_f(st['backlog_growth_per_s'])} | {_f(st['commit_delay_ms']['p50'])} / "
                    f"{_f(st['commit_delay_ms']['p99'])} | {_f(st['bounded'])}"
                    f"{' (' + ', '.join(st['problems']) + ')' if st.get('problems') else ''} |"
                )
        lines.append("")
    mem = res.get("memory", {})
    if mem:
        lines += ["## Memory", "", "| what | value |", "|---|---:|"]
        names = {
            "web_worker_rss_mb_intake": "web worker RSS at max intake (MB)",
            "web_worker_rss_mb_steady": "web worker RSS in steady state (MB)",
            "celery_worker_rss_mb_drain": "Celery worker (child) RSS while draining (MB)",
            "celery_worker_rss_mb_steady": "Celery worker (child) RSS in steady state (MB)",
            "redis_bytes_per_report_intake": "Redis bytes per queued report (via HTTP)",
            "redis_bytes_per_report_prefill": "Redis bytes per queued report (pre-filled)",
        }
        for k, v in mem.items():
            lines.append(f"| {names.get(k, k)} | {_f(v, 1 if isinstance(v, float) else 0)} |")
        lines.append("")
    lines += ["## Targets", "", ISSUE_TARGETS_NOTE, "", "| target | met |", "|---|:---:|"]
    for k, v in res.get("targets", {}).items():
        lines.append(f"| {k} | {'-' if v is None else 'yes' if v else '**no**'} |")
    lines += [
        "",
        "## Correctness",
        "",
        "| phase | ok | accepted | final states | not final | usage keys | mismatches |",
        "|---|:---:|---:|---|---:|---:|---:|",
    ]
    for c in res.get("correctness", []):
        states = ", ".join(f"{k} {v:,}" for k, v in sorted(c.get("final_states", {}).items()))
        lines.append(
            f"| {c['phase']} | {_f(c['ok'])} | {_f(c.get('accepted'))} | "
            f"{states or '-'} | {_f(c.get('accepted_not_final'))} | "
            f"{_f(c.get('usage_keys'))} | {_f(c.get('usage_mismatches'))} |"
        )
    for key, title in (
        ("profile_web", "web worker at max intake"),
        ("profile_worker", "Celery worker draining"),
    ):
        prof = res.get(key)
        if prof and "top_inclusive" in prof:
            lines += [
                "",
                f"## Profile: {title} (py-spy, {prof['samples']} samples"
                f"{', raw stacks in ' + prof['raw'] if prof.get('raw') else ''})",
                "",
                "Largest self time (where the CPU actually is):",
                "",
                "| function | self | inclusive |",
                "|---|---:|---:|",
            ]
            incl = dict(prof["top_inclusive"]) | dict(prof.get("ours", []))
            for name, share in prof["top_self"][:15]:
                lines.append(f"| `{name}` | {share:.1f}% | {_pct(incl.get(name))} |")
            lines += ["", "Our code, inclusive:", "", "| function | inclusive |", "|---|---:|"]
            for name, share in prof.get("ours", [])[:15]:
                lines.append(f"| `{name}` | {share:.1f}% |")
    if res.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    if res.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in res["plots"]]
    return "\n".join(lines) + "\n"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _la(v: Any) -> str:
    return "-" if not v else "/".join(f"{x:.1f}" for x in v)


def plot(res: dict[str, Any], output: Path, stamp: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        res.setdefault("notes", []).append("matplotlib is not installed: no plots")
        return []
    files: list[Path] = []
    m = res.get("medians", {})
    if res.get("intake"):
        labels, rates, p50, p99, colors = [], [], [], [], []
        for key, label, color in (
            ("ours_max", "ours (max)", "#1f77b4"),
            ("ours_half", "ours (50%)", "#6baed6"),
            ("bare_max", "(a) bare", "#999999"),
            ("bare_sync_max", "(a) on sync", "#cccccc"),
            ("waldur_max", "(c) Waldur-style", "#d62728"),
        ):
            if f"{key}_per_s" in m:
                labels.append(label)
                colors.append(color)
                rates.append(m[f"{key}_per_s"])
                p50.append(max(0.01, m.get(f"{key}_p50_ms", 0)))
                p99.append(max(0.01, m.get(f"{key}_p99_ms", 0)))
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        ax1.bar(labels, rates, color=colors)
        ax1.set_ylabel("accepted reports/s")
        ax1.set_title("Intake throughput")
        xs = list(range(len(labels)))
        ax2.bar([x - 0.2 for x in xs], p50, 0.4, color=colors, alpha=0.5, label="p50")
        ax2.bar([x + 0.2 for x in xs], p99, 0.4, color=colors, label="p99")
        ax2.set_xticks(xs, labels)
        ax2.set_ylabel("latency (ms), p50 light / p99 dark")
        ax2.set_yscale("log")
        ax2.set_title("Intake latency")
        for ax in (ax1, ax2):
            ax.tick_params(axis="x", labelrotation=15)
        fig.tight_layout()
        path = output / f"{stamp}-intake.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(path)
    if res.get("steady", {}).get("runs"):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for i, run in enumerate(res["steady"]["runs"], start=1):
            off = [s["offered_per_s"] for s in run["steps"]]
            ax1.plot(off, [s["accepted_per_s"] for s in run["steps"]], "o-", label=f"accepted, run {i}")
            ax1.plot(
                off,
                [max(0, s["backlog_growth_per_s"]) for s in run["steps"]],
                "x--",
                label=f"backlog growth/s, run {i}",
            )
            ax2.plot(
                off,
                [max(0.1, s["latency_ms"].get("p50", 0)) for s in run["steps"]],
                "o-",
                label=f"HTTP p50, run {i}",
            )
            ax2.plot(
                off,
                [max(0.1, s["latency_ms"].get("p99", 0)) for s in run["steps"]],
                "s-",
                label=f"HTTP p99, run {i}",
            )
            ax2.plot(
                off,
                [max(0.1, s["commit_delay_ms"]["p99"]) for s in run["steps"]],
                "^--",
                label=f"accept-to-commit p99, run {i}",
            )
        top = max((s["offered_per_s"] for r in res["steady"]["runs"] for s in r["steps"]), default=1)
        ax1.plot([0, top], [0, top], ":", color="grey", label="offered")
        ax1.set_xlabel("offered reports/s")
        ax1.set_ylabel("reports/s")
        ax1.set_title("Steady state: throughput vs offered load")
        ax1.legend(fontsize=7)
        ax2.set_xlabel("offered reports/s")
        ax2.set_ylabel("ms")
        ax2.set_yscale("log")
        ax2.set_title("Latency vs offered load")
        ax2.legend(fontsize=7)
        fig.tight_layout()
        path = output / f"{stamp}-steady.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(path)
    if res.get("drain", {}).get("ours"):
        ns = list(res["drain"]["ours"])
        ours = [m.get(f"drain_ours_{n}_per_s", 0) for n in ns]
        raw = [m.get(f"drain_raw_{n}_per_s", 0) for n in ns]
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = list(range(len(ns)))
        ax.bar([x - 0.2 for x in xs], ours, 0.4, label="ours (Celery drain)")
        ax.bar([x + 0.2 for x in xs], raw, 0.4, label="(b) raw COPY + merge", color="#999999")
        ax.set_xticks(xs, [f"{n} worker(s)" for n in ns])
        ax.set_ylabel("reports committed/s")
        ax.set_title("Drain rate vs workers")
        ax.legend()
        fig.tight_layout()
        path = output / f"{stamp}-drain.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(path)
    return files


_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    func, path = m.group(1), m.group(2)
    marker = "site-packages/"
    if marker in path:
        path = path.split(marker, 1)[1]
    elif "/work/" in path or path.startswith("/"):
        parts = Path(path).parts
        path = "/".join(parts[-2:])
    return f"{func} ({path})"


def profile_summary(raw: str, top: int = 25) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> top functions by inclusive and self share."""
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        self_[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    if not total:
        return {"samples": 0, "top_inclusive": [], "top_self": [], "ours": []}
    share = [(k, round(100 * v / total, 1)) for k, v in inclusive.most_common()]
    return {
        "samples": total,
        # the trunk every sample shares (gunicorn / Celery start-up frames) says nothing
        "top_inclusive": [(k, v) for k, v in share if v < 90][:top],
        "top_self": [(k, round(100 * v / total, 1)) for k, v in self_.most_common(top)],
        "ours": [
            (k, v) for k, v in share if any(f"({p}/" in k for p in ("ingest", "api", "workers", "schemas"))
        ][:top],
    }
