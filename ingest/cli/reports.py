"""Operator commands: ``ingest reports``, ``ingest quarantine``, ``ingest replay`` and
``ingest stats`` (status, quarantine handling, journal replay, queue statistics)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ingest import config
from ingest.cli import arguments
from ingest.cli.context import Add, CliError, print_json, readable, record, runtime, table


def cmd_reports_show(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.services import operations

    status = operations.report_status(runtime(), args.id, archive=True)
    if status is None:
        raise CliError(f"no report {args.id} in SQL, in the journal or in the archive")
    if args.json:
        print_json(status)
    else:
        record(status)
    return 0


def _quarantine_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    ids = getattr(args, "ids", None) or None
    filtered = any(getattr(args, n, None) for n in ("customer", "resource", "reason", "since"))
    if hasattr(args, "all") and not (ids or args.all or filtered):
        raise CliError(
            "name report ids, or give --all or a filter (--customer, --resource, --reason, --since)"
        )
    return runtime().read_model.quarantined(args.customer, args.resource, args.reason, args.since, ids)


def cmd_quarantine_list(args: argparse.Namespace, settings: config.Settings) -> int:
    rows = _quarantine_rows(args)
    for r in rows:
        r.pop("envelope", None)
        r.pop("token", None)
    if args.json:
        print_json(rows)
        return 0
    table(rows, ["id", "seq", "customer", "resource", "accepted_at", "reason_code", "reason", "deliveries"])
    print(f"{len(rows)} quarantined report(s)")
    return 0


def cmd_quarantine_show(args: argparse.Namespace, settings: config.Settings) -> int:
    rows = runtime().read_model.quarantined(ids=[args.id])
    if not rows:
        raise CliError(f"no quarantined report {args.id}")
    row = rows[0]
    row["envelope_bytes"] = len(row.pop("envelope") or b"")
    if args.json:
        print_json(row)
    else:
        record(row)
    return 0


def cmd_quarantine_replay(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.services import operations

    if args.json and not args.dry_run:
        raise CliError("--json prints what would be replayed: add --dry-run")
    rows = _quarantine_rows(args)
    if args.dry_run and args.json:
        print_json([{k: r[k] for k in ("id", "seq", "customer", "resource", "reason_code")} for r in rows])
        return 0
    if not rows:
        print("nothing to replay")
        return 0
    if args.dry_run:
        table(rows, ["id", "seq", "resource", "reason_code"])
        print(f"would replay {len(rows)} report(s)")
        return 0
    outcome = operations.replay_quarantined(runtime(), rows)
    print(
        f"replayed {len(rows)}: {len(outcome.committed)} committed, "
        f"{len(outcome.superseded)} superseded, {len(outcome.quarantined)} still quarantined"
    )
    return 0 if not outcome.quarantined else 1


def cmd_quarantine_purge(args: argparse.Namespace, settings: config.Settings) -> int:
    rows = _quarantine_rows(args)
    if not rows:
        print("nothing to purge")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("refusing to purge without confirmation: add --yes")
        answer = input(f"purge {len(rows)} quarantined report(s) for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing purged")
            return 1
    gone = runtime().read_model.delete_reports([r["id"] for r in rows])
    print(f"purged {gone} report(s)")
    return 0


class ArchiveProblems:
    """Unreadable parts of the archive a replay skipped: each named on stderr as it is met,
    and the command's exit status says some were."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def __call__(self, problem: object) -> None:
        if str(problem) not in self.found:
            self.found.append(str(problem))
            print(f"error: archive: skipped {problem} (run `ingest archive verify`)", file=sys.stderr)


