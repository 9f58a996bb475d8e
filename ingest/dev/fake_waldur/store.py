"""The fake's state: providers, offerings, resources, users, stored usages, recorded calls.

One lock guards everything; readers take it briefly. Resources are kept in creation order
(Waldur's default ordering), so an unfiltered page is a slice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

UTC = dt.UTC


@dataclasses.dataclass(eq=False)  # rows are compared by identity
class Provider:
    uuid: UUID
    customer: UUID
    name: str
    secret: str
    created: dt.datetime
    modified: dt.datetime


@dataclasses.dataclass(eq=False)  # rows are compared by identity
class Component:
    uuid: UUID
    type: str
    billing_type: str
    measured_unit: str
    name: str
    limit_amount: int | None = None
    limit_period: str | None = None


@dataclasses.dataclass(eq=False)  # rows are compared by identity
class Offering:
    uuid: UUID
    customer: UUID
    name: str
    components: list[Component]
    created: dt.datetime
    modified: dt.datetime
    state: str = "Active"
    type: str = "Marketplace.Slurm"

    def component(self, type_: str) -> Component | None:
        return next((c for c in self.components if c.type == type_), None)


@dataclasses.dataclass(eq=False)  # rows are compared by identity
class PlanPeriod:
    uuid: UUID
    plan: UUID
    start: dt.datetime | None
    end: dt.datetime | None


@dataclasses.dataclass(eq=False)  # rows are compared by identity
class Resource:
    uuid: UUID
    offering: Offering
    name: str
    state: str
    plan: UUID | None
    plan_periods: list[PlanPeriod]
    customer_uuid: UUID
    project_uuid: UUID
    created: dt.datetime
    modified: dt.datetime
    current_usages: dict[str, Decimal] = dataclasses.field(default_factory=dict)
    limits: dict[str, int] = dataclasses.field(default_factory=dict)
    backend_id: str = ""


@dataclasses.dataclass(eq=False)  # rows are compared by identity
class User:
    token: str
    username: str
    uuid: UUID
    is_staff: bool = False
    is_support: bool = False
    is_active: bool = True
    owner_of: set[UUID] = dataclasses.field(default_factory=set)
    manager_of: set[UUID] = dataclasses.field(default_factory=set)
    token_lifetime: int | None = None
    refreshed: float = dataclasses.field(default_factory=time.monotonic)

    def sees_all(self) -> bool:
        return self.is_staff or self.is_support

    def provides(self, offering: Offering) -> bool:
        """A customer owner of the offering's provider or a manager of the offering."""
        return offering.customer in self.owner_of or offering.uuid in self.manager_of


@dataclasses.dataclass(eq=False)  # rows are compared by identity
class Usage:
    uuid: UUID
    resource: Resource
    component: Component
    billing_period: dt.date
    plan_period: PlanPeriod | None
    usage: Decimal
    description: str
    date: dt.datetime
    created: dt.datetime
    modified: dt.datetime
    recurring: bool = False
    missing_usage_policy: str = "none"
    modified_by: str | None = None
    user_usages: dict[str, Decimal] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Config:
    mode: str = "8"
    rate: float | None = None
    rate_mode: str = "queue"  # or "429"
    latency_ms: float = 0.0
    time_zone: str = "UTC"
    now: dt.datetime | None = None  # a frozen clock, for month-boundary tests

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


class Store:
    def __init__(self, config: Config) -> None:
        self.lock = threading.RLock()
        self.config = config
        self.providers: dict[UUID, Provider] = {}  # by service-provider uuid
        self.offerings: dict[UUID, Offering] = {}
        self.resources: dict[UUID, Resource] = {}
        self.order: list[Resource] = []  # creation order
        self.users: dict[str, User] = {}
        self.usages: dict[tuple[UUID, str, dt.date, UUID | None], Usage] = {}
        self.by_resource: dict[UUID, dict[tuple[UUID, str, dt.date, UUID | None], Usage]] = {}
        self._periods: tuple[int, dict[UUID, tuple[Resource, PlanPeriod]]] = (-1, {})
        self.calls: list[dict[str, Any]] = []
        self.requests: dict[str, dict[str, int]] = {}
        self.rotations: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.staff_token = ""
        self.layout = 0  # bumps when membership, state or plan of any row changes
        self.touch = 0  # bumps on every write
        self._cache: dict[tuple[Any, ...], list[Any]] = {}
        self._last_created = dt.datetime(2025, 1, 1, tzinfo=UTC)

    def now(self) -> dt.datetime:
        return self.config.now or dt.datetime.now(UTC)

    def stamp(self) -> dt.datetime:
        """A creation/modification time that never repeats or goes backwards."""
        moment = max(self.now(), self._last_created + dt.timedelta(microseconds=1))
        self._last_created = moment
        return moment

    def changed(self, layout: bool = True) -> None:
        self.touch += 1
        if layout:  # a modified-only write leaves cached lists valid unless they filter on it
            self.layout += 1
            self._cache.clear()

    def cached(self, key: tuple[Any, ...]) -> list[Any] | None:
        return self._cache.get(key)

    def remember(self, key: tuple[Any, ...], rows: list[Any]) -> list[Any]:
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[key] = rows
        return rows

    def provider_of_customer(self, customer: UUID) -> Provider | None:
        return next((p for p in self.providers.values() if p.customer == customer), None)

    def add_resource(self, resource: Resource) -> None:
        old = self.resources.get(resource.uuid)
        if old is not None:
            self.order[self.order.index(old)] = resource
        else:
            self.order.append(resource)
        self.resources[resource.uuid] = resource

    def delete_resource(self, resource: Resource) -> None:
        del self.resources[resource.uuid]
        self.order.remove(resource)
        for key in self.by_resource.pop(resource.uuid, {}):
            del self.usages[key]
        self.changed()

    def put_usage(self, key: tuple[UUID, str, dt.date, UUID | None], row: Usage) -> None:
        self.usages[key] = row
        self.by_resource.setdefault(key[0], {})[key] = row

    def drop_usage(self, key: tuple[UUID, str, dt.date, UUID | None]) -> None:
        if self.usages.pop(key, None) is not None:
            del self.by_resource[key[0]][key]

    def usages_of(self, resource: Resource) -> list[Usage]:
        return list(self.by_resource.get(resource.uuid, {}).values())

    def plan_period(self, key: UUID) -> tuple[Resource, PlanPeriod] | None:
        """Plan periods by uuid, indexed once per layout (a plan switch changes the layout)."""
        if self._periods[0] != self.layout:
            index = {pp.uuid: (r, pp) for r in self.order for pp in r.plan_periods}
            self._periods = (self.layout, index)
        return self._periods[1].get(key)

    def usage_by_uuid(self, key: UUID) -> Usage | None:
        return next((u for u in self.usages.values() if u.uuid == key), None)

    def count_request(self, endpoint: str, status: int) -> None:
        with self.lock:
            row = self.requests.setdefault(endpoint, {})
            row[str(status)] = row.get(str(status), 0) + 1
