"""Catalog in SQL: the snapshot the caches serve, and the idempotent upsert of a catalog file."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Engine, String, delete, select, type_coerce, update
from sqlalchemy.orm import Session

from ingest.adapters.secretbox import SecretBox
from ingest.adapters.sql import tables as t
from ingest.adapters.sql.unit_of_work import upsert
from ingest.domain import catalog_index, model


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


_SLICE = 5000  # rows fetched at a time while loading the snapshot


def _raw(column: Any) -> Any:
    """A uuid column as the driver returns it, without the per-row UUID() of the Uuid type."""
    return type_coerce(column, String)


def _key(raw: object) -> int:
    return raw.int if isinstance(raw, uuid.UUID) else int(str(raw), 16)


class SqlCatalog:
    def __init__(self, engine: Engine, secrets: SecretBox | None = None) -> None:
        self.engine = engine
        self.secrets = secrets or SecretBox(None)

    def version(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(t.CatalogMeta.version).where(t.CatalogMeta.id == 1))
            return int(value.scalar() or 0)

    def snapshot(self) -> model.CatalogSnapshot:
        """Read the whole catalog in one transaction (five queries, no ORM objects)."""
        with self.engine.connect() as conn, conn.begin():
            version = conn.execute(select(t.CatalogMeta.version).where(t.CatalogMeta.id == 1)).scalar()
            providers = {
                row.customer_uuid: model.Provider(
                    row.customer_uuid,
                    row.name,
                    self.secrets.reveal(row.api_secret_code),
                    self.secrets.reveal(row.previous_secret),
                    as_utc(row.previous_secret_until),
                    row.rate_limit,
                )
                for row in conn.execute(select(t.ServiceProvider.__table__))
            }
            components: dict[uuid.UUID, dict[str, str]] = defaultdict(dict)
            for row in conn.execute(select(t.OfferingComponent.__table__)):
                components[row.offering_uuid][row.type] = row.billing_type
            offerings = {
                row.uuid: model.Offering(row.uuid, row.customer_uuid, dict(components[row.uuid]))
                for row in conn.execute(select(t.Offering.__table__))
            }
            resources, plan_periods = self._tables(conn)
        return model.CatalogSnapshot(providers, offerings, resources, plan_periods, int(version or 0))

    @staticmethod
    def _tables(conn: Connection) -> tuple[catalog_index.ResourceTable, catalog_index.PlanPeriodTable]:
        """Resources and plan periods straight into the compact tables: only the columns the
        snapshot keeps, streamed in slices (no list of every row), uuids read as stored (a
        UUID on PostgreSQL, 32 hex digits elsewhere) and turned into one int each, the few
        distinct offerings, plans and states parsed once."""
        build = catalog_index.TablesBuilder()
        shared: dict[object, uuid.UUID] = {}

        def value(raw: object) -> uuid.UUID:
            found = shared.get(raw)
            if found is None:
                found = shared[raw] = raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw))
            return found

        r = t.Resource.__table__.c
        rows = select(_raw(r.uuid), _raw(r.offering_uuid), r.state, _raw(r.plan_uuid))
        for key, offering, state, plan in conn.execute(rows.execution_options(yield_per=_SLICE)):
            build.resource(_key(key), value(offering), state, None if plan is None else value(plan))
        p = t.PlanPeriod.__table__.c
        rows = select(_raw(p.uuid), _raw(p.resource_uuid), p.start, p.end).order_by(p.start)
        micros = catalog_index.micros
        for key, resource, start, end in conn.execute(rows.execution_options(yield_per=_SLICE)):
            build.plan_period(_key(key), _key(resource), micros(start), micros(end))
        return build.build()

    def load(self, data: dict[str, Any]) -> dict[str, int]:
        """Upsert a parsed catalog document (see catalog_file.parse); idempotent."""
        counts = {"service_providers": 0, "offerings": 0, "components": 0, "resources": 0, "plan_periods": 0}
        with Session(self.engine) as session, session.begin():
            for p in data["service_providers"]:
                upsert(
                    session,
                    t.ServiceProvider,
                    ["customer_uuid"],
                    {**p, "api_secret_code": self.secrets.seal(p["api_secret_code"])},
                )
                counts["service_providers"] += 1
            for o in data["offerings"]:
                components = o.pop("components")
                upsert(session, t.Offering, ["uuid"], o)
                counts["offerings"] += 1
                for c in components:
                    upsert(
                        session,
                        t.OfferingComponent,
                        ["offering_uuid", "type"],
                        {**c, "offering_uuid": o["uuid"]},
                    )
                    counts["components"] += 1
                keep = [c["type"] for c in components]
                session.execute(
                    delete(t.OfferingComponent).where(
                        t.OfferingComponent.offering_uuid == o["uuid"],
                        t.OfferingComponent.type.not_in(keep),
                    )
                )
            for r in data["resources"]:
                plan_periods = r.pop("plan_periods")
                upsert(session, t.Resource, ["uuid"], r)
                counts["resources"] += 1
                for pp in plan_periods:
                    upsert(session, t.PlanPeriod, ["uuid"], {**pp, "resource_uuid": r["uuid"]})
                    counts["plan_periods"] += 1
            bump_version(session)
        return counts

    def rotate_secret(self, customer: uuid.UUID, new_secret: str, grace: dt.timedelta) -> bool:
        """Make ``new_secret`` current; the old one keeps verifying for ``grace``."""
        with Session(self.engine) as session, session.begin():
            row = session.get(t.ServiceProvider, customer)
            if row is None:
                return False
            row.previous_secret = row.api_secret_code
            row.previous_secret_until = dt.datetime.now(dt.UTC) + grace
            row.api_secret_code = self.secrets.seal(new_secret)
            bump_version(session)
        return True

    def remove_resource(self, resource: uuid.UUID) -> bool:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(t.PlanPeriod).where(t.PlanPeriod.resource_uuid == resource))
            gone = session.execute(delete(t.Resource).where(t.Resource.uuid == resource)).rowcount  # type: ignore[attr-defined]
            bump_version(session)
        return bool(gone)

    def set_resource_state(self, resource: uuid.UUID, state: str) -> bool:
        with Session(self.engine) as session, session.begin():
            changed = session.execute(
                update(t.Resource).where(t.Resource.uuid == resource).values(state=state)
            ).rowcount  # type: ignore[attr-defined]
            bump_version(session)
        return bool(changed)


def bump_version(session: Session) -> None:
    current = session.execute(select(t.CatalogMeta.version).where(t.CatalogMeta.id == 1)).scalar()
    if current is None:
        session.add(t.CatalogMeta(id=1, version=1))
    else:
        session.execute(update(t.CatalogMeta).where(t.CatalogMeta.id == 1).values(version=current + 1))
