"""``ingest run``: web + worker + beat on one machine (see ingest.dev.runner)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ingest import config
from ingest.cli.context import Add, CliError


def cmd_run(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.dev import runner

    if args.procfile is None:
        text = runner.packaged_procfile()
    else:
        try:
            text = Path(args.procfile).read_text()
        except OSError as exc:
            raise CliError(f"--procfile {args.procfile}: {exc.strerror or exc}") from None
    processes = runner.procfile_processes(text)
    if not processes:
        raise CliError(f"--procfile {args.procfile}: no process types")
    unknown = sorted(set(args.scale) - set(processes))
    if unknown:
        raise CliError(f"--scale names {', '.join(unknown)}: not a process type of the Procfile")
    waldur_demo = None
    if args.waldur_demo:
        if settings.bridge_enabled:
            raise CliError("--waldur-demo starts its own fake Waldur: unset WALDUR_URL")
        waldur_demo = runner.WaldurDemo(args.waldur_port, args.waldur_mode)
    return runner.run(
        settings,
        embedded=not config.redis_url_given(),
        demo=not args.no_demo,
        procfile=text,
        formation=args.scale,
        redis_port=args.redis_port,
        waldur_demo=waldur_demo,
    )


def formation(text: str) -> dict[str, int]:
    """``web=1,worker=2`` -> {"web": 1, "worker": 2}; a type not named runs once."""
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected NAME=COUNT[,NAME=COUNT...], got {text!r}")
        out[name.strip()] = int(count)
    return out


def register(sub: Any, add: Add) -> None:
    p = add("run", cmd_run, "run web + worker + beat (embedded Redis when REDIS_URL is unset)")
    p.add_argument("--no-demo", action="store_true", help="do not load the demo catalog")
    p.add_argument(
        "--procfile", default=None, help="process formation to run (default: the one shipped in the package)"
    )
    p.add_argument(
        "--redis-port",
        type=int,
        default=config.EMBEDDED_REDIS_PORT,
        help="port of the embedded Redis (not used when REDIS_URL is set)",
    )
    p.add_argument(
        "--waldur-demo",
        action="store_true",
        help="also start a fake Waldur with the demo catalog, sync from it and forward usage to it",
    )
    p.add_argument("--waldur-port", type=int, default=8001, help="port of the fake Waldur of --waldur-demo")
    p.add_argument(
        "--waldur-mode",
        choices=("8", "7.0.7"),
        default="8",
        help="how the fake Waldur behaves: the 8.x line, or a 7.0.7 server's quirks",
    )
    p.add_argument(
        "--scale",
        type=formation,
        default="web=1,worker=1,beat=1",
        help="process formation, e.g. web=1,worker=2,beat=1",
    )
