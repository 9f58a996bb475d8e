"""Waldur 8.x plan-period relinking, through intake, the Committer and the real SqlUnitOfWork
(SQLite and PostgreSQL): a resubmission after a wider plan period appears updates the same
usage row, keyed (resource, component, billing period), and links it to the new period."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from ingest.adapters.sql.read_model import usage_rows
from ingest.adapters.sql.unit_of_work import SqlUnitOfWork, make_engine
from ingest.config import Settings
from ingest.domain.model import CatalogSnapshot, Offering, PlanPeriod, Provider, Resource
from ingest.services.catalog_cache import CatalogCache
from ingest.services.commit import Committer
from ingest.services.intake import Intake
from ingest.services.ports import Delivery
from schemas import queue as wire
from tests.unit.fakes import refuse_accept

SETTINGS = Settings(billing_timezone="Europe/Tallinn")
PROVIDER, OFFERING, PLAN, RESOURCE = (uuid.uuid4() for _ in range(4))
# 00:30 on Nov 1 in Tallinn (still October in UTC)
DATE = "2026-10-31T22:30:00Z"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
MID_MONTH = PlanPeriod(uuid.uuid4(), RESOURCE, dt.datetime(2026, 11, 10, tzinfo=dt.UTC), None)
WIDER = PlanPeriod(uuid.uuid4(), RESOURCE, dt.datetime(2026, 10, 1, tzinfo=dt.UTC), None)


def snapshot(*periods: PlanPeriod, version: int) -> CatalogSnapshot:
    return CatalogSnapshot(
        {PROVIDER: Provider(PROVIDER, "p", "secret-1234567890")},
        {OFFERING: Offering(OFFERING, PROVIDER, {"cpu": "usage"})},
        {RESOURCE: Resource(RESOURCE, OFFERING, "OK", PLAN, periods)},
        {p.uuid: p for p in periods},
        version,
    )


class _Source:
    def __init__(self, snap: CatalogSnapshot) -> None:
        self.snap = snap

    def version(self) -> int:
        return self.snap.version

    def snapshot(self) -> CatalogSnapshot:
        return self.snap


def accept(catalog: CatalogSnapshot, claims: dict[str, Any], at: dt.datetime) -> wire.QueuedReport:
    intake = Intake(SETTINGS, CatalogCache(_Source(catalog), 60.0), journal=None, accept=refuse_accept)  # type: ignore[arg-type]
    return intake._prepare(PROVIDER, "token", claims, at.timestamp())


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    made = make_engine(database_url)
    yield made
    made.dispose()


def test_resubmission_after_a_wider_plan_period_relinks_the_same_row(engine: sa.Engine) -> None:
    current = {"catalog": snapshot(MID_MONTH, version=1)}
    committer = Committer(
        lambda: SqlUnitOfWork(engine),
        lambda: current["catalog"],
        max_deliveries=3,
        retry_wait_max=0.0,
        clock=lambda: NOW,
        tz=SETTINGS.tz,  # what ingest/bootstrap.py passes: self.settings.tz
    )
    claims = {"resource": str(RESOURCE), "date": DATE, "usages": [{"type": "cpu", "amount": "5"}]}

    first = accept(current["catalog"], claims, NOW)
    # no period covers Nov 1 00:30 (Tallinn); the one starting on Nov 10 overlaps the month
    assert (first.billing_period, first.plan_period) == ("2026-11-01", str(MID_MONTH.uuid))
    assert committer.commit([Delivery("1-0", 1, wire.encode(first), 1)]).committed == [first.id]

    current["catalog"] = snapshot(MID_MONTH, WIDER, version=2)
    second = accept(current["catalog"], {**claims, "usages": [{"type": "cpu", "amount": "7"}]}, NOW)
    assert second.plan_period == str(WIDER.uuid)  # it covers the date itself
    assert committer.commit([Delivery("2-0", 2, wire.encode(second), 1)]).committed == [second.id]

    rows = usage_rows(engine, RESOURCE)
    assert [(r["billing_period"], r["component"], r["amount"], r["plan_period"]) for r in rows] == [
        ("2026-11-01", "cpu", "7.00", str(WIDER.uuid))
    ]
    assert rows[0]["report_id"] == second.id