def cmd_replay(args: argparse.Namespace, settings: config.Settings) -> int:
    import datetime as dt

    from ingest.services import operations

    rt = runtime()
    if args.until and args.until < args.since:
        raise CliError("--until is before --since")
    if args.json and not args.dry_run:
        raise CliError("--json prints what would change: add --dry-run")
    # the window ends now when --until is not given: the count and the replay read the same
    # reports, whatever is accepted meanwhile
    until = args.until or dt.datetime.now(dt.UTC)
    problems = ArchiveProblems()
    if args.dry_run:
        plan = operations.plan_replay(rt, args.since, until, args.customer, args.resource, problems)
        if args.json:
            print_json(
                {
                    "entries": plan.entries,
                    "already_final": plan.skipped_final,
                    "changes": plan.changes,
                    "archive_problems": problems.found,
                }
            )
            return 1 if problems.found else 0
        table(
            plan.changes,
            ["resource", "component", "billing_period", "current", "current_seq", "replayed", "replayed_seq"],
        )
        print(
            f"{plan.entries} journal report(s) in the window, {plan.skipped_final} already "
            f"final in SQL, {len(plan.changes)} usage value(s) would change"
        )
        return 1 if problems.found else 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    window = (rt, args.since, until, args.customer, args.resource, args.start_after)
    total = sum(1 for _ in operations.journal_window(*window, on_problem=problems))
    last = args.start_after
    try:
        with Progress(
            TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}")
        ) as bar:
            task = bar.add_task("replay", total=total, last="")

            def step(n: int, entry_id: str) -> None:
                nonlocal last
                last = entry_id
                bar.update(task, advance=n, last=entry_id)

            outcome = operations.replay(*window, settings.batch_size, step, problems)
    except KeyboardInterrupt:
        print(f"interrupted; resume with --start-after {last}" if last else "interrupted")
        return 130
    done = len(outcome.committed) + len(outcome.superseded) + len(outcome.quarantined) + len(outcome.skipped)
    print(
        f"replayed {done} report(s): {len(outcome.committed)} committed, "
        f"{len(outcome.superseded)} superseded, {len(outcome.quarantined)} quarantined, "
        f"{len(outcome.skipped)} already final"
    )
    if problems.found:
        print(f"error: {len(problems.found)} unreadable part(s) of the archive skipped", file=sys.stderr)
        return 1
    return 0


def cmd_stats(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.services import operations

    rt = runtime()
    while True:
        doc = readable(operations.stats(rt))  # last_reconcile.at: ISO 8601 UTC, not epoch
        if args.json:
            print_json(doc, indent=None)  # one line per sample: --watch --json is JSON lines
        else:
            rows = [
                {"metric": k, "value": json.dumps(v, default=str)} for k, v in doc.items() if k != "journal"
            ]
            for k, v in (doc.get("journal") or {}).items():  # one line each: the loss is long
                rows.append({"metric": f"journal.{k}", "value": v if isinstance(v, str) else json.dumps(v)})
            table(rows, ["metric", "value"])
        if not args.watch:
            return 0
        time.sleep(args.interval)


def register(sub: Any, add: Add) -> None:
    reports = sub.add_parser("reports", help="accepted reports").add_subparsers(dest="sub", required=True)
    p = add("show", cmd_reports_show, "state, sequence, times and committed values of a report", reports)
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print JSON")

    q = sub.add_parser("quarantine", help="reports the workers could not commit").add_subparsers(
        dest="sub", required=True
    )
    for name, fn, help_ in (
        ("list", cmd_quarantine_list, "list quarantined reports"),
        ("replay", cmd_quarantine_replay, "commit quarantined reports again"),
        ("purge", cmd_quarantine_purge, "delete quarantined reports for good"),
    ):
        p = add(name, fn, help_, q)
        if name != "list":
            p.add_argument("ids", nargs="*", metavar="ID")
            p.add_argument("--all", action="store_true")
        p.add_argument("--customer", type=arguments.uuid_argument)
        p.add_argument("--resource", type=arguments.uuid_argument)
        p.add_argument("--reason", help="reason code, e.g. resource_missing")
        p.add_argument("--since", type=arguments.instant)
        if name == "list":
            p.add_argument("--json", action="store_true", help="print JSON")
        if name == "replay":
            p.add_argument("--dry-run", action="store_true", help="list what would be replayed")
            p.add_argument("--json", action="store_true", help="with --dry-run: print JSON")
        if name == "purge":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = add("show", cmd_quarantine_show, "one quarantined report in full", q)
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("replay", cmd_replay, "re-apply reports accepted in a window, from the archive and the journal")
    p.add_argument("--since", type=arguments.instant, required=True)
    p.add_argument("--until", type=arguments.instant)
    p.add_argument("--customer", type=arguments.uuid_argument)
    p.add_argument("--resource", type=arguments.uuid_argument)
    p.add_argument("--start-after", help="resume after this journal entry id")
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: print JSON")

    p = add("stats", cmd_stats, "queue and commit statistics")
    p.add_argument("--watch", action="store_true")
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--json", action="store_true", help="print JSON (one line per sample)")
