"""Domain types and rules with no I/O: usage keys, billing periods, amounts, the catalog snapshot."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import NamedTuple
from uuid import UUID
from zoneinfo import ZoneInfo

VALID_RESOURCE_STATES = frozenset({"OK", "UPDATING", "TERMINATING"})
REPORTABLE_BILLING_TYPES = frozenset({"usage", "limit", "one"})
BACKFILL_BILLING_TYPES = frozenset({"limit", "one"})
# Waldur's five (OfferingComponent.BillingTypes); `few` is "one-time on plan switch": held in
# the catalog, not reportable (set_usage takes usage, limit and, in 8.x, prepaid one)
BILLING_TYPES = frozenset({"usage", "limit", "fixed", "one", "few"})
MISSING_USAGE_POLICIES = ("none", "reuse", "zero")

MAX_DIGITS = 20
DECIMAL_PLACES = 2
MAX_WHOLE_DIGITS = MAX_DIGITS - DECIMAL_PLACES
MAX_STRING_LENGTH = 1000  # DRF refuses longer numeric strings before parsing them


class UsageKey(NamedTuple):
    """The dedupe key: in-batch dedupe, the upsert and the unique constraint all use it.

    Text forms (canonical uuid, YYYY-MM-01), so a worker never parses them per usage line."""

    resource: str
    component: str
    billing_period: str


@dataclasses.dataclass(frozen=True, slots=True)
class Provider:
    customer: UUID
    name: str
    secret: str | None
    previous_secret: str | None = None
    previous_secret_until: dt.datetime | None = None
    rate_limit: float | None = None  # reports per second; None: the service default

    def secrets(self, now: dt.datetime) -> list[str]:
        """Keys that verify now: the current one, and the previous one during its grace."""
        keys = [self.secret] if self.secret else []
        if self.previous_secret and self.previous_secret_until and now < self.previous_secret_until:
            keys.append(self.previous_secret)
        return keys


@dataclasses.dataclass(frozen=True, slots=True)
class Offering:
    uuid: UUID
    customer: UUID
    components: dict[str, str]  # component type -> billing type


@dataclasses.dataclass(frozen=True, slots=True)
class PlanPeriod:
    uuid: UUID
    resource: UUID
    start: dt.datetime | None
    end: dt.datetime | None

    def covers(self, moment: dt.datetime) -> bool:
        return (self.start is None or self.start <= moment) and (self.end is None or moment < self.end)


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    uuid: UUID
    offering: UUID
    state: str
    plan: UUID | None
    plan_periods: tuple[PlanPeriod, ...] = ()

    @property
    def state_is_valid(self) -> bool:
        return self.state.upper() in VALID_RESOURCE_STATES

    def plan_period_at(self, moment: dt.datetime, tz: ZoneInfo) -> PlanPeriod | None:
        """Waldur 8.x ``get_plan_period_for_billing`` without its creation step: the period
        covering ``moment``, else one overlapping the billing month of ``moment`` (in ``tz``).
        Among several, the latest start wins; a period with no start counts as the earliest."""
        found = _latest_start(p for p in self.plan_periods if p.covers(moment))
        if found is None:
            opened = month_start_instant(moment, tz)
            closes = next_month_start_instant(moment, tz)
            found = _latest_start(
                p
                for p in self.plan_periods
                if (p.start is None or p.start < closes) and (p.end is None or p.end >= opened)
            )
        return found


def _latest_start(periods: Iterable[PlanPeriod]) -> PlanPeriod | None:
    best: PlanPeriod | None = None
    for period in periods:
        if best is None or (period.start is not None and (best.start is None or period.start >= best.start)):
            best = period
    return best


@dataclasses.dataclass(frozen=True)
class CatalogSnapshot:
    """An immutable view of the catalog; the web cache swaps whole snapshots.

    ``resources`` and ``plan_periods`` are read-only mappings: plain dicts when built by hand
    (tests), compact tables (``catalog_index``) when loaded from SQL, where each ``get``
    builds the object from a few packed columns. Providers and offerings are few: dicts."""

    providers: dict[UUID, Provider]
    offerings: dict[UUID, Offering]
    resources: Mapping[UUID, Resource]
    plan_periods: Mapping[UUID, PlanPeriod]
    version: int = 0

    @classmethod
    def empty(cls) -> CatalogSnapshot:
        return cls({}, {}, {}, {}, 0)

    def owner_of(self, resource: Resource) -> UUID | None:
        offering = self.offerings.get(resource.offering)
        return offering.customer if offering else None

    def components_of(self, resource: Resource) -> dict[str, str]:
        offering = self.offerings.get(resource.offering)
        return offering.components if offering else {}


def month_start(moment: dt.datetime, tz: ZoneInfo) -> dt.date:
    local = moment.astimezone(tz)
    return dt.date(local.year, local.month, 1)


def month_start_instant(moment: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    day = month_start(moment, tz)
    return dt.datetime(day.year, day.month, 1, tzinfo=tz)


def next_month_start_instant(moment: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The first instant after the billing month of ``moment`` (December ends the year)."""
    day = month_start(moment, tz)
    if day.month == 12:
        if day.year == dt.MAXYEAR:
            return dt.datetime.max.replace(tzinfo=dt.UTC)
        return dt.datetime(day.year + 1, 1, 1, tzinfo=tz)
    return dt.datetime(day.year, day.month + 1, 1, tzinfo=tz)


class AmountError(ValueError):
    pass


def parse_amount(value: object) -> Decimal:
    """Apply DRF's DecimalField(max_digits=20, decimal_places=2) rules exactly; never round."""
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise AmountError("A valid number is required.")
    text = str(value).strip()
    if len(text) > MAX_STRING_LENGTH:
        raise AmountError("String value too large.")
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        raise AmountError("A valid number is required.") from exc
    if not number.is_finite():
        raise AmountError("A valid number is required.")
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    if exponent >= 0:
        total = len(digits) + exponent
        whole = total
        places = 0
    elif len(digits) > -exponent:
        total = len(digits)
        whole = total + exponent
        places = -exponent
    else:
        total = -exponent
        whole = 0
        places = total
    if total > MAX_DIGITS:
        raise AmountError(f"Ensure that there are no more than {MAX_DIGITS} digits in total.")
    if places > DECIMAL_PLACES:
        raise AmountError(f"Ensure that there are no more than {DECIMAL_PLACES} decimal places.")
    if whole > MAX_WHOLE_DIGITS:
        raise AmountError(
            f"Ensure that there are no more than {MAX_WHOLE_DIGITS} digits before the decimal point."
        )
    return number.quantize(Decimal("0.01"))
