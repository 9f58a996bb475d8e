"""The ``ingest`` command line: database, catalog, usage, signing and pushing, running.

Every failure is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

from ingest import config
from ingest.cli import ops as cli_ops


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _uuid_arg(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


def _period_arg(value: str) -> dt.date:
    try:
        return dt.datetime.strptime(value, "%Y-%m").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a month like 2026-11") from None


def _usage_arg(value: str) -> tuple[str, str]:
    name, sep, amount = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{value!r} is not COMPONENT=AMOUNT")
    try:
        Decimal(amount)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"{amount!r} is not a number") from None
    return name, amount


def _runtime() -> Any:
    from ingest import bootstrap

    return bootstrap.runtime()


# -- database and catalog ----------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.adapters.sql import migrate as db

    db.upgrade(settings.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


def cmd_catalog_load(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.services import catalog_file

    try:
        doc = catalog_file.read(Path(args.file))
    except catalog_file.CatalogFileError as exc:
        raise CliError(str(exc)) from None
    short = [
        p["customer_uuid"]
        for p in doc["service_providers"]
        if p["api_secret_code"] and len(p["api_secret_code"]) < settings.secret_min_length
    ]
    if short:
        raise CliError(
            f"secret of provider {short[0]} is shorter than SECRET_MIN_LENGTH={settings.secret_min_length}"
        )
    counts = _runtime().catalog_source.load(doc)
    print("loaded " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0


def cmd_catalog_show(args: argparse.Namespace, settings: config.Settings) -> int:
    snap = _runtime().catalog_source.snapshot()
    doc = {
        "service_providers": [
            {"customer": str(p.customer), "name": p.name, "api_secret_code_set": bool(p.secret)}
            for p in snap.providers.values()
        ],
        "offerings": [
            {
                "uuid": str(o.uuid),
                "customer": str(o.customer),
                "components": [{"type": k, "billing_type": v} for k, v in sorted(o.components.items())],
            }
            for o in snap.offerings.values()
        ],
        "resources": [
            {
                "uuid": str(r.uuid),
                "offering": str(r.offering),
                "state": r.state,
                "plan": str(r.plan) if r.plan else None,
                "plan_periods": [
                    {
                        "uuid": str(p.uuid),
                        "start": p.start.isoformat() if p.start else None,
                        "end": p.end.isoformat() if p.end else None,
                    }
                    for p in r.plan_periods
                ],
            }
            for r in snap.resources.values()
        ],
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"catalog version {snap.version}: {len(snap.providers)} providers, "
        f"{len(snap.offerings)} offerings, {len(snap.resources)} resources "
        "(secrets are never shown)"
    )
    table = Table("resource", "state", "offering", "provider", "components")
    for r in snap.resources.values():
        table.add_row(
            str(r.uuid),
            r.state,
            str(r.offering),
            str(snap.owner_of(r)),
            ", ".join(f"{k} ({v})" for k, v in sorted(snap.components_of(r).items())),
        )
    console.print(table)
    return 0


def cmd_catalog_remove(args: argparse.Namespace, settings: config.Settings) -> int:
    if not _runtime().catalog_source.remove_resource(uuid.UUID(args.resource)):
        raise CliError(f"no resource {args.resource}")
    print(f"removed resource {args.resource}")
    return 0


def cmd_catalog_state(args: argparse.Namespace, settings: config.Settings) -> int:
    if not _runtime().catalog_source.set_resource_state(uuid.UUID(args.resource), args.state):
        raise CliError(f"no resource {args.resource}")
    print(f"resource {args.resource} is now {args.state}")
    return 0


def _duration(value: str) -> dt.timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value and value[-1] in units:
            return dt.timedelta(seconds=float(value[:-1]) * units[value[-1]])
        return dt.timedelta(seconds=float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration like 90s, 30m, 1h") from None


def cmd_rotate_secret(args: argparse.Namespace, settings: config.Settings) -> int:
    import secrets as random

    new = args.secret or random.token_urlsafe(24)
    if len(new) < max(16, settings.secret_min_length):
        raise CliError(f"the new secret must have at least {max(16, settings.secret_min_length)} characters")
    if not _runtime().catalog_source.rotate_secret(uuid.UUID(args.customer), new, args.grace):
        raise CliError(f"no service provider {args.customer}")
    print(f"new secret for {args.customer} (shown once): {new}")
    print(f"the previous secret keeps working for {args.grace}")
    return 0


def cmd_usage_show(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.adapters.sql.read_model import usage_rows

    rows = usage_rows(_runtime().engine, uuid.UUID(args.resource), args.period)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("billing period", "component", "amount", "plan period", "date", "sequence", "report")
    for r in rows:
        table.add_row(
            r["billing_period"],
            r["component"],
            r["amount"],
            r["plan_period"] or "-",
            r["date"],
            str(r["sequence"]),
            r["report_id"],
        )
    Console().print(table)
    if not rows:
        print("no committed usage for this resource" + (" in that period" if args.period else ""))
    return 0


# -- provider client ---------------------------------------------------------------------------


def _claims(args: argparse.Namespace) -> dict[str, Any]:
    claims: dict[str, Any] = {"usages": [{"type": name, "amount": amount} for name, amount in args.usage]}
    if args.resource:
        claims["resource"] = args.resource
    if args.plan_period:
        claims["plan_period"] = args.plan_period
    if args.date:
        claims["date"] = args.date
    if not (args.resource or args.plan_period):
        raise CliError("give --resource or --plan-period")
    return claims


def cmd_sign(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.domain import signing

    print(signing.sign(_claims(args), args.secret))
    return 0


def cmd_push(args: argparse.Namespace, settings: config.Settings) -> int:
    import httpx

    from ingest.domain import signing

    if args.file:
        return _push_file(args)
    if not args.usage or not args.secret:
        raise CliError("give COMPONENT=AMOUNT arguments and --secret, or --file")

    body = {
        "customer": args.customer,
        "data": signing.sign(_claims(args), args.secret),
        "dry_run": args.dry_run,
    }
    url = args.url.rstrip("/") + "/api/marketplace-public-api/set_usage/"
    try:
        resp = httpx.post(url, json=body, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from None
    print(f"{resp.status_code} {resp.text}")
    return 0 if resp.status_code == 201 else 1


def _push_file(args: argparse.Namespace) -> int:
    from ingest.cli import push as push_file

    try:
        tokens = push_file.load_tokens(Path(args.file), args.secret)
        accepted, reasons = push_file.push(
            args.url, args.customer, tokens, args.chunk, args.dry_run, args.timeout
        )
    except push_file.PushError as exc:
        raise CliError(str(exc)) from None
    rejected = sum(reasons.values())
    print(f"{len(tokens)} report(s): {accepted} accepted, {rejected} rejected")
    for reason, count in reasons.most_common():
        print(f"  {count} x {reason}")
    return 1 if rejected else 0


# -- running -----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.dev import runner

    return runner.run(
        settings,
        embedded=not os.environ.get("REDIS_URL"),
        demo=not args.no_demo,
        procfile=args.procfile,
        formation=args.scale,
    )


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and a pointer to --help) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ingest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[..., int], help_: str, parent: Any = sub) -> Any:
        p = parent.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        return p

    dbp = sub.add_parser("db", help="database schema").add_subparsers(dest="sub", required=True)
    p = add("upgrade", cmd_db_upgrade, "apply Alembic migrations", dbp)
    p.add_argument("revision", nargs="?", default="head")

    cat = sub.add_parser("catalog", help="providers, offerings, resources").add_subparsers(
        dest="sub", required=True
    )
    add("load", cmd_catalog_load, "upsert a catalog from a JSON or YAML file", cat).add_argument("file")
    add("show", cmd_catalog_show, "print the catalog", cat).add_argument("--json", action="store_true")
    add("remove-resource", cmd_catalog_remove, "delete a resource from the catalog", cat).add_argument(
        "resource", type=_uuid_arg
    )
    p = add("set-state", cmd_catalog_state, "set a resource's state", cat)
    p.add_argument("resource", type=_uuid_arg)
    p.add_argument("state")

    prov = sub.add_parser("providers", help="service providers").add_subparsers(dest="sub", required=True)
    p = add(
        "rotate-secret",
        cmd_rotate_secret,
        "give a provider a new secret; the old one works during --grace",
        prov,
    )
    p.add_argument("customer", type=_uuid_arg)
    p.add_argument("--grace", type=_duration, default=dt.timedelta(hours=1))
    p.add_argument("--secret", help="the new secret (default: a random one, printed once)")

    usage = sub.add_parser("usage", help="committed usage").add_subparsers(dest="sub", required=True)
    p = add("show", cmd_usage_show, "print committed usage rows of a resource", usage)
    p.add_argument("--resource", type=_uuid_arg, required=True)
    p.add_argument("--period", type=_period_arg, help="billing month, e.g. 2026-11")
    p.add_argument("--json", action="store_true")

    for name, fn, help_ in (
        ("sign", cmd_sign, "print a signed usage token"),
        ("push", cmd_push, "sign and send one usage report"),
    ):
        p = add(name, fn, help_)
        if name == "push":
            p.add_argument("--url", default=f"http://127.0.0.1:{settings_port()}")
            p.add_argument("--customer", type=_uuid_arg, required=True)
            p.add_argument("--dry-run", action="store_true")
            p.add_argument("--timeout", type=float, default=10.0)
            p.add_argument("--file", help="JSON lines of tokens or claims: send them in batches")
            p.add_argument("--chunk", type=int, default=500, help="reports per batch request")
        p.add_argument("--secret", required=name == "sign")
        p.add_argument("--resource", type=_uuid_arg)
        p.add_argument("--plan-period", type=_uuid_arg)
        p.add_argument("--date", help="ISO 8601 date-time of the usage")
        p.add_argument(
            "usage", nargs="*" if name == "push" else "+", type=_usage_arg, metavar="COMPONENT=AMOUNT"
        )

    cli_ops.register(sub, add)

    p = add("run", cmd_run, "run web + worker + beat (embedded Redis when REDIS_URL is unset)")
    p.add_argument("--no-demo", action="store_true", help="do not load the demo catalog")
    p.add_argument("--procfile", default="Procfile")
    p.add_argument(
        "--scale", default="web=1,worker=1,beat=1", help="process formation, e.g. web=1,worker=2,beat=1"
    )
    return parser


def settings_port() -> str:
    return os.environ.get("PORT", "8000")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = config.load()
        return int(args.fn(args, settings))
    except (CliError, config.SettingsError, cli_ops.OpsError) as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ingest: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # infrastructure: say what failed, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"ingest: error: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
