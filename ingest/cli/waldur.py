"""``ingest waldur``: the bridge to a live Waldur (WALDUR_URL): catalog sync
(cli/waldur_sync.py) and usage forwarding (cli/waldur_forward.py)."""

from __future__ import annotations

from typing import Any

from ingest.cli import waldur_forward, waldur_sync
from ingest.cli.context import Add


def register(sub: Any, add: Add) -> None:
    group = sub.add_parser(
        "waldur", help="the bridge to Waldur: catalog sync, usage forwarding, failures"
    ).add_subparsers(dest="sub", required=True)
    waldur_sync.register(group, add)
    waldur_forward.register(group, add)
