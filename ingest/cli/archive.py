"""``ingest archive``: check and describe the journal archive (JOURNAL_ARCHIVE_DIR)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ingest import config
from ingest.cli.context import Add, CliError, print_json, readable, record, runtime


def _archive(settings: config.Settings) -> Any:
    found = runtime().archive
    if found is None:
        raise CliError("JOURNAL_ARCHIVE_DIR is off: there is no archive")
    return found


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
