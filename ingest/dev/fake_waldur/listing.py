"""The list endpoints' filters, orderings and visibility (§1.2, §2 of waldur-bridge.md).

A filtered, ordered list is cached until a write could change it, so a 100,000-row
``sync_all`` scans once and then slices.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ingest.dev.fake_waldur.formats import UTC
from ingest.dev.fake_waldur.paging import BadQuery, Query
from ingest.dev.fake_waldur.seed import OFFERING_STATES, RESOURCE_STATES
from ingest.dev.fake_waldur.store import Offering, Provider, Resource, Store, Usage, User

T = TypeVar("T")

RESOURCE_ORDER_8 = (
    "backend_id",
    "created",
    "customer_name",
    "end_date",
    "name",
    "offering_name",
    "plan_name",
    "project_name",
    "state",
)
RESOURCE_ORDER_7 = ("name", "created")
OFFERING_ORDER = ("created", "name", "state", "total_cost", "total_cost_estimated", "total_customers", "type")
PROVIDER_ORDER = ("customer_name",)
USAGE_ORDER = ("billing_period", "missing_usage_policy", "usage")
_PAGING = ("page", "page_size", "field", "format")


def _ordering(q: Query, allowed: Iterable[str]) -> list[str]:
    choices = [*allowed, *(f"-{a}" for a in allowed)]
    values = q.all("o")
    for v in values:
        if v not in choices:
            raise BadQuery({"o": [f"Select a valid choice. {v} is not one of the available choices."]})
    return values


def _sort(rows: list[T], order: list[str], keys: dict[str, Callable[[T], Any]]) -> list[T]:
    for name in reversed(order):  # stable sorts, last key first
        field = name.lstrip("-")
        if field in keys:
            rows.sort(key=keys[field], reverse=name.startswith("-"))
    return rows


def _cache_key(kind: str, store: Store, user: User, q: Query, *, exact: bool) -> tuple[Any, ...]:
    pairs = tuple(sorted((k, v) for k, v in q.pairs if k not in _PAGING))
    who = "*" if user.sees_all() else user.token
    return (kind, who, pairs, store.config.mode, store.touch if exact else store.layout)


def _window(q: Query, store: Store, modified_ok: bool, date_only: bool = False) -> tuple[Any, Any]:
    if not modified_ok:
        return None, None
    after = q.instant("modified", date_only=date_only)
    before = None if date_only else q.instant("modified_before")
    return after, before


def _in_window(moment: dt.datetime, after: dt.datetime | None, before: dt.datetime | None) -> bool:
    return (after is None or moment >= after) and (before is None or moment < before)


def providers(store: Store, user: User, q: Query) -> list[Provider]:
    mode8 = store.config.mode == "8"
    order = _ordering(q, PROVIDER_ORDER) or ["customer_name"]
    customers = q.uuids("customer_uuid")
    after, before = _window(q, store, mode8)  # 7.0.7 has no modified filter here: ignored
    rows = [
        p
        for p in store.providers.values()
        if (customers is None or p.customer in customers) and _in_window(p.modified, after, before)
    ]
    return _sort(rows, order, {"customer_name": lambda p: p.name})


def offering_visible(user: User, offering: Offering) -> bool:
    return user.sees_all() or user.provides(offering)


def offerings(store: Store, user: User, q: Query) -> list[Offering]:
    mode8 = store.config.mode == "8"
    order = _ordering(q, OFFERING_ORDER) or ["name"]
    customers = q.uuids("customer_uuid")
    wanted = q.uuids("uuid_list")
    states = q.choices("state", OFFERING_STATES)
    kind = q.one("type")
    after, before = _window(q, store, mode8)
    rows = [
        o
        for o in store.offerings.values()
        if offering_visible(user, o)
        and (customers is None or o.customer in customers)
        and (wanted is None or o.uuid in wanted)
        and (states is None or o.state in states)
        and (kind is None or o.type == kind)
        and _in_window(o.modified, after, before)
    ]
    keys: dict[str, Callable[[Offering], Any]] = {
        "name": lambda o: o.name,
        "created": lambda o: o.created,
        "state": lambda o: o.state,
        "type": lambda o: o.type,
    }
    return _sort(rows, order, keys)


def resources(store: Store, user: User, q: Query) -> list[Resource]:
    mode8 = store.config.mode == "8"
    order = _ordering(q, RESOURCE_ORDER_8 if mode8 else RESOURCE_ORDER_7)
    offerings_ = q.uuids("offering_uuid")
    providers_ = q.uuids("provider_uuid")
    customers = q.uuids("customer_uuid")
    projects = q.uuids("project_uuid")
    plans = q.uuids("plan_uuid")
    wanted = q.uuids("uuid_list")
    states = q.choices("state", RESOURCE_STATES)
    backend_id = q.one("backend_id")
    name = (q.one("name") or "").lower()
    after, before = _window(q, store, True, date_only=not mode8)
    created = q.instant("created", date_only=not mode8)
    created_before = q.instant("created_before") if mode8 else None
    exact = after is not None or before is not None
    key = _cache_key("resources", store, user, q, exact=exact)
    hit = store.cached(key)
    if hit is not None:
        return hit
    sees_all = user.sees_all()
    rows = [
        r
        for r in store.order
        if (sees_all or user.provides(r.offering))
        and (offerings_ is None or r.offering.uuid in offerings_)
        and (providers_ is None or r.offering.customer in providers_)
        and (customers is None or r.customer_uuid in customers)
        and (projects is None or r.project_uuid in projects)
        and (plans is None or r.plan in plans)
        and (wanted is None or r.uuid in wanted)
        and (states is None or r.state in states)
        and (backend_id is None or r.backend_id == backend_id)
        and (not name or name in r.name.lower())
        and (not exact or _in_window(r.modified, after, before))
        and (created is None or r.created >= created)
        and (created_before is None or r.created < created_before)
    ]
    far = dt.datetime.max.replace(tzinfo=UTC)
    keys: dict[str, Callable[[Resource], Any]] = {
        "created": lambda r: r.created,
        "name": lambda r: r.name,
        "state": lambda r: r.state,
        "backend_id": lambda r: r.backend_id,
        "offering_name": lambda r: r.offering.name,
        "customer_name": lambda r: r.customer_uuid.hex,
        "project_name": lambda r: r.project_uuid.hex,
        "plan_name": lambda r: r.plan.hex if r.plan else "",
        "end_date": lambda r: far,
    }
    return store.remember(key, _sort(rows, order, keys))


def usages(store: Store, user: User, q: Query) -> list[Usage]:
    order = _ordering(q, USAGE_ORDER)
    resources_ = q.uuids("resource_uuid")
    offerings_ = q.uuids("offering_uuid")
    customers = q.uuids("customer_uuid")
    projects = q.uuids("project_uuid")
    types = set(q.all("type")) or None
    period = q.one("billing_period")
    try:
        billing = dt.date.fromisoformat(period) if period else None
        date_after = dt.date.fromisoformat(q.one("date_after") or "0001-01-01")
        date_before = dt.date.fromisoformat(q.one("date_before") or "9999-12-31")
    except ValueError:
        raise BadQuery({"billing_period": ["Enter a valid date."]}) from None
    if resources_ is not None:  # the read-back path: per resource, not a scan
        source = [u for r in resources_ for u in store.by_resource.get(r, {}).values()]
    else:
        source = list(store.usages.values())
    rows = [
        u
        for u in source
        if (user.sees_all() or user.provides(u.resource.offering))
        and (resources_ is None or u.resource.uuid in resources_)
        and (offerings_ is None or u.resource.offering.uuid in offerings_)
        and (customers is None or u.resource.customer_uuid in customers)
        and (projects is None or u.resource.project_uuid in projects)
        and (types is None or u.component.type in types)
        and (billing is None or u.billing_period == billing)
        and date_after <= u.date.date() <= date_before
    ]
    rows.sort(key=lambda u: u.created)
    keys: dict[str, Callable[[Usage], Any]] = {
        "billing_period": lambda u: u.billing_period,
        "usage": lambda u: u.usage,
        "missing_usage_policy": lambda u: u.missing_usage_policy,
    }
    return _sort(rows, order, keys)
