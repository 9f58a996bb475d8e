"""Catalog in SQL: the snapshot the caches serve, the idempotent upsert of a catalog file, and
the CatalogStore port of the sync from Waldur (``view`` and ``apply``)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Engine, String, Table, delete, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from ingest.adapters.secretbox import SecretBox
from ingest.adapters.sql import tables as t
from ingest.adapters.sql.unit_of_work import dialect_insert
from ingest.domain import catalog_index, model
from ingest.services.sync_ports import (
    CatalogView,
    ChangeSet,
    HeldOffering,
    HeldProvider,
    HeldResource,
    RemotePlanPeriod,
)

CHUNK = 500  # rows per multi-row statement (well inside SQLite's bound-parameter limit)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _upsert_many(session: Session, table: Any, keys: list[str], rows: list[dict[str, Any]]) -> None:
    """Insert or overwrite ``rows`` (all with the same columns), a chunk per statement. A key
    given twice keeps its last row (one statement may not touch a row twice)."""
    if not rows:
        return
    rows = list({tuple(row[k] for k in keys): row for row in rows}.values())
    for chunk in _chunks(rows):
        stmt = dialect_insert(session, table).values(list(chunk))
        changes = {k: stmt.excluded[k] for k in chunk[0] if k not in keys}
        session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changes))


def _write(
    session: Session,
    providers: list[dict[str, Any]],
    offerings: list[dict[str, Any]],
    components: dict[uuid.UUID, list[dict[str, Any]]],
    resources: list[dict[str, Any]],
    plan_periods: list[dict[str, Any]],
) -> None:
    """The one catalog upsert, of ``ingest catalog load`` and of a sync from Waldur: rows
    inserted or overwritten by key, and an offering's components replaced by the ones given."""
    _upsert_many(session, t.ServiceProvider.__table__, ["customer_uuid"], providers)
    _upsert_many(session, t.Offering.__table__, ["uuid"], offerings)
    comp = t.OfferingComponent
    for offering, kept in components.items():
        keep = [c["type"] for c in kept]
        session.execute(delete(comp).where(comp.offering_uuid == offering, comp.type.not_in(keep)))
    rows = [{**c, "offering_uuid": offering} for offering, kept in components.items() for c in kept]
    _upsert_many(session, comp.__table__, ["offering_uuid", "type"], rows)
    _upsert_many(session, t.Resource.__table__, ["uuid"], resources)
    _upsert_many(session, t.PlanPeriod.__table__, ["uuid"], plan_periods)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


# Rows fetched and added at a time while loading the snapshot: a slice is a few milliseconds
# of Python, then the loader offers the GIL (the web reloads in a thread beside its loop).
_SLICE = 500


def _release_free_memory() -> None:
    """Hand freed heap back to the system (glibc ``malloc_trim``; elsewhere nothing). A reload
    frees a whole snapshot's columns and the rows it read; glibc keeps such memory mapped, so
    a web worker's RSS grew by one snapshot per reload until this. Runs without the GIL."""
    if _malloc_trim is not None:
        _malloc_trim(0)


_later: threading.Timer | None = None


def _release_free_memory_later(delay: float = 1.0) -> None:
    """Once the caller has swapped the new snapshot in and the requests holding the old one
    are done with it, its memory is free: release it then (one pending timer at a time)."""
    global _later
    if _malloc_trim is None or (_later is not None and _later.is_alive()):
        return
    _later = threading.Timer(delay, _release_free_memory)
    _later.daemon = True
    _later.start()


def _find_malloc_trim() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _find_malloc_trim()


def _raw(column: Any) -> Any:
    """A uuid column as text (32 hex digits on SQLite, hyphenated on PostgreSQL): no UUID
    object per row and value, by SQLAlchemy or by the driver (~15% of a load on PostgreSQL)."""
    return sql_cast(column, String)


