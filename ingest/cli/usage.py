"""``ingest usage show``, ``ingest sign`` and ``ingest push``: committed usage, and the
provider's side (sign a report, send one or a file of them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ingest import config
from ingest.cli import arguments
from ingest.cli.context import Add, CliError, print_json, readable, runtime

SET_USAGE_PATH = "/api/marketplace-public-api/set_usage/"


def cmd_usage_show(args: argparse.Namespace, settings: config.Settings) -> int:
    rows = runtime().read_model.usage_rows(args.resource, args.period)
    if args.json:
        print_json(rows)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("billing period", "component", "amount", "plan period", "date", "sequence", "report")
    for r in readable(rows):
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


def _claims(args: argparse.Namespace) -> dict[str, Any]:
    claims: dict[str, Any] = {"usages": [{"type": name, "amount": amount} for name, amount in args.usage]}
    if args.resource:
        claims["resource"] = str(args.resource)
    if args.plan_period:
        claims["plan_period"] = str(args.plan_period)
    if args.date:
        claims["date"] = args.date
    if not (args.resource or args.plan_period):
        raise CliError("give --resource or --plan-period")
    return claims


def cmd_sign(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.domain import signing

    print(signing.sign(_claims(args), args.secret))
    return 0


def cmd_status_token(args: argparse.Namespace, settings: config.Settings) -> int:
    from ingest.domain import signing

    if not 0 < args.ttl <= settings.status_token_max_ttl:
        raise CliError(
            f"--ttl must be in (0, {settings.status_token_max_ttl:g}] seconds (STATUS_TOKEN_MAX_TTL)"
        )
    print(signing.sign_status_token(str(args.customer), args.secret, args.ttl))
    return 0


def cmd_push(args: argparse.Namespace, settings: config.Settings) -> int:
    import httpx

    from ingest.domain import signing

    if args.file:
        return _push_file(args)
    if not args.usage or not args.secret:
        raise CliError("give COMPONENT=AMOUNT arguments and --secret, or --file")

    body = {
        "customer": str(args.customer),
        "data": signing.sign(_claims(args), args.secret),
        "dry_run": args.dry_run,
    }
    url = args.url.rstrip("/") + SET_USAGE_PATH
    try:
        resp = httpx.post(url, json=body, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from None
    print(f"{resp.status_code} {resp.text}")
    return 0 if resp.status_code == 201 else 1


def _push_file(args: argparse.Namespace) -> int:
    from ingest.cli import push as push_file

    tokens = push_file.load_tokens(Path(args.file), args.secret)
    accepted, reasons = push_file.push(
        args.url, str(args.customer), tokens, args.chunk, args.dry_run, args.timeout
    )
    rejected = sum(reasons.values())
    print(f"{len(tokens)} report(s): {accepted} accepted, {rejected} rejected")
    for reason, count in reasons.most_common():
        print(f"  {count} x {reason}")
    return 1 if rejected else 0


def register(sub: Any, add: Add) -> None:

    usage = sub.add_parser("usage", help="committed usage").add_subparsers(dest="sub", required=True)
    p = add("show", cmd_usage_show, "print committed usage rows of a resource", usage)
    p.add_argument("--resource", type=arguments.uuid_argument, required=True)
    p.add_argument("--period", type=arguments.month, help="billing month, e.g. 2026-11")
    p.add_argument("--json", action="store_true", help="print JSON")

    for name, fn, help_ in (
        ("sign", cmd_sign, "print a signed usage token"),
        ("push", cmd_push, "sign and send one usage report"),
    ):
        p = add(name, fn, help_)
        if name == "push":
            p.add_argument("--url", default=f"http://127.0.0.1:{config.port_text()}")
            p.add_argument("--customer", type=arguments.uuid_argument, required=True)
            p.add_argument("--dry-run", action="store_true")
            p.add_argument("--timeout", type=float, default=10.0)
            p.add_argument("--file", help="JSON lines of tokens or claims: send them in batches")
            p.add_argument("--chunk", type=int, default=500, help="reports per batch request")
        p.add_argument("--secret", required=name == "sign")
        p.add_argument("--resource", type=arguments.uuid_argument)
        p.add_argument("--plan-period", type=arguments.uuid_argument)
        p.add_argument("--date", help="ISO 8601 date-time of the usage")
        p.add_argument(
            "usage", nargs="*" if name == "push" else "+", type=arguments.usage, metavar="COMPONENT=AMOUNT"
        )

    p = add(
        "status-token",
        cmd_status_token,
        "print a short-lived token for reading this provider's report status "
        "(Authorization: Bearer ..., with X-Customer)",
    )
    p.add_argument("--customer", type=arguments.uuid_argument, required=True)
    p.add_argument("--secret", required=True, help="the provider's API secret code")
    p.add_argument("--ttl", type=float, default=900.0, help="seconds the token is valid (default 900)")
