"""A synthetic catalog: P providers x R resources each, one offering of 3 components per provider.

Loaded with COPY on PostgreSQL (100,000 resources in a few seconds) and with executemany on
SQLite; the schema is the product's own (Alembic head), so the stack reads it unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import uuid
from typing import Any

import sqlalchemy as sa

# (type, billing type): two usage-based components and one limit, all reportable
COMPONENTS = (("cpu_hours", "usage"), ("ram_gb", "usage"), ("storage_tb", "limit"))
PERIOD_START = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Provider:
    customer: str
    secret: str
    offering: str


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceRef:
    uuid: str
    provider: int  # index into Catalog.providers
    plan_period: str


@dataclasses.dataclass
class Catalog:
    providers: list[Provider]
    resources: list[ResourceRef]

    @property
    def size(self) -> str:
        per = len(self.resources) // max(1, len(self.providers))
        return f"{len(self.providers)} providers x {per} resources x {len(COMPONENTS)} components"


def synthesize(providers: int, resources_per_provider: int) -> Catalog:
    provs = [Provider(str(uuid.uuid4()), secrets.token_hex(24), str(uuid.uuid4())) for _ in range(providers)]
    res = [
        ResourceRef(str(uuid.uuid4()), p, str(uuid.uuid4()))
        for p in range(providers)
        for _ in range(resources_per_provider)
    ]
    return Catalog(provs, res)


def _plan(offering: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, offering + "/plan"))


def load(engine: sa.Engine, catalog: Catalog) -> None:
    """Insert the catalog into an empty, migrated database and set catalog_meta.version."""
    providers = [(p.customer, f"provider-{i}", p.secret) for i, p in enumerate(catalog.providers)]
    offerings = [(p.offering, p.customer, f"offering-{i}") for i, p in enumerate(catalog.providers)]
    components = [
        (p.offering, name, billing, "unit") for p in catalog.providers for name, billing in COMPONENTS
    ]
    resources = [
        (
            r.uuid,
            catalog.providers[r.provider].offering,
            f"r{i}",
            "OK",
            _plan(catalog.providers[r.provider].offering),
        )
        for i, r in enumerate(catalog.resources)
    ]
    periods = [(r.plan_period, r.uuid, PERIOD_START, None) for r in catalog.resources]
    tables: list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]] = [
        ("service_providers", ("customer_uuid", "name", "api_secret_code"), providers),
        ("offerings", ("uuid", "customer_uuid", "name"), offerings),
        ("offering_components", ("offering_uuid", "type", "billing_type", "measured_unit"), components),
        ("resources", ("uuid", "offering_uuid", "name", "state", "plan_uuid"), resources),
        ("plan_periods", ("uuid", "resource_uuid", "start", "end"), periods),
    ]
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            for name, cols, rows in tables:
                quoted = ", ".join(f'"{c}"' for c in cols)
                with cur.copy(f"COPY {name} ({quoted}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            cur.execute(
                "INSERT INTO catalog_meta (id, version) VALUES (1, 1) "
                "ON CONFLICT (id) DO UPDATE SET version = catalog_meta.version + 1"
            )
            raw.commit()
        finally:
            raw.close()
        return
    uuid_cols = {"customer_uuid", "uuid", "offering_uuid", "plan_uuid", "resource_uuid"}
    meta = sa.MetaData()
    meta.reflect(engine, only=[t[0] for t in tables] + ["catalog_meta"])
    with engine.begin() as conn:
        for name, cols, rows in tables:
            table = meta.tables[name]
            params = [
                {
                    c: (uuid.UUID(v).hex if c in uuid_cols and isinstance(v, str) else v)
                    for c, v in zip(cols, row, strict=True)
                }
                for row in rows
            ]
            for i in range(0, len(params), 5000):
                conn.execute(table.insert(), params[i : i + 5000])
        conn.execute(sa.text("INSERT INTO catalog_meta (id, version) VALUES (1, 1)"))
