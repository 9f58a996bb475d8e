"""The catalog rules of set_usage, in one home.

Intake (``validation.validate_report``) answers a broken rule with Waldur's 400 body; commit
(``services.commit.CatalogCheck``) quarantines with the rule's reason code. Both call these
functions, so the two can never judge a report differently. Each rule returns ``None`` when
it holds (nothing is built on the hot path) or a ``Broken`` naming both outcomes. Pure
functions over the domain model: callers cache what they derive (the commit path caches per
catalog snapshot).

Object-level order (Waldur 8.x; ownership is ours): either/or -> ownership -> plan -> state
-> components -> future date -> backfill.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from ingest.domain.errors import Quarantine, Rejected
from ingest.domain.model import (
    BACKFILL_BILLING_TYPES,
    REPORTABLE_BILLING_TYPES,
    PlanPeriod,
    Resource,
)

BACKFILL_MESSAGE = (
    "Service providers can only specify date for limit-based or prepaid billing "
    "components when backfilling past billing periods."
)


@dataclasses.dataclass(frozen=True, slots=True)
class Broken:
    """A broken rule: ``code`` is the quarantine reason at commit, ``body`` Waldur's 400
    body at intake, ``detail`` the quarantine message."""

    code: str
    body: dict[str, Any]
    detail: str

    def rejected(self) -> Rejected:
        return Rejected(self.body)

    def quarantine(self) -> Quarantine:
        return Quarantine(self.code, self.detail)


class Typed(Protocol):
    """A usage line as intake (``validation.Line``) and the journal (``UsageLine``) hold it."""

    @property
    def type(self) -> str: ...


def does_not_exist(value: object) -> str:
    return f"Object with uuid={value} does not exist."


def resource_missing(raw: object) -> Broken:
    """Rule h: the named resource does not exist (or no longer does)."""
    return Broken("resource_missing", {"resource": [does_not_exist(raw)]}, f"resource {raw} no longer exists")


def resource_of_period_missing(raw_period: object, resource: object) -> Broken:
    """Rule f for a plan period whose resource is gone: Waldur cannot find the period."""
    return Broken(
        "resource_missing",
        {"plan_period": [does_not_exist(raw_period)]},
        f"resource {resource} no longer exists",
    )


def plan_period_missing(raw: object) -> Broken:
    """Rule f: the named plan period does not exist (or no longer does)."""
    return Broken("plan_period_missing", {"plan_period": [does_not_exist(raw)]}, f"plan period {raw} is gone")


def either_or() -> Broken:
    """Rule i: neither a resource nor a plan period was named (intake only)."""
    return Broken(
        "no_resource",
        {"non_field_errors": ["Either plan_period or resource should be provided."]},
        "the report names neither a resource nor a plan period",
    )


def period_closed(period: PlanPeriod, opened: dt.datetime) -> Broken | None:
    """Rule g: the plan period ended before the billing month of acceptance opened.

    ``opened`` is ``model.month_start_instant(accepted, tz)`` in the billing time zone: the
    same instant at intake (accepted = now) and at commit (accepted = the report's
    ``accepted_at``), so a report committed after midnight is judged as when accepted."""
    if period.end is not None and period.end < opened:
        return Broken(
            "period_closed",
            {"plan_period": ["Billing period is closed."]},
            "the plan period closed before the month of acceptance",
        )
    return None


def plan(resource: Resource) -> Broken | None:
    """Rule l: the resource must have a plan (checked before its state, as in Waldur 8.x)."""
    if resource.plan is None:
        return Broken(
            "plan_missing",
            {"non_field_errors": ["Resource must have a plan to report usage"]},
            "resource has no plan",
        )
    return None


def state(resource: Resource) -> Broken | None:
    """Rule j: OK, UPDATING or TERMINATING."""
    if not resource.state_is_valid:
        return Broken(
            "resource_state",
            {"resource": ["Resource is not in valid state."]},
            f"resource is in state {resource.state}",
        )
    return None


def reportable(components: Mapping[str, str]) -> frozenset[str]:
    """The component types usage may be reported for (billing type usage, limit or one)."""
    return frozenset(name for name, kind in components.items() if kind in REPORTABLE_BILLING_TYPES)


def components(lines: Collection[Typed], allowed: Collection[str]) -> Broken | None:
    """Rule k: every line names a reportable component (``allowed`` = ``reportable(...)``)."""
    for line in lines:
        if line.type not in allowed:
            invalid = ", ".join(sorted({u.type for u in lines if u.type not in allowed}))
            return Broken(
                "component_invalid",
                {"non_field_errors": [f"These components are invalid: {invalid}."]},
                f"components no longer valid: {invalid}",
            )
    return None


def future_date(date: dt.datetime, now: dt.datetime) -> Broken | None:
    """Rule m (intake only: the date is fixed at acceptance)."""
    if date > now:
        return Broken("future_date", {"date": ["Cannot submit usage for future dates"]}, "date in the future")
    return None


def backfill(
    billing_period: dt.date,
    current_period: dt.date,
    kinds: Mapping[str, str],
    lines: Collection[Typed],
) -> Broken | None:
    """Rule n: a past billing period only for limit and one (prepaid) components."""
    if billing_period < current_period and any(
        kinds.get(line.type) not in BACKFILL_BILLING_TYPES for line in lines
    ):
        return Broken("backfill", {"date": [BACKFILL_MESSAGE]}, "backfill of a usage-billed component")
    return None
