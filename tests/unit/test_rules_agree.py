"""Intake and commit agree on every catalog rule, in a billing time zone that is not UTC.

Each report goes through the real intake step (``Intake._prepare``: validate_report and the
queue envelope) and then through the real Committer against a catalog: what intake accepts
must commit against the same catalog, and for every rule that can change between acceptance
and commit, the commit check quarantines with the reason code of the rule intake would now
apply (and intake, asked again, rejects with that rule's Waldur body).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ingest.config import Settings
from ingest.domain.errors import Rejected
from ingest.domain.model import CatalogSnapshot, Offering, PlanPeriod, Provider, Resource
from ingest.services.catalog_cache import CatalogCache
from ingest.services.commit import Committer
from ingest.services.intake import Intake
from ingest.services.ports import Delivery
from schemas import queue as wire
from tests.unit.fakes import FakeStore, refuse_accept

TALLINN = ZoneInfo("Europe/Tallinn")  # UTC+2 in November and December
# 10:00 on Dec 1 in Tallinn; the billing month opened at 2026-11-30T22:00Z
NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
PROVIDER = uuid.uuid4()
OFFERING = uuid.uuid4()
PLAN = uuid.uuid4()
COMPONENTS = {"cpu": "usage", "storage": "limit", "licence": "one", "support": "fixed"}
R, R_PLANLESS, R_ERRED, R_CREATING_PLANLESS = (uuid.uuid4() for _ in range(4))
# ends after the Tallinn month opened but before midnight UTC: open in December (Tallinn)
PP_EDGE = PlanPeriod(
    uuid.uuid4(), R, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC)
)
PP_OPEN = PlanPeriod(uuid.uuid4(), R, dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC), None)
CLOSED_END = dt.datetime(2026, 11, 30, 21, 0, tzinfo=dt.UTC)  # before the Tallinn month opened


def _catalog(
    resources: list[Resource] | None = None,
    periods: list[PlanPeriod] | None = None,
    components: dict[str, str] | None = None,
) -> CatalogSnapshot:
    if resources is None:
        resources = [
            Resource(R, OFFERING, "OK", PLAN, (PP_EDGE, PP_OPEN)),
            Resource(R_PLANLESS, OFFERING, "OK", None),
            Resource(R_ERRED, OFFERING, "Erred", PLAN),
            Resource(R_CREATING_PLANLESS, OFFERING, "Creating", None),
        ]
    if periods is None:
        periods = [PP_EDGE, PP_OPEN]
    return CatalogSnapshot(
        {PROVIDER: Provider(PROVIDER, "p", "secret-1234567890")},
        {OFFERING: Offering(OFFERING, PROVIDER, components or COMPONENTS)},
        {r.uuid: r for r in resources},
        {p.uuid: p for p in periods},
        1,
    )


class _Source:
    def __init__(self, snapshot: CatalogSnapshot) -> None:
        self.snap = snapshot

    def version(self) -> int:
        return self.snap.version

    def snapshot(self) -> CatalogSnapshot:
        return self.snap


def intake(catalog: CatalogSnapshot, claims: dict[str, Any], now: dt.datetime = NOW) -> wire.QueuedReport:
    settings = Settings(billing_timezone="Europe/Tallinn")
    service = Intake(settings, CatalogCache(_Source(catalog), 60.0), journal=None, accept=refuse_accept)  # type: ignore[arg-type]
    return service._prepare(PROVIDER, "token", claims, now.timestamp())


def commit(
    catalog: CatalogSnapshot, report: wire.QueuedReport, now: dt.datetime = NOW
) -> tuple[str, str | None]:
    store = FakeStore()
    settings = Settings(billing_timezone="Europe/Tallinn")
    committer = Committer(
        store.unit_of_work,
        lambda: catalog,
        max_deliveries=3,
        retry_wait_max=0.0,
        clock=lambda: now + dt.timedelta(seconds=5),
        tz=settings.tz,  # what ingest/bootstrap.py passes: self.settings.tz
    )
    committer.commit([Delivery("1-0", 1, wire.encode(report), 1)])
    record = store.reports[report.id]
    return record.state, record.reason_code


def use(type_: str = "cpu", amount: str = "1") -> dict[str, Any]:
    return {"type": type_, "amount": amount}


ACCEPTED: list[Any] = [
    pytest.param({"resource": str(R), "usages": [use()]}, id="resource"),
    pytest.param({"resource": str(R), "usages": []}, id="no-usages"),
    pytest.param(
        {"plan_period": str(PP_EDGE.uuid), "usages": [use()]}, id="plan-period-ending-at-the-tz-edge"
    ),
    pytest.param({"plan_period": str(PP_OPEN.uuid), "usages": [use("storage")]}, id="plan-period-open"),
    pytest.param(
        {"resource": str(R), "usages": [use("storage"), use("licence")], "date": "2026-11-30T21:30:00Z"},
        id="backfill-limit-and-one",
    ),
    pytest.param(
        {"plan_period": str(PP_EDGE.uuid), "usages": [use("storage")], "date": "2026-11-15T00:00:00Z"},
        id="backfill-with-plan-period",
    ),
    pytest.param({"resource": str(R), "usages": [use()], "date": "2026-11-30T22:00:00Z"}, id="first-instant"),
]


@pytest.mark.parametrize("claims", ACCEPTED)
def test_what_intake_accepts_commits_against_the_same_catalog(claims: dict[str, Any]) -> None:
    catalog = _catalog()
    report = intake(catalog, claims)
    assert commit(catalog, report) == ("committed", None)


def _without_resource(catalog: CatalogSnapshot) -> CatalogSnapshot:
    return dataclasses.replace(catalog, resources={k: v for k, v in catalog.resources.items() if k != R})


def _with_state(state: str) -> Callable[[CatalogSnapshot], CatalogSnapshot]:
    def change(catalog: CatalogSnapshot) -> CatalogSnapshot:
        resources = dict(catalog.resources)
        resources[R] = dataclasses.replace(resources[R], state=state)
        return dataclasses.replace(catalog, resources=resources)

    return change


def _component(kind: str | None) -> Callable[[CatalogSnapshot], CatalogSnapshot]:
    def change(catalog: CatalogSnapshot) -> CatalogSnapshot:
        components = {k: v for k, v in COMPONENTS.items() if k != "cpu"}
        if kind is not None:
            components["cpu"] = kind
        return _catalog(list(catalog.resources.values()), list(catalog.plan_periods.values()), components)

    return change


def _period(end: dt.datetime | None, remove: bool = False) -> Callable[[CatalogSnapshot], CatalogSnapshot]:
    def change(catalog: CatalogSnapshot) -> CatalogSnapshot:
        periods = dict(catalog.plan_periods)
        if remove:
            del periods[PP_EDGE.uuid]
            kept: tuple[PlanPeriod, ...] = (PP_OPEN,)
        else:
            periods[PP_EDGE.uuid] = dataclasses.replace(PP_EDGE, end=end)
            kept = (periods[PP_EDGE.uuid], PP_OPEN)
        resources = dict(catalog.resources)
        resources[R] = dataclasses.replace(resources[R], plan_periods=kept)
        return dataclasses.replace(catalog, resources=resources, plan_periods=periods)

    return change


BY_RESOURCE = {"resource": str(R), "usages": [use()]}
BY_PERIOD = {"plan_period": str(PP_EDGE.uuid), "usages": [use()]}
NO_RESOURCE = {"resource": [f"Object with uuid={R} does not exist."]}
NO_PERIOD = {"plan_period": [f"Object with uuid={PP_EDGE.uuid} does not exist."]}
BAD_CPU = {"non_field_errors": ["These components are invalid: cpu."]}
CHANGES: list[Any] = [
    pytest.param(BY_RESOURCE, _without_resource, NO_RESOURCE, "resource_missing", id="resource-removed"),
    pytest.param(
        BY_PERIOD, _without_resource, NO_PERIOD, "resource_missing", id="resource-of-the-plan-period-removed"
    ),
    pytest.param(
        BY_RESOURCE,
        _with_state("Erred"),
        {"resource": ["Resource is not in valid state."]},
        "resource_state",
        id="state-erred",
    ),
    pytest.param(
        BY_PERIOD,
        _with_state("Creating"),
        {"resource": ["Resource is not in valid state."]},
        "resource_state",
        id="state-creating",
    ),
    pytest.param(BY_RESOURCE, _component(None), BAD_CPU, "component_invalid", id="component-removed"),
    pytest.param(BY_RESOURCE, _component("fixed"), BAD_CPU, "component_invalid", id="component-now-fixed"),
    pytest.param(
        BY_PERIOD, _period(None, remove=True), NO_PERIOD, "plan_period_missing", id="plan-period-removed"
    ),
    pytest.param(
        BY_PERIOD,
        _period(CLOSED_END),
        {"plan_period": ["Billing period is closed."]},
        "period_closed",
        id="plan-period-closed",
    ),
    pytest.param(
        {"plan_period": str(PP_EDGE.uuid), "usages": [use("storage")], "date": "2026-11-15T00:00:00Z"},
        _period(dt.datetime(2026, 11, 20, tzinfo=dt.UTC)),
        {"plan_period": ["Billing period is closed."]},
        "period_closed",
        id="plan-period-closed-under-a-backfill",
    ),
]


@pytest.mark.parametrize(("claims", "change", "intake_body", "code"), CHANGES)
def test_a_rule_broken_after_acceptance_quarantines_with_its_code(
    claims: dict[str, Any],
    change: Callable[[CatalogSnapshot], CatalogSnapshot],
    intake_body: dict[str, Any],
    code: str,
) -> None:
    before = _catalog()
    report = intake(before, claims)
    after = change(before)
    with pytest.raises(Rejected) as info:
        intake(after, claims)
    assert info.value.body == intake_body
    assert commit(after, report) == ("quarantined", code)


def test_closing_a_plan_period_after_the_tz_month_opened_changes_nothing() -> None:
    """The bug: the period now ends at 23:00Z on Nov 30, after December began in Tallinn."""
    before = _catalog()
    report = intake(before, BY_PERIOD)
    after = _period(dt.datetime(2026, 11, 30, 22, 30, tzinfo=dt.UTC))(before)
    assert intake(after, BY_PERIOD).plan_period == str(PP_EDGE.uuid)
    assert commit(after, report) == ("committed", None)


def test_commit_judges_the_month_of_acceptance_not_of_commit() -> None:
    """Accepted at 23:59 on Nov 30 (Tallinn), committed in December: the period that closed at
    the end of November was open when the report was accepted (contract difference 3)."""
    late = dt.datetime(2026, 11, 30, 21, 59, tzinfo=dt.UTC)
    period = dataclasses.replace(PP_EDGE, end=dt.datetime(2026, 11, 30, 21, 0, tzinfo=dt.UTC))
    catalog = _catalog([Resource(R, OFFERING, "OK", PLAN, (period, PP_OPEN))], [period, PP_OPEN])
    report = intake(catalog, BY_PERIOD, now=late)
    assert report.billing_period == "2026-11-01"
    assert commit(catalog, report, now=NOW) == ("committed", None)
