"""ingest.domain.rules and plan-period resolution (model.Resource.plan_period_at): pure
functions, no I/O. The intake/commit agreement is tests/unit/test_rules_agree.py."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest

from ingest.domain import rules
from ingest.domain.model import PlanPeriod, Resource, month_start_instant
from schemas import queue as wire

UTC = ZoneInfo("UTC")
TALLINN = ZoneInfo("Europe/Tallinn")  # UTC+2 in October (after the 25th) and November
R = uuid.uuid4()


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def period(start: dt.datetime | None, end: dt.datetime | None) -> PlanPeriod:
    return PlanPeriod(uuid.uuid4(), R, start, end)


def resource(*periods: PlanPeriod) -> Resource:
    return Resource(R, uuid.uuid4(), "OK", uuid.uuid4(), periods)


# ----------------------------------------------------------------------------- plan periods


def test_of_several_covering_periods_the_latest_start_wins_in_any_order():
    early, late = period(at(2026, 1, 1), None), period(at(2026, 11, 10), None)
    for periods in [(early, late), (late, early)]:
        assert resource(*periods).plan_period_at(at(2026, 11, 15), TALLINN) is late


def test_a_covering_period_without_start_counts_as_the_earliest():
    open_start, dated = period(None, None), period(at(2026, 11, 1), None)
    for periods in [(open_start, dated), (dated, open_start)]:
        assert resource(*periods).plan_period_at(at(2026, 11, 15), TALLINN) is dated
    assert resource(open_start).plan_period_at(at(2026, 11, 15), TALLINN) is open_start


def test_the_end_of_a_period_does_not_cover_that_instant():
    ended, next_ = period(at(2026, 1, 1), at(2026, 11, 10)), period(at(2026, 11, 10), None)
    assert resource(ended, next_).plan_period_at(at(2026, 11, 9, 23, 59), UTC) is ended
    assert resource(ended, next_).plan_period_at(at(2026, 11, 10), UTC) is next_


def test_without_a_covering_period_one_overlapping_the_billing_month_is_used():
    # Nov 1 00:30 in Tallinn: a period starting mid-November links usage dated at the month start
    moment = at(2026, 10, 31, 22, 30)
    mid_month = period(at(2026, 11, 10), None)
    later_still = period(at(2026, 11, 20), at(2026, 11, 25))
    assert resource(mid_month).plan_period_at(moment, TALLINN) is mid_month
    assert resource(mid_month, later_still).plan_period_at(moment, TALLINN) is later_still
    # in UTC the same instant is in October, which no period overlaps
    assert resource(mid_month).plan_period_at(moment, UTC) is None


def test_the_billing_month_overlap_is_judged_in_the_billing_timezone():
    moment = at(2026, 11, 15)
    # opens Dec 1 00:00 Tallinn = Nov 30 22:00Z: after November in Tallinn, inside it in UTC
    december = period(at(2026, 11, 30, 22, 0), None)
    assert resource(december).plan_period_at(moment, TALLINN) is None
    assert resource(december).plan_period_at(moment, UTC) is december
    # ended exactly when November opened in Tallinn (Oct 31 22:00Z): the overlap is inclusive
    touching = period(at(2026, 1, 1), at(2026, 10, 31, 22, 0))
    before = period(at(2026, 1, 1), at(2026, 10, 31, 21, 59))
    assert resource(touching).plan_period_at(moment, TALLINN) is touching
    assert resource(before).plan_period_at(moment, TALLINN) is None


def test_no_plan_period_at_all_is_none():
    assert resource().plan_period_at(at(2026, 11, 15), TALLINN) is None


def test_december_of_the_last_year_has_an_end():
    last = dt.datetime(9999, 12, 15, tzinfo=dt.UTC)
    assert resource(period(at(9999, 12, 20), None)).plan_period_at(last, UTC) is not None


# ----------------------------------------------------------------------------- rules


def test_period_closed_is_strictly_before_the_month_opened():
    opened = month_start_instant(at(2026, 11, 15), TALLINN)
    assert opened == at(2026, 10, 31, 22, 0)
    assert rules.period_closed(period(None, opened), opened) is None
    assert rules.period_closed(period(None, None), opened) is None
    broken = rules.period_closed(period(None, opened - dt.timedelta(microseconds=1)), opened)
    assert broken is not None
    assert (broken.code, broken.body) == ("period_closed", {"plan_period": ["Billing period is closed."]})


def test_components_lists_every_invalid_type_sorted_once():
    lines = [wire.UsageLine(t, "1") for t in ["zeta", "cpu", "alpha", "zeta"]]
    broken = rules.components(lines, rules.reportable({"cpu": "usage", "support": "fixed"}))
    assert broken is not None
    assert broken.code == "component_invalid"
    assert broken.body == {"non_field_errors": ["These components are invalid: alpha, zeta."]}
    assert broken.quarantine().code == "component_invalid"
    assert rules.components(lines[1:2], frozenset({"cpu"})) is None


def test_reportable_billing_types():
    kinds = {"a": "usage", "b": "limit", "c": "one", "d": "fixed"}
    assert rules.reportable(kinds) == frozenset({"a", "b", "c"})


@pytest.mark.parametrize(
    ("state", "plan", "code"),
    [
        ("OK", None, "plan_missing"),
        ("Creating", None, "plan_missing"),
        ("Erred", uuid.uuid4(), "resource_state"),
    ],
)
def test_plan_comes_before_state(state, plan, code):
    res = Resource(R, uuid.uuid4(), state, plan)
    broken = rules.plan(res) or rules.state(res)
    assert broken is not None and broken.code == code
