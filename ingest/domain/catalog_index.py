"""Compact catalog tables: the resources and plan periods of a snapshot, without an object each.

A web worker holds the whole catalog. As dicts of dataclasses, 100,000 resources with one plan
period each took ~800 bytes a resource (five UUID objects, two dataclasses, a tuple, a state
string and two dict entries). Here a resource is a row of a few ``array`` columns (~40 bytes)
and a plan period another (~50 bytes): the UUIDs as two unsigned 64-bit halves, the offering,
state and plan as indexes into short lists of shared values, the plan period's instants as
microseconds since the epoch. Resources without plan periods cost nothing for them.

``ResourceTable`` and ``PlanPeriodTable`` are read-only mappings keyed by ``UUID``; ``get``
finds the row in an open-addressing hash table (the probe sequence of CPython's dicts, load
at most one half: one or two probes, never a scan) and builds the ``Resource`` /
``PlanPeriod`` on demand. The objects built are kept in a small per-table cache, so the
resources a provider reports over and over cost a dict lookup; the cache is emptied when it
fills (bounded, no bookkeeping per hit).

Built once by ``TablesBuilder`` from plain values (the SQL adapter streams rows into it) and
never changed afterwards: a catalog change builds a whole new snapshot, as before.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar, overload
from uuid import UUID, SafeUUID

from ingest.domain.model import PlanPeriod, Resource

T = TypeVar("T")
D = TypeVar("D")

_M64 = (1 << 64) - 1
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
NO_TIME = -(1 << 63)  # an open start or end
_MICRO = dt.timedelta(microseconds=1)
CACHE_SIZE = 1024  # built objects kept per table (~0.4 kB each with one plan period)

_new = object.__new__
_UNKNOWN = SafeUUID.unknown
_set_int = UUID.__dict__["int"].__set__  # slot descriptors
_set_safe = UUID.__dict__["is_safe"].__set__


def make_uuid(value: int) -> UUID:
    """``UUID(int=value)`` without the argument checks of ``UUID.__init__`` (3x faster);
    ``value`` comes from a UUID we stored, so it is in range."""
    found: UUID = _new(UUID)
    _set_int(found, value)
    _set_safe(found, _UNKNOWN)
    return found


def _slot_setters(cls: type) -> tuple[Callable[[object, object], None], ...]:
    """The slot descriptors of a frozen, slotted dataclass, in field order: filling them
    directly skips ``__init__`` and its ``object.__setattr__`` per field (~40% of a build).
    Only for classes without ``__post_init__`` (checked, and the tests compare the objects
    with ones built the ordinary way)."""
    assert not hasattr(cls, "__post_init__"), cls
    return tuple(cls.__dict__[f.name].__set__ for f in dataclasses.fields(cls))


_PERIOD_UUID, _PERIOD_RESOURCE, _PERIOD_START, _PERIOD_END = _slot_setters(PlanPeriod)
_RES_UUID, _RES_OFFERING, _RES_STATE, _RES_PLAN, _RES_PERIODS = _slot_setters(Resource)


def new_period(key: UUID, resource: UUID, start: dt.datetime | None, end: dt.datetime | None) -> PlanPeriod:
    """``PlanPeriod(key, resource, start, end)``, built faster."""
    period: PlanPeriod = _new(PlanPeriod)
    _PERIOD_UUID(period, key)
    _PERIOD_RESOURCE(period, resource)
    _PERIOD_START(period, start)
    _PERIOD_END(period, end)
    return period


def new_resource(
    key: UUID, offering: UUID, state: str, plan: UUID | None, periods: tuple[PlanPeriod, ...]
) -> Resource:
    """``Resource(key, offering, state, plan, periods)``, built faster."""
    resource: Resource = _new(Resource)
    _RES_UUID(resource, key)
    _RES_OFFERING(resource, offering)
    _RES_STATE(resource, state)
    _RES_PLAN(resource, plan)
    _RES_PERIODS(resource, periods)
    return resource


def micros(moment: dt.datetime | None) -> int:
    """An instant as microseconds since the epoch (naive counts as UTC); None is NO_TIME."""
    if moment is None:
        return NO_TIME
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - EPOCH) // _MICRO


def instant(value: int) -> dt.datetime | None:
    """The inverse of ``micros``: an aware UTC datetime, or None."""
    return None if value == NO_TIME else EPOCH + dt.timedelta(microseconds=value)


class KeyIndex:
    """128-bit keys (``UUID.int``) at dense positions 0..n-1, found through a hash table.

    ``append`` every key, then ``seal`` once; ``find`` is valid after ``seal``. A key appended
    twice is found at its last position (as a dict keeps the last value); the earlier one is
    dead and skipped by ``positions``."""

    __slots__ = ("_hi", "_lo", "_slots", "_mask", "_dead")

    def __init__(self) -> None:
        self._hi = array("Q")
        self._lo = array("Q")
        self._slots = array("i", [-1])
        self._mask = 0
        self._dead: set[int] = set()

    def append(self, key: int) -> int:
        self._hi.append(key >> 64)
        self._lo.append(key & _M64)
        return len(self._lo) - 1

    def key(self, position: int) -> int:
        return (self._hi[position] << 64) | self._lo[position]

    def __len__(self) -> int:
        return len(self._lo) - len(self._dead)

    def seal(self) -> None:
        size = 8
        while size < 2 * len(self._lo):
            size <<= 1
        mask = size - 1
        slots = array("i", [-1]) * size
        his, los = self._hi, self._lo
        for position in range(len(los)):
            hi, lo = his[position], los[position]
            h = perturb = hash((hi << 64) | lo)  # >= 0 for a non-negative int
            i = h & mask
            while True:
                j = slots[i]
                if j < 0:
                    slots[i] = position
                    break
                if los[j] == lo and his[j] == hi:  # a duplicate: the last one wins
                    self._dead.add(j)
                    slots[i] = position
                    break
                perturb >>= 5
                i = (i * 5 + perturb + 1) & mask
        self._slots, self._mask = slots, mask

    def find(self, key: int) -> int:
        """The position of ``key``, or -1."""
        lo = key & _M64
        hi = key >> 64
        slots, his, los, mask = self._slots, self._hi, self._lo, self._mask
        h = perturb = hash(key)
        i = h & mask
        while True:
            j = slots[i]
            if j < 0:
                return -1
            if los[j] == lo and his[j] == hi:
                return j
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask

    def positions(self) -> Iterator[int]:
        dead = self._dead
        return (p for p in range(len(self._lo)) if p not in dead) if dead else iter(range(len(self._lo)))


class _Store:
    """The columns both tables read; shared, never changed after ``TablesBuilder.build``."""

    __slots__ = (
        "resources",
        "offering",
        "state",
        "plan",
        "first_period",
        "offerings",
        "states",
        "plans",
        "periods",
        "period_resource",
        "next_period",
        "start",
        "end",
        "orphans",
    )

    def __init__(self) -> None:
        self.resources = KeyIndex()
        self.offering = array("I")  # -> offerings
        self.state = array("I")  # -> states
        self.plan = array("i")  # -> plans, -1: none
        self.first_period = array("i")  # -> periods, -1: none; then next_period
        self.offerings: list[UUID] = []
        self.states: list[str] = []
        self.plans: list[UUID] = []
        self.periods = KeyIndex()
        self.period_resource = array("i")  # -> resources, -1: not in the catalog (orphans)
        self.next_period = array("i")  # the resource's next period, in the order added; -1: last
        self.start = array("q")  # micros, NO_TIME: open
        self.end = array("q")
        self.orphans: dict[int, UUID] = {}  # period position -> its resource, if not a row

    def period(self, position: int, key: UUID | None = None, resource: UUID | None = None) -> PlanPeriod:
        if resource is None:
            owner = self.period_resource[position]
            resource = make_uuid(self.resources.key(owner)) if owner >= 0 else self.orphans[position]
        return new_period(
            make_uuid(self.periods.key(position)) if key is None else key,
            resource,
            instant(self.start[position]),
            instant(self.end[position]),
        )

    def resource(self, position: int, key: UUID) -> Resource:
        periods: tuple[PlanPeriod, ...] = ()
        p = self.first_period[position]
        if p >= 0:
            first = self.period(p, None, key)
            p = self.next_period[p]
            if p < 0:  # the usual case: one plan period
                periods = (first,)
            else:
                found = [first]
                while p >= 0:
                    found.append(self.period(p, None, key))
                    p = self.next_period[p]
                periods = tuple(found)
        plan = self.plan[position]
        return new_resource(
            key,
            self.offerings[self.offering[position]],
            self.states[self.state[position]],
            self.plans[plan] if plan >= 0 else None,
            periods,
        )


class _Table(Mapping[UUID, T]):
    __slots__ = ("_store", "_index", "_cache", "_cache_size")

    def __init__(self, store: _Store, index: KeyIndex, cache_size: int) -> None:
        self._store = store
        self._index = index
        self._cache: dict[int, T] = {}
        self._cache_size = cache_size

    def _build(self, position: int, key: UUID) -> T:
        raise NotImplementedError

    @overload
    def get(self, key: UUID, /) -> T | None: ...
    @overload
    def get(self, key: UUID, default: T, /) -> T: ...
    @overload
    def get(self, key: UUID, default: D, /) -> T | D: ...
    def get(self, key: object, default: object = None, /) -> T | object:
        try:
            value: int = key.int  # type: ignore[attr-defined]
        except AttributeError:
            return default
        found = self._cache.get(value)
        if found is None:
            position = self._index.find(value)
            if position < 0:
                return default
            found = self._build(position, key)  # type: ignore[arg-type]
            cache = self._cache
            if len(cache) >= self._cache_size:
                cache.clear()
            cache[value] = found
        return found

    def __getitem__(self, key: UUID) -> T:
        """As ``get``, but what it builds is not cached: ``items()`` and ``values()`` come
        through here, and an export of the whole catalog must not churn the cache."""
        try:
            value: int = key.int
        except AttributeError:
            raise KeyError(key) from None
        found = self._cache.get(value)
        if found is None:
            position = self._index.find(value)
            if position < 0:
                raise KeyError(key)
            found = self._build(position, key)
        return found

    def __contains__(self, key: object) -> bool:
        try:
            value: int = key.int  # type: ignore[attr-defined]
        except AttributeError:
            return False
        return value in self._cache or self._index.find(value) >= 0

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[UUID]:
        index = self._index
        return (make_uuid(index.key(p)) for p in index.positions())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self)}>"


_MISSING = object()


class ResourceTable(_Table[Resource]):
    """The snapshot's ``resources``: UUID -> Resource, with its plan periods."""

    __slots__ = ()

    def __init__(self, store: _Store, cache_size: int = CACHE_SIZE) -> None:
        super().__init__(store, store.resources, cache_size)

    def _build(self, position: int, key: UUID) -> Resource:
        return self._store.resource(position, key)


