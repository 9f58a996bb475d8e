"""``ingest db``: the database schema."""

from __future__ import annotations

import argparse
from typing import Any

from ingest import config
from ingest.cli.context import Add


def cmd_db_upgrade(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest import bootstrap

    bootstrap.upgrade_database(settings.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


def register(sub: Any, add: Add) -> None:
    dbp = sub.add_parser("db", help="database schema").add_subparsers(dest="sub", required=True)
    p = add("upgrade", cmd_db_upgrade, "apply Alembic migrations", dbp)
    p.add_argument("revision", nargs="?", default="head")
