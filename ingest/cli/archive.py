"""``ingest archive``: check and describe the journal archive (JOURNAL_ARCHIVE_DIR)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ingest import config
from ingest.cli.context import Add, CliError, print_json, readable, record, runtime


def _archive(settings: config.Settings) -> Any:
    found = runtime().archive
    if found is None:
        raise CliError("JOURNAL_ARCHIVE_DIR is off: there is no archive")
    missing = missing_archive(settings)
    if missing:
        raise CliError(missing)
    return found


def missing_archive(settings: config.Settings) -> str | None:
    """Why the archive cannot be read from here (its directory does not exist: run the
    command where the workers' JOURNAL_ARCHIVE_DIR is mounted), or None."""
    if not settings.archive_enabled:
        return None
    where = Path(settings.journal_archive_dir)
    if where.is_dir():
        return None
    return (
        f"the journal archive {str(where.resolve())!r} (JOURNAL_ARCHIVE_DIR) does not exist here: "
        "run this where the workers' archive is mounted, or set JOURNAL_ARCHIVE_DIR to it"
    )


def cmd_verify(args: argparse.Namespace, settings: config.Settings) -> int:
    check = _archive(settings).verify()
    doc = {
        "segments": check.segments,
        "blocks": check.blocks,
        "entries": check.entries,
        "problems": [str(p) for p in check.problems],
    }
    if args.json:
        print_json(doc)
    else:
        for problem in check.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(
            f"{check.segments} segment(s), {check.blocks} block(s), {check.entries} report(s): "
            + (f"{len(check.problems)} problem(s)" if check.problems else "all checksums match")
        )
    return 1 if check.problems else 0


def cmd_stats(args: argparse.Namespace, settings: config.Settings) -> int:
    doc = readable(_archive(settings).stats())
    if args.json:
        print_json(doc)
    else:
        record(doc)
    return 0


def register(sub: Any, add: Add) -> None:
    group = sub.add_parser("archive", help="the journal archive replay reads").add_subparsers(
        dest="sub", required=True
    )
    p = add("verify", cmd_verify, "read every segment and check every block's checksum", group)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("stats", cmd_stats, "size, span and bytes per report of the archive", group)
    p.add_argument("--json", action="store_true", help="print JSON")