def _key(raw: object) -> int:
    return raw.int if isinstance(raw, uuid.UUID) else int(str(raw).replace("-", ""), 16)


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
        _release_free_memory()  # what the snapshot this one replaces left behind
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
        _release_free_memory()  # the rows read
        _release_free_memory_later()  # the snapshot this one replaces
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

        res = t.Resource.__table__.c
        rows = select(_raw(res.uuid), _raw(res.offering_uuid), res.state, _raw(res.plan_uuid))
        for chunk in conn.execute(rows.execution_options(yield_per=_SLICE)).partitions():
            build.resources(
                [(_key(k), value(o), state, None if p is None else value(p)) for k, o, state, p in chunk]
            )
            time.sleep(0)  # let a waiting thread (the web's event loop) have the GIL
        per = t.PlanPeriod.__table__.c
        rows = select(_raw(per.uuid), _raw(per.resource_uuid), per.start, per.end).order_by(per.start)
        micros = catalog_index.micros
        for chunk in conn.execute(rows.execution_options(yield_per=_SLICE)).partitions():
            build.plan_periods([(_key(k), _key(owner), micros(s), micros(e)) for k, owner, s, e in chunk])
            time.sleep(0)
        return build.build()

    def load(self, data: dict[str, Any]) -> dict[str, int]:
        """Upsert a parsed catalog document (see catalog_file.parse); idempotent. The same
        writes as a sync from Waldur (``apply``): ``_write``."""
        providers = [
            {**p, "api_secret_code": self.secrets.seal(p["api_secret_code"])}
            for p in data["service_providers"]
        ]
        offerings = [{k: v for k, v in o.items() if k != "components"} for o in data["offerings"]]
        components = {o["uuid"]: list(o["components"]) for o in data["offerings"]}
        resources = [{k: v for k, v in r.items() if k != "plan_periods"} for r in data["resources"]]
        periods = [{**pp, "resource_uuid": r["uuid"]} for r in data["resources"] for pp in r["plan_periods"]]
        with Session(self.engine) as session, session.begin():
            _write(session, providers, offerings, components, resources, periods)
            bump_version(session)
        return {
            "service_providers": len(providers),
            "offerings": len(offerings),
            "components": sum(len(c) for c in components.values()),
            "resources": len(resources),
            "plan_periods": len(periods),
        }

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

    def view(self, resources: Sequence[uuid.UUID] | None = None) -> CatalogView:
        """What a sync compares Waldur's answers with (one transaction; secrets revealed):
        providers, offerings, and every resource or only those of ``resources``."""
        sp, res, pp = t.ServiceProvider, t.Resource, t.PlanPeriod
        held: dict[uuid.UUID, HeldResource] = {}
        periods: dict[uuid.UUID, RemotePlanPeriod] = {}
        with self.engine.connect() as conn, conn.begin():
            providers = {
                row.customer_uuid: HeldProvider(row.name, self.secrets.reveal(row.api_secret_code))
                for row in conn.execute(select(sp.customer_uuid, sp.name, sp.api_secret_code))
            }
            components: dict[uuid.UUID, dict[str, tuple[str, str]]] = defaultdict(dict)
            for row in conn.execute(select(t.OfferingComponent.__table__)):
                components[row.offering_uuid][row.type] = (row.billing_type, row.measured_unit)
            offerings = {
                row.uuid: HeldOffering(row.customer_uuid, row.name, dict(components[row.uuid]))
                for row in conn.execute(select(t.Offering.__table__))
            }
            queries = (
                [(select(res.__table__), select(pp.__table__))]
                if resources is None
                else [
                    (
                        select(res.__table__).where(res.uuid.in_(c)),
                        select(pp.__table__).where(pp.resource_uuid.in_(c)),
                    )
                    for c in _chunks(list(resources))
                ]
            )
            for of_resources, of_periods in queries:
                for row in conn.execute(of_resources):
                    held[row.uuid] = HeldResource(row.offering_uuid, row.name, row.state, row.plan_uuid)
                for row in conn.execute(of_periods):
                    periods[row.uuid] = RemotePlanPeriod(
                        row.uuid, row.resource_uuid, as_utc(row.start), as_utc(row.end)
                    )
        return CatalogView(providers, offerings, held, periods)

    def apply(self, changes: ChangeSet, grace: dt.timedelta) -> int:
        """Removals, upserts and secret rotations of one sync in ONE transaction, bumping the
        catalog version once; returns the new version. A rotated secret keeps the previous
        one verifying for ``grace`` (as rotate_secret). ``rate_limit`` is left as it is."""
        now = dt.datetime.now(dt.UTC)
        with Session(self.engine) as session, session.begin():
            self._remove(session, changes)
            _write(
                session,
                [{"customer_uuid": p.customer, "name": p.name} for p in changes.providers],
                [{"uuid": o.uuid, "customer_uuid": o.customer, "name": o.name} for o in changes.offerings],
                {
                    o.uuid: [
                        {"type": c.type, "billing_type": c.billing_type, "measured_unit": c.measured_unit}
                        for c in o.components
                    ]
                    for o in changes.offerings
                },
                [
                    {
                        "uuid": r.uuid,
                        "offering_uuid": r.offering,
                        "name": r.name,
                        "state": r.state,
                        "plan_uuid": r.plan,
                    }
                    for r in changes.resources
                ],
                [
                    {"uuid": p.uuid, "resource_uuid": p.resource, "start": p.start, "end": p.end}
                    for p in changes.plan_periods
                ],
            )
            sp = cast(Table, t.ServiceProvider.__table__)  # Core: no ORM session to synchronise
            for customer, secret, rotate in changes.secrets:
                values: dict[str, Any] = {"api_secret_code": self.secrets.seal(secret)}
                if rotate:  # SET reads the row as it was: the current secret becomes the previous
                    values["previous_secret"] = sp.c.api_secret_code
                    values["previous_secret_until"] = now + grace
                session.execute(update(sp).where(sp.c.customer_uuid == customer).values(**values))
            bump_version(session)
            return int(
                session.execute(select(t.CatalogMeta.version).where(t.CatalogMeta.id == 1)).scalar() or 0
            )

    @staticmethod
    def _remove(session: Session, changes: ChangeSet) -> None:
        """Children first (SQLite enforces the foreign keys too, without cascades)."""
        pp, res, comp, off = t.PlanPeriod, t.Resource, t.OfferingComponent, t.Offering
        for chunk in _chunks(changes.remove_plan_periods):
            session.execute(delete(pp).where(pp.uuid.in_(chunk)))
        for chunk in _chunks(changes.remove_resources):
            session.execute(delete(pp).where(pp.resource_uuid.in_(chunk)))
            session.execute(delete(res).where(res.uuid.in_(chunk)))
        gone_offerings = list(changes.remove_offerings)
        for chunk in _chunks(changes.remove_providers):
            gone_offerings += session.execute(select(off.uuid).where(off.customer_uuid.in_(chunk))).scalars()
        for chunk in _chunks(gone_offerings):
            owned = select(res.uuid).where(res.offering_uuid.in_(chunk))
            session.execute(delete(pp).where(pp.resource_uuid.in_(owned)))
            session.execute(delete(res).where(res.offering_uuid.in_(chunk)))
            session.execute(delete(comp).where(comp.offering_uuid.in_(chunk)))
            session.execute(delete(off).where(off.uuid.in_(chunk)))
        for chunk in _chunks(changes.remove_providers):
            session.execute(delete(t.ServiceProvider).where(t.ServiceProvider.customer_uuid.in_(chunk)))

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
