"""Seed documents: our catalog format (what `ingest catalog load` reads) plus fake-only keys.

Accepted keys: ``service_providers[{customer, name, api_secret_code, uuid?}]``,
``offerings[{uuid, customer, name, components[{type, billing_type, measured_unit,
limit_amount?, limit_period?}], state?, type?}]``, ``resources[{uuid, offering, name, state,
plan, plan_periods[{uuid, start, end, plan?}], customer_uuid?, project_uuid?, limits?,
backend_id?}]`` and ``users[{token, username, is_staff, is_support?, is_active?, owner_of,
manager_of, token_lifetime}]``. ``billing_type`` may be any of Waldur's five, ``few`` too.
A merge adds new rows and changes existing ones (matched by uuid, providers by customer).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from importlib import resources as package_files
from typing import Any

from ingest.dev.fake_waldur.formats import parse_instant, parse_uuid
from ingest.dev.fake_waldur.store import Component, Offering, PlanPeriod, Provider, Resource, Store, User

BILLING_TYPES = ("usage", "limit", "fixed", "one", "few")
RESOURCE_STATES = ("Creating", "OK", "Erred", "Updating", "Terminating", "Terminated")
OFFERING_STATES = ("Draft", "Active", "Paused", "Archived", "Unavailable")
_NS = uuid.UUID("6b1d4f0e-3c55-4c61-9a55-2d1a7f0f0a11")


class SeedError(ValueError):
    pass


def derived(kind: str, base: uuid.UUID) -> uuid.UUID:
    """A deterministic uuid for a row the seed does not name (never equal to ``base``)."""
    return uuid.uuid5(_NS, f"{kind}:{base.hex}")


def _uuid(value: Any, where: str) -> uuid.UUID:
    found = parse_uuid(str(value))
    if found is None:
        raise SeedError(f"{where}: {value!r} is not a UUID")
    return found


def _instant(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    found = parse_instant(value)
    if found is None:
        raise SeedError(f"{where}: {value!r} is not an ISO 8601 date-time")
    return found


def demo_document() -> dict[str, Any]:
    text = package_files.files("ingest.dev").joinpath("demo/catalog.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def generate(store: Store, count: int, providers: int = 4, offerings_each: int = 2) -> None:
    """``count`` resources over a few providers and offerings, the same every time; built
    directly rather than through a document, so 100,000 take a second or two."""
    doc: dict[str, Any] = {"service_providers": [], "offerings": []}
    for p in range(providers):
        customer = f"9a000000-0000-4000-8000-{p + 1:012x}"
        doc["service_providers"].append(
            {"customer": customer, "name": f"Provider {p + 1}", "api_secret_code": f"gen-secret-{p + 1:04d}"}
        )
        for o in range(offerings_each):
            doc["offerings"].append(
                {
                    "uuid": f"9a000001-0000-4000-8000-{p * offerings_each + o + 1:012x}",
                    "customer": customer,
                    "name": f"Offering {p + 1}.{o + 1}",
                    "components": [
                        {"type": "cpu_hours", "billing_type": "usage", "measured_unit": "hours"},
                        {"type": "ram_gb", "billing_type": "usage", "measured_unit": "GB"},
                        {"type": "storage_tb", "billing_type": "limit", "measured_unit": "TB"},
                    ],
                }
            )
    merge(store, doc)
    offerings = [store.offerings[_uuid(o["uuid"], "offering")] for o in doc["offerings"]]
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    base = {kind: uuid.UUID(f"9a00000{kind}-0000-4000-8000-000000000000").int for kind in range(2, 7)}
    # consumers repeat, as in a real Waldur: 1 customer per 20 resources, 1 project per 5
    customers = [uuid.UUID(int=base[5] + k) for k in range(1, count // 20 + 2)]
    projects = [uuid.UUID(int=base[6] + k) for k in range(1, count // 5 + 2)]
    with store.lock:
        for i in range(1, count + 1):
            offering = offerings[(i - 1) % len(offerings)]
            moment = store.stamp()
            rid = uuid.UUID(int=base[2] + i)
            plan = uuid.UUID(int=base[3] + (i - 1) % len(offerings) + 1)
            store.add_resource(
                Resource(
                    uuid=rid,
                    offering=offering,
                    name=f"allocation-{i}",
                    state="OK",
                    plan=plan,
                    plan_periods=[PlanPeriod(uuid.UUID(int=base[4] + i), plan, start, None)],
                    customer_uuid=customers[i // 20],
                    project_uuid=projects[i // 5],
                    created=moment,
                    modified=moment,
                )
            )
        store.changed()


def merge(store: Store, doc: Any) -> dict[str, int]:
    """Add or change rows; answers how many of each kind the document named."""
    if not isinstance(doc, dict):
        raise SeedError("a seed must be an object with service_providers, offerings and resources")
    try:
        with store.lock:
            counts = {
                "service_providers": _providers(store, doc.get("service_providers") or []),
                "offerings": _offerings(store, doc.get("offerings") or []),
                "resources": _resources(store, doc.get("resources") or []),
                "users": _users(store, doc.get("users") or []),
            }
            store.changed()
            return counts
    except KeyError as exc:
        raise SeedError(f"missing field {exc.args[0]!r}") from None
    except (TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, SeedError):
            raise
        raise SeedError(f"malformed seed: {exc}") from None


def _providers(store: Store, rows: list[Any]) -> int:
    for i, p in enumerate(rows):
        customer = _uuid(p["customer"], f"service_providers[{i}].customer")
        old = store.provider_of_customer(customer)
        sp = _uuid(p["uuid"], f"service_providers[{i}].uuid") if p.get("uuid") else None
        if old is not None:
            old.name = str(p.get("name", old.name))
            if p.get("api_secret_code"):
                old.secret = str(p["api_secret_code"])
            old.modified = store.stamp()
            continue
        moment = store.stamp()
        store.providers[sp or derived("service-provider", customer)] = Provider(
            uuid=sp or derived("service-provider", customer),
            customer=customer,
            name=str(p.get("name", "")),
            secret=str(p.get("api_secret_code") or uuid.uuid4().hex),
            created=moment,
            modified=moment,
        )
    return len(rows)


def _offerings(store: Store, rows: list[Any]) -> int:
    for i, o in enumerate(rows):
        where = f"offerings[{i}]"
        oid = _uuid(o["uuid"], f"{where}.uuid")
        existing = store.offerings.get(oid)
        components = []
        for j, c in enumerate(o.get("components") or []):
            billing = c.get("billing_type", "usage")
            if billing not in BILLING_TYPES:
                raise SeedError(f"{where}.components[{j}].billing_type: {billing!r} is not a Waldur type")
            component = Component(
                uuid=derived(f"component:{c['type']}", oid),
                type=str(c["type"]),
                billing_type=billing,
                measured_unit=str(c.get("measured_unit", "")),
                name=str(c.get("name") or c["type"]),
                limit_amount=None if c.get("limit_amount") is None else int(c["limit_amount"]),
                limit_period=c.get("limit_period"),
            )
            kept = existing.component(component.type) if existing else None
            if kept is not None:  # stored usages keep pointing at the one object
                kept.__dict__.update(component.__dict__)
                component = kept
            components.append(component)
        state = str(o.get("state", "Active"))
        if state not in OFFERING_STATES:
            raise SeedError(f"{where}.state: {state!r} is not one of {', '.join(OFFERING_STATES)}")
        old = store.offerings.get(oid)
        moment = store.stamp()
        offering = Offering(
            uuid=oid,
            customer=_uuid(o["customer"], f"{where}.customer"),
            name=str(o.get("name", "")),
            components=components,
            created=old.created if old else moment,
            modified=moment,
            state=state,
            type=str(o.get("type", "Marketplace.Slurm")),
        )
        if old is not None:  # resources keep pointing at the one object
            old.__dict__.update(offering.__dict__)
        else:
            store.offerings[oid] = offering
    return len(rows)


def _resources(store: Store, rows: list[Any]) -> int:
    for i, r in enumerate(rows):
        where = f"resources[{i}]"
        rid = _uuid(r["uuid"], f"{where}.uuid")
        offering = store.offerings.get(_uuid(r["offering"], f"{where}.offering"))
        if offering is None:
            raise SeedError(f"{where}.offering: {r['offering']!r} is not an offering of this fake")
        state = str(r.get("state", "OK"))
        if state not in RESOURCE_STATES:
            raise SeedError(f"{where}.state: {state!r} is not one of {', '.join(RESOURCE_STATES)}")
        plan = None if r.get("plan") is None else _uuid(r["plan"], f"{where}.plan")
        periods = [
            PlanPeriod(
                uuid=_uuid(pp["uuid"], f"{where}.plan_periods[{k}].uuid"),
                plan=_uuid(pp["plan"], f"{where}.plan") if pp.get("plan") else plan or derived("plan", rid),
                start=_instant(pp.get("start"), f"{where}.plan_periods[{k}].start"),
                end=_instant(pp.get("end"), f"{where}.plan_periods[{k}].end"),
            )
            for k, pp in enumerate(r.get("plan_periods") or [])
        ]
        old = store.resources.get(rid)
        moment = store.stamp()
        resource = Resource(
            uuid=rid,
            offering=offering,
            name=str(r.get("name", "")),
            state=state,
            plan=plan,
            plan_periods=periods,
            customer_uuid=_uuid(r["customer_uuid"], where) if r.get("customer_uuid") else derived("c", rid),
            project_uuid=_uuid(r["project_uuid"], where) if r.get("project_uuid") else derived("p", rid),
            created=old.created if old else moment,
            modified=moment,
            current_usages=old.current_usages if old else {},
            limits={str(k): int(v) for k, v in (r.get("limits") or {}).items()},
            backend_id=str(r.get("backend_id", "")),
        )
        if old is not None:
            old.__dict__.update(resource.__dict__)
        else:
            store.add_resource(resource)
    return len(rows)


def _users(store: Store, rows: list[Any]) -> int:
    for i, u in enumerate(rows):
        token = str(u["token"])
        lifetime = u.get("token_lifetime")
        store.users[token] = User(
            token=token,
            username=str(u.get("username") or f"user{i + 1}"),
            uuid=derived("user", uuid.uuid5(_NS, token)),
            is_staff=bool(u.get("is_staff", False)),
            is_support=bool(u.get("is_support", False)),
            is_active=bool(u.get("is_active", True)),
            owner_of={_uuid(c, f"users[{i}].owner_of") for c in u.get("owner_of") or []},
            manager_of={_uuid(o, f"users[{i}].manager_of") for o in u.get("manager_of") or []},
            token_lifetime=None if lifetime is None else int(lifetime),
        )
    return len(rows)