class PlanPeriodTable(_Table[PlanPeriod]):
    """The snapshot's ``plan_periods``: UUID -> PlanPeriod."""

    __slots__ = ()

    def __init__(self, store: _Store, cache_size: int = CACHE_SIZE) -> None:
        super().__init__(store, store.periods, cache_size)

    def _build(self, position: int, key: UUID) -> PlanPeriod:
        return self._store.period(position, key)


class TablesBuilder:
    """Collects resources and plan periods (in any order, each once), then ``build``s the two
    tables. Keys are ``UUID.int``; offerings, states and plans are shared values, kept once."""

    def __init__(self) -> None:
        self._store = _Store()
        self._offerings: dict[UUID, int] = {}
        self._states: dict[str, int] = {}
        self._plans: dict[UUID, int] = {}
        self._period_owner_hi = array("Q")  # the resource key of each period, until build
        self._period_owner_lo = array("Q")

    def resource(self, key: int, offering: UUID, state: str, plan: UUID | None) -> None:
        self.resources([(key, offering, state, plan)])

    def resources(self, rows: Iterable[tuple[int, UUID, str, UUID | None]]) -> None:
        """(key, offering, state, plan) per resource; the loading loop, so locals only."""
        s = self._store
        add_hi, add_lo = s.resources._hi.append, s.resources._lo.append
        add_offering, add_state, add_plan = s.offering.append, s.state.append, s.plan.append
        offerings, states, plans = self._offerings, self._states, self._plans
        for key, offering, state, plan in rows:
            add_hi(key >> 64)
            add_lo(key & _M64)
            o = offerings.get(offering)
            if o is None:
                o = offerings[offering] = len(s.offerings)
                s.offerings.append(offering)
            add_offering(o)
            st = states.get(state)
            if st is None:
                st = states[state] = len(s.states)
                s.states.append(state)
            add_state(st)
            if plan is None:
                add_plan(-1)
            else:
                p = plans.get(plan)
                if p is None:
                    p = plans[plan] = len(s.plans)
                    s.plans.append(plan)
                add_plan(p)

    def plan_period(self, key: int, resource: int, start: int, end: int) -> None:
        self.plan_periods([(key, resource, start, end)])

    def plan_periods(self, rows: Iterable[tuple[int, int, int, int]]) -> None:
        """(key, resource key, start, end) per plan period, ``start``/``end`` as ``micros``
        (NO_TIME: open). A resource's periods keep the order they are added in (the SQL
        adapter adds them by start)."""
        s = self._store
        add_hi, add_lo = s.periods._hi.append, s.periods._lo.append
        owner_hi, owner_lo = self._period_owner_hi.append, self._period_owner_lo.append
        add_start, add_end = s.start.append, s.end.append
        for key, resource, start, end in rows:
            add_hi(key >> 64)
            add_lo(key & _M64)
            owner_hi(resource >> 64)
            owner_lo(resource & _M64)
            add_start(start)
            add_end(end)

    def build(self, cache_size: int = CACHE_SIZE) -> tuple[ResourceTable, PlanPeriodTable]:
        s = self._store
        s.resources.seal()
        s.periods.seal()
        n = len(s.offering)
        s.first_period = array("i", [-1]) * n
        last = array("i", [-1]) * n
        count = len(s.start)
        s.period_resource = array("i", [-1]) * count
        s.next_period = array("i", [-1]) * count
        dead = s.periods._dead
        his, los = self._period_owner_hi, self._period_owner_lo
        find = s.resources.find
        for p in range(count):
            if p in dead:
                continue
            owner_key = (his[p] << 64) | los[p]
            r = find(owner_key)
            if r < 0:
                s.orphans[p] = make_uuid(owner_key)
                continue
            s.period_resource[p] = r
            if last[r] < 0:
                s.first_period[r] = p
            else:
                s.next_period[last[r]] = p
            last[r] = p
        self._period_owner_hi = self._period_owner_lo = array("Q")
        self._store = _Store()  # a builder builds once
        return ResourceTable(s, cache_size), PlanPeriodTable(s, cache_size)
