"""``ingest waldur sync``: the catalog from Waldur (WALDUR_URL), once, now. Secrets are never
printed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ingest import config
from ingest.cli.context import Add, CliError, print_json, runtime
from ingest.services.sync_ports import NoProgress, Progress, SyncBusy

KIND_NAMES = {
    "service_providers": "service providers",
    "offerings": "offerings",
    "resources": "resources",
    "plan_periods": "plan periods",
}


class BarProgress:
    """The Progress port as a rich progress bar (on a terminal only)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.task: Any = None

    def phase(self, name: str, total: int | None) -> None:
        for done in self.bar.tasks:  # the previous phase is over: show it full
            if done.id == self.task:
                self.bar.update(
                    done.id, total=done.total or done.completed, completed=done.total or done.completed
                )
        self.task = self.bar.add_task(name, total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)


@contextmanager
def progress_for(enabled: bool) -> Iterator[Progress]:
    if not enabled:
        yield NoProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:>18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        yield BarProgress(bar)


def _changes(kind: str, c: dict[str, int], summary: dict[str, Any]) -> str:
    seen = summary["seen"].get(kind)
    tail = f" ({seen} read)" if seen is not None and kind != "plan_periods" else ""
    if kind == "plan_periods":
        tail = f" ({summary['seen']['plan_period_requests']} resources asked)"
    return (
        f"  {KIND_NAMES[kind]:<18} {c['added']} added, {c['updated']} updated, {c['removed']} removed{tail}"
    )


def human(summary: dict[str, Any]) -> list[str]:
    staff = {True: "staff token", False: "token without staff", None: "token"}[summary["is_staff"]]
    lines = [
        f"{summary['mode']} sync ({summary['reason']}) from Waldur {summary['server_version'] or '?'}, "
        f"{staff}, {summary['seconds']:.2f} s"
    ]
    lines += [_changes(kind, c, summary) for kind, c in summary["changes"].items()]
    secrets = summary["secrets"]
    lines.append(
        f"  {'secrets':<18} {secrets['set']} set, {secrets['rotated']} rotated"
        + (" (the old one verifies during WALDUR_SECRET_GRACE)" if secrets["rotated"] else "")
    )
    for p in secrets["unreadable"]:
        lines.append(f"  no secret for provider {p['customer']} ({p['name']}): {p['reason']}")
    skipped = summary["skipped"]
    if skipped["offerings"] or skipped["resources"]:
        lines.append(
            f"  skipped: {skipped['offerings']} offerings, {skipped['resources']} resources "
            "(outside WALDUR_OFFERINGS, or of a provider/offering not in the catalog)"
        )
    if summary["resource_filter"] != "none":
        lines.append(f"  resources filtered by modified as a {summary['resource_filter']}")
    for kind, actions in (summary.get("would_change") or {}).items():
        for action, found in actions.items():
            if found["count"]:
                more = found["count"] - len(found["first"])
                tail = f" (+{more} more)" if more else ""
                lines.append(
                    f"  would {action} {KIND_NAMES.get(kind, kind)}: {', '.join(found['first'])}{tail}"
                )
    if summary["dry_run"]:
        lines.append(
            "dry run: nothing was written" + ("" if summary["changed"] else " (and nothing would change)")
        )
    elif summary["changed"]:
        lines.append(f"catalog version is now {summary['catalog_version']}")
    else:
        lines.append("nothing changed: the catalog version stays")
    return lines


def sync_status() -> dict[str, Any]:
    """What ``ingest waldur status`` shows of the catalog sync (the waldur_sync_state row):
    when it last ran and fully ran, the server's version, the last error (a refused
    WALDUR_TOKEN stays here until a sync succeeds) and what the last run changed."""
    state = runtime().sync_state.read()
    last = state.last_summary or {}
    return {
        "last_sync_at": state.last_sync_at,
        "last_full_at": state.last_full_at,
        "watermark": state.watermark,
        "server_version": state.server_version,
        "last_error": state.last_error,
        "last_error_at": state.last_error_at,
        "last_mode": last.get("mode"),
        "last_changes": last.get("changes"),
        "secrets_unreadable": len((last.get("secrets") or {}).get("unreadable") or []),
    }


def cmd_sync(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.services.waldur_sync import ConfigurationError, SyncFailed

    if not settings.bridge_enabled:
        raise CliError(
            "WALDUR_URL is not set: set WALDUR_URL and WALDUR_TOKEN to sync the catalog from Waldur"
        )
    sync = runtime().catalog_sync
    bar = not args.json and sys.stderr.isatty()
    try:
        with progress_for(bar) as progress:
            summary = sync.run(full=args.full, dry_run=args.dry_run, progress=progress)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    except SyncFailed as exc:
        raise CliError(f"catalog sync failed, nothing written: {exc}") from None
    except SyncBusy as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(summary)
    else:
        print("\n".join(human(summary)))
    return 0


def register(group: Any, add: Add) -> None:
    p = add("sync", cmd_sync, "sync the catalog from Waldur now (incremental, or full when due)", group)
    p.add_argument("--full", action="store_true", help="read everything and remove what Waldur no longer has")
    p.add_argument("--dry-run", action="store_true", help="change nothing; say what would change")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
