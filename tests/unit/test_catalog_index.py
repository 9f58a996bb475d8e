"""ingest.domain.catalog_index: the compact resources / plan periods tables answer exactly as
the dicts of dataclasses they replace (and SqlCatalog.snapshot builds them from SQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from typing import Any

import pytest

from ingest.adapters.sql.catalog import SqlCatalog
from ingest.adapters.sql.unit_of_work import make_engine
from ingest.domain import catalog_index as ci
from ingest.domain.model import CatalogSnapshot, Offering, PlanPeriod, Provider, Resource

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)


def _reference(
    resources: list[tuple[uuid.UUID, uuid.UUID, str, uuid.UUID | None]],
    periods: list[tuple[uuid.UUID, uuid.UUID, dt.datetime | None, dt.datetime | None]],
) -> tuple[dict[uuid.UUID, Resource], dict[uuid.UUID, PlanPeriod]]:
    """What the snapshot held before: dicts of dataclasses (periods in the order given)."""
    by_resource: dict[uuid.UUID, list[PlanPeriod]] = {}
    plan_periods = {}
    for key, owner, start, end in periods:
        period = PlanPeriod(key, owner, start, end)
        by_resource.setdefault(owner, []).append(period)
        plan_periods[key] = period
    found = {
        key: Resource(key, offering, state, plan, tuple(by_resource.get(key, ())))
        for key, offering, state, plan in resources
    }
    return found, plan_periods


def _tables(
    resources: list[tuple[uuid.UUID, uuid.UUID, str, uuid.UUID | None]],
    periods: list[tuple[uuid.UUID, uuid.UUID, dt.datetime | None, dt.datetime | None]],
    cache_size: int = ci.CACHE_SIZE,
) -> tuple[ci.ResourceTable, ci.PlanPeriodTable]:
    build = ci.TablesBuilder()
    for key, offering, state, plan in resources:
        build.resource(key.int, offering, state, plan)
    for key, owner, start, end in periods:
        build.plan_period(key.int, owner.int, ci.micros(start), ci.micros(end))
    return build.build(cache_size)


def _catalog(n: int, seed: int = 7) -> tuple[list[Any], list[Any]]:
    rng = random.Random(seed)
    offerings = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(3)]
    plans = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(4)]
    states = ["OK", "Updating", "Erred", "TERMINATING"]
    resources = [
        (
            uuid.UUID(int=rng.getrandbits(128)),
            rng.choice(offerings),
            rng.choice(states),
            rng.choice(plans + [None]),
        )
        for _ in range(n)
    ]
    periods = []
    for key, *_ in resources:
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            start = rng.choice(
                [None, T0 + dt.timedelta(days=rng.randrange(-400, 400), microseconds=rng.randrange(10**6))]
            )
            end = rng.choice([None, None, T0 + dt.timedelta(days=rng.randrange(-100, 500))])
            periods.append((uuid.UUID(int=rng.getrandbits(128)), key, start, end))
    periods.append((uuid.uuid4(), uuid.uuid4(), T0, None))  # a period whose resource is gone
    return resources, periods


def test_the_tables_answer_as_the_dicts_did() -> None:
    resources, periods = _catalog(3000)
    want_r, want_p = _reference(resources, periods)
    got_r, got_p = _tables(resources, periods, cache_size=100)
    assert len(got_r) == len(want_r) and len(got_p) == len(want_p)
    assert list(got_r) == list(want_r) and list(got_p) == list(want_p)  # the same order
    for key, want in want_r.items():
        fresh = uuid.UUID(str(key))  # a caller's own UUID object, as intake parses it
        assert got_r.get(fresh) == want and got_r[fresh] == want and fresh in got_r
        assert got_r.get(fresh) == want  # from the cache now
    for key, want in want_p.items():
        assert got_p.get(uuid.UUID(str(key))) == want and got_p[key] == want and key in got_p
    assert dict(got_r.items()) == want_r and dict(got_p) == want_p
    assert got_r == want_r and list(got_p.values()) == list(want_p.values())
    assert len(got_r._cache) <= 100 and len(got_p._cache) <= 100  # bounded


def test_unknown_keys_and_other_types_are_not_found() -> None:
    resources, periods = _catalog(200)
    got_r, got_p = _tables(resources, periods)
    for key in [uuid.uuid4() for _ in range(500)] + [periods[0][0]]:
        assert got_r.get(key) is None and key not in got_r
        assert got_r.get(key, "x") == "x"
        with pytest.raises(KeyError):
            got_r[key]
    for other in (None, "a", 1, str(resources[0][0]), resources[0][0].int):
        assert got_r.get(other) is None and other not in got_r  # type: ignore[call-overload]
        assert got_p.get(other) is None and other not in got_p  # type: ignore[call-overload]
    empty_r, empty_p = ci.TablesBuilder().build()
    assert len(empty_r) == 0 and empty_r.get(uuid.uuid4()) is None and list(empty_p) == []


@pytest.mark.parametrize(
    "keys",
    [
        [uuid.UUID(int=(3 << 64) + i) for i in range(20000)],  # sequential (the bench catalog)
        [uuid.UUID(int=i << 64) for i in range(20000)],  # all the variation in the high half
        [uuid.uuid1(node=1, clock_seq=i % 16) for i in range(20000)],  # time-based, one node
    ],
    ids=["sequential", "high-half", "uuid1"],
)
def test_structured_keys_are_found_without_long_probes(keys: list[uuid.UUID]) -> None:
    """Every hit and every miss ends after a few probes (the CPython dict probe sequence)."""
    build = ci.TablesBuilder()
    offering = uuid.uuid4()
    for key in keys:
        build.resource(key.int, offering, "OK", None)
    table, _ = build.build()
    index = table._index
    probes = _probe_counter(index)
    misses = [uuid.UUID(int=k.int + 1 + (1 << 100)) for k in keys[:2000]]
    for key in keys:
        assert index.find(key.int) >= 0
    for key in misses:
        assert index.find(key.int) == -1
    worst = max(probes(k.int) for k in keys + misses)
    assert worst <= 40, worst


def _probe_counter(index: ci.KeyIndex) -> Any:
    def probes(key: int) -> int:
        slots, mask = index._slots, index._mask
        h = perturb = hash(key)
        i = h & mask
        count = 1
        while slots[i] >= 0 and index.key(slots[i]) != key:
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask
            count += 1
        return count

    return probes


def test_a_resource_keeps_its_periods_in_order_and_plan_period_at_agrees() -> None:
    r = uuid.uuid4()
    early, late, open_start = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    periods = [
        (open_start, r, None, T0),
        (early, r, T0, T0 + dt.timedelta(days=40)),
        (late, r, T0 + dt.timedelta(days=20), None),
    ]
    resources = [(r, uuid.uuid4(), "OK", uuid.uuid4()), (uuid.uuid4(), uuid.uuid4(), "OK", None)]
    want_r, _ = _reference(resources, periods)
    got_r, _ = _tables(resources, periods)
    got = got_r[r]
    assert [p.uuid for p in got.plan_periods] == [open_start, early, late]
    assert got_r[resources[1][0]].plan_periods == () and got_r[resources[1][0]].plan is None
    tz = __import__("zoneinfo").ZoneInfo("Europe/Tallinn")
    for days in range(-40, 80, 3):
        moment = T0 + dt.timedelta(days=days, hours=5)
        assert got.plan_period_at(moment, tz) == want_r[r].plan_period_at(moment, tz)


def test_instants_round_trip_exactly() -> None:
    for moment in [
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        dt.datetime(2026, 3, 29, 1, 30, 0, 123457, tzinfo=dt.timezone(dt.timedelta(hours=3))),
        T0,
    ]:
        back = ci.instant(ci.micros(moment))
        assert back == moment and back is not None and back.utcoffset() == dt.timedelta(0)
    assert ci.instant(ci.micros(None)) is None
    assert ci.instant(ci.micros(dt.datetime(2026, 1, 1))) == T0  # naive counts as UTC


def test_fast_builders_make_ordinary_objects() -> None:
    key = uuid.uuid4()
    made = ci.make_uuid(key.int)
    assert made == key and hash(made) == hash(key) and str(made) == str(key) and made.is_safe == key.is_safe
    assert repr(made) == repr(key) and made.version == key.version and made < uuid.UUID(int=(1 << 128) - 1)
    period = ci.new_period(key, made, T0, None)
    assert period == PlanPeriod(key, made, T0, None) and hash(period) == hash(PlanPeriod(key, made, T0, None))
    resource = ci.new_resource(key, made, "OK", None, (period,))
    assert resource == Resource(key, made, "OK", None, (period,))
    assert repr(resource) == repr(Resource(key, made, "OK", None, (period,)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        resource.state = "Erred"  # type: ignore[misc]
    # the builders fill every field: a new field on either class must be added to them
    assert [f.name for f in dataclasses.fields(PlanPeriod)] == ["uuid", "resource", "start", "end"]
    assert [f.name for f in dataclasses.fields(Resource)] == [
        "uuid",
        "offering",
        "state",
        "plan",
        "plan_periods",
    ]


def test_a_snapshot_over_the_tables_serves_its_rules() -> None:
    customer, offering = uuid.uuid4(), uuid.uuid4()
    r, pp = uuid.uuid4(), uuid.uuid4()
    resources, periods = _tables([(r, offering, "OK", uuid.uuid4())], [(pp, r, None, None)])
    snap = CatalogSnapshot(
        {customer: Provider(customer, "p", "s")},
        {offering: Offering(offering, customer, {"cpu": "usage"})},
        resources,
        periods,
        3,
    )
    resource = snap.resources[r]
    assert snap.owner_of(resource) == customer and snap.components_of(resource) == {"cpu": "usage"}
    assert resource.state_is_valid and snap.plan_periods[pp].resource == r
    changed = dataclasses.replace(snap, resources={k: v for k, v in snap.resources.items() if k != r})
    assert r not in changed.resources and r in snap.resources


def test_sql_snapshot_matches_the_document_it_loaded(database_url: str) -> None:
    """SQLite always; PostgreSQL (native uuids, aware instants, a server-side cursor) when
    TEST_DATABASE_URL names a server."""
    url = database_url
    customer, offering = uuid.uuid4(), uuid.uuid4()
    plan = uuid.uuid4()
    rows, periods = [], []
    for i in range(300):
        key = uuid.uuid4()
        rows.append((key, offering, "OK" if i % 5 else "Erred", plan if i % 7 else None))
        for k in range(i % 3):
            start = None if k == 0 and i % 2 else T0 + dt.timedelta(days=30 * k, microseconds=i)
            periods.append((uuid.uuid4(), key, start, None if k else T0 + dt.timedelta(days=10)))
    doc = {
        "service_providers": [{"customer_uuid": customer, "name": "p", "api_secret_code": "s" * 16}],
        "offerings": [
            {
                "uuid": offering,
                "customer_uuid": customer,
                "name": "o",
                "components": [{"type": "cpu", "billing_type": "usage", "measured_unit": "h"}],
            }
        ],
        "resources": [
            {
                "uuid": key,
                "offering_uuid": o,
                "name": "r",
                "state": state,
                "plan_uuid": p,
                "plan_periods": [
                    {"uuid": pk, "start": start, "end": end}
                    for pk, owner, start, end in periods
                    if owner == key
                ],
            }
            for key, o, state, p in rows
        ],
    }
    engine = make_engine(url)
    SqlCatalog(engine).load(doc)
    snap = SqlCatalog(engine).snapshot()
    assert isinstance(snap.resources, ci.ResourceTable) and isinstance(snap.plan_periods, ci.PlanPeriodTable)
    nulls_first = engine.dialect.name == "sqlite"  # ORDER BY start: PostgreSQL puts NULL last
    ordered = sorted(periods, key=lambda p: ((p[2] is None) != nulls_first, p[2] or T0))
    want_r, want_p = _reference(rows, ordered)
    assert dict(snap.resources) == want_r and dict(snap.plan_periods) == want_p
    assert snap.version >= 1 and snap.owner_of(snap.resources[rows[0][0]]) == customer
    engine.dispose()
