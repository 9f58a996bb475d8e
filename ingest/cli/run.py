"""``ingest run``: web + worker + beat on one machine (see ingest.dev.runner)."""

from __future__ import annotations

import argparse
from typing import Any

from ingest import config
from ingest.cli.context import Add


def cmd_run(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.dev import runner

    return runner.run(
        settings,
        embedded=not config.redis_url_given(),
        demo=not args.no_demo,
        procfile=args.procfile,
        formation=args.scale,
    )


def register(sub: Any, add: Add) -> None:
    p = add("run", cmd_run, "run web + worker + beat (embedded Redis when REDIS_URL is unset)")
    p.add_argument("--no-demo", action="store_true", help="do not load the demo catalog")
    p.add_argument("--procfile", default="Procfile")
    p.add_argument(
        "--scale", default="web=1,worker=1,beat=1", help="process formation, e.g. web=1,worker=2,beat=1"
    )
