"""``ingest catalog`` and ``ingest providers``: what the service knows of providers,
offerings and resources (secrets are never printed, except a new one, once)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from ingest import config
from ingest.cli import arguments
from ingest.cli.context import Add, CliError, runtime, utc_text


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
    counts = runtime().catalog_source.load(doc)
    print("loaded " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0


def cmd_catalog_show(args: argparse.Namespace, settings: config.Settings) -> int:
    snap = runtime().catalog_source.snapshot()
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
                        "start": utc_text(p.start) if p.start else None,
                        "end": utc_text(p.end) if p.end else None,
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
    if not runtime().catalog_source.remove_resource(args.resource):
        raise CliError(f"no resource {args.resource}")
    print(f"removed resource {args.resource}")
    return 0


def cmd_catalog_state(args: argparse.Namespace, settings: config.Settings) -> int:
    if not runtime().catalog_source.set_resource_state(args.resource, args.state):
        raise CliError(f"no resource {args.resource}")
    print(f"resource {args.resource} is now {args.state}")
    return 0


def cmd_rotate_secret(args: argparse.Namespace, settings: config.Settings) -> int:
    import secrets as random

    new = args.secret or random.token_urlsafe(24)
    if len(new) < max(16, settings.secret_min_length):
        raise CliError(f"the new secret must have at least {max(16, settings.secret_min_length)} characters")
    if not runtime().catalog_source.rotate_secret(args.customer, new, args.grace):
        raise CliError(f"no service provider {args.customer}")
    print(f"new secret for {args.customer} (shown once): {new}")
    print(f"the previous secret keeps working for {args.grace}")
    return 0


def register(sub: Any, add: Add) -> None:
    cat = sub.add_parser("catalog", help="providers, offerings, resources").add_subparsers(
        dest="sub", required=True
    )
    add("load", cmd_catalog_load, "upsert a catalog from a JSON or YAML file", cat).add_argument("file")
    add("show", cmd_catalog_show, "print the catalog", cat).add_argument(
        "--json", action="store_true", help="print JSON"
    )
    add("remove-resource", cmd_catalog_remove, "delete a resource from the catalog", cat).add_argument(
        "resource", type=arguments.uuid_argument
    )
    p = add("set-state", cmd_catalog_state, "set a resource's state", cat)
    p.add_argument("resource", type=arguments.uuid_argument)
    p.add_argument("state")

    prov = sub.add_parser("providers", help="service providers").add_subparsers(dest="sub", required=True)
    p = add(
        "rotate-secret",
        cmd_rotate_secret,
        "give a provider a new secret; the old one works during --grace",
        prov,
    )
    p.add_argument("customer", type=arguments.uuid_argument)
    p.add_argument("--grace", type=arguments.duration, default=dt.timedelta(hours=1))
    p.add_argument("--secret", help="the new secret (default: a random one, printed once)")
