"""``ingest waldur status`` and ``ingest waldur failures``: usage forwarding to Waldur (the
outbox, the forward quarantine, the last catalog sync)."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from ingest import config
from ingest.cli.context import Add, CliError, print_json, record, runtime, table, utc_text

_MOMENTS = (
    "oldest_dirty_since",
    "created_at",
    "resolved_at",
    "last_sync_at",
    "last_full_at",
    "last_error_at",
)


def _moments(doc: Any) -> Any:
    """Every moment of ``doc`` as ISO 8601 UTC (``until``/``at`` of the Redis notes are Unix times)."""
    if isinstance(doc, dict):
        return {
            k: utc_text(v) if k in _MOMENTS or k in ("until", "at") else _moments(v) for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_moments(v) for v in doc]
    return doc


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sync_summary(summary: Any) -> str:
    """``full (asked for (--full)): resources +2 ~0 -0, ...`` from a sync's JSON summary."""
    if not isinstance(summary, dict):
        return f"summary {summary or '-'}"
    parts = [
        f"{kind.replace('_', ' ')} +{c.get('added', 0)} ~{c.get('updated', 0)} -{c.get('removed', 0)}"
        for kind, c in (summary.get("changes") or {}).items()
        if isinstance(c, dict)
    ]
    secrets = summary.get("secrets") or {}
    if isinstance(secrets, dict) and secrets.get("rotated"):
        parts.append(f"{secrets['rotated']} secret(s) rotated")
    if isinstance(secrets, dict) and secrets.get("unreadable"):
        parts.append(f"{len(secrets['unreadable'])} secret(s) unreadable")
    return f"{summary.get('mode', '?')} ({summary.get('reason', '-')}): " + (", ".join(parts) or "no changes")


def cmd_status(args: argparse.Namespace, settings: config.Settings) -> int:
    if not settings.bridge_enabled:
        if args.json:
            print_json({"bridge": "off"})
        else:
            print("bridge off: WALDUR_URL is not set (standalone: nothing is forwarded to Waldur)")
        return 0
    found = runtime().forward_status()
    doc = _moments({"bridge": "on", "waldur_url": settings.waldur_url, **found})
    if args.json:
        print_json(doc)
        return 0
    sync = doc["catalog_sync"]
    hold = doc["hold"]
    error = doc["last_forward_error"]
    lines = [
        f"bridge on: {settings.waldur_url} (server version {doc['server_version'] or 'not read yet'})",
        "catalog sync: "
        + (
            "never ran"
            if not sync
            else f"last {sync['last_sync_at'] or '-'} (full {sync['last_full_at'] or '-'}), "
            f"{_sync_summary(sync['summary'])}, last error {sync['last_error'] or 'none'}"
            + (f" at {sync['last_error_at']}" if sync["last_error_at"] else "")
        ),
        f"outbox: {doc['dirty_keys']} dirty keys ({doc['pending_reports']} reports), "
        f"oldest dirty {_age(doc['oldest_dirty_age_seconds'])}"
        + (f" (since {doc['oldest_dirty_since']})" if doc["oldest_dirty_since"] else "")
        + f", {doc['in_flight']} in flight, {doc['waiting_retry']} waiting to retry",
        f"forward quarantine: {doc['failed_keys']} keys; unresolved failures by reason: "
        + (", ".join(f"{r} {n}" for r, n in doc["failures_by_reason"].items()) or "none"),
        "hold: "
        + (
            "none"
            if not hold
            else str(hold)
            if isinstance(hold, str)
            else f"{hold['kind']} until {hold['until']} ({hold['reason']})"
        ),
        "last forward error: "
        + (
            "none"
            if not error
            else str(error)
            if isinstance(error, str)
            else f"{error['at']} {error['kind']} HTTP {error['status']} for {error['resource']} "
            f"{error['billing_period']}: {' '.join(str(error['body']).split())[:200]}"
        ),
        f"forward rate: {doc['forward_rate']}/s, concurrency {doc['forward_concurrency']} per process",
    ]
    print("\n".join(lines))
    return 0


def _bridge(settings: config.Settings) -> None:
    if not settings.bridge_enabled:
        raise CliError("the bridge is off (WALDUR_URL is not set): nothing is forwarded")


def cmd_failures_list(args: argparse.Namespace, settings: config.Settings) -> int:
    rows = _moments(runtime().outbox.failures(include_resolved=args.all))
    if args.json:
        print_json(rows)
    elif not rows:
        print("no forward failures" + ("" if args.all else " unresolved"))
    else:
        table(
            rows, ["id", "resource", "billing_period", "reason", "status", "attempts", "created_at", "body"]
        )
    return 0


def cmd_failures_show(args: argparse.Namespace, settings: config.Settings) -> int:
    found = runtime().outbox.failure(args.id)
    if found is None:
        raise CliError(f"no forward failure {args.id}")
    doc = _moments(found)
    if args.json:
        print_json(doc)
    else:
        record(doc)
    return 0


def cmd_failures_retry(args: argparse.Namespace, settings: config.Settings) -> int:
    _bridge(settings)
    if not args.ids and not args.all:
        raise CliError("name failure ids, or --all")
    if args.ids and args.all:
        raise CliError("name failure ids or --all, not both")
    rt = runtime()
    done = rt.outbox.retry(None if args.all else args.ids, dt.datetime.now(dt.UTC))
    missing = sorted(set(args.ids or []) - set(done))
    if missing:
        print(f"not found or already resolved: {', '.join(map(str, missing))}")
    if not done:
        print("nothing to retry")
        return 1 if missing else 0
    try:
        rt.kick_forward()
        when = "now"
    except Exception:  # the broker is down: beat's pass takes them
        when = "on the next forward pass"
    print(
        f"retrying {len(done)} failure(s) ({', '.join(map(str, done))}): "
        f"their keys are dirty again, forwarded {when}"
    )
    return 0


def register(group: Any, add: Add) -> None:
    p = add("status", cmd_status, "the bridge: catalog sync, outbox, forward quarantine, holds", group)
    p.add_argument("--json", action="store_true", help="print JSON")
    failures = group.add_parser(
        "failures", help="the forward quarantine: what Waldur refused"
    ).add_subparsers(dest="failures_sub", required=True)
    p = add("list", cmd_failures_list, "unresolved forward failures", failures)
    p.add_argument("--all", action="store_true", help="resolved ones too")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("show", cmd_failures_show, "one forward failure: Waldur's status and body, the request", failures)
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("retry", cmd_failures_retry, "make failed keys dirty again (after fixing the cause)", failures)
    p.add_argument("ids", nargs="*", type=int, metavar="ID")
    p.add_argument("--all", action="store_true", help="every unresolved failure")
