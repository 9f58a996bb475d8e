"""``set_usage`` as Waldur does it (§3 of waldur-bridge.md): validate, then the permission,
then upsert per (resource, component, billing period, plan period), last write wins.

Mode 8 follows the 8.x serializer; mode 7.0.7 reproduces what a running 7.0.7 did.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from ingest.dev.fake_waldur.formats import UTC, month_start, month_start_instant, parse_instant, parse_uuid
from ingest.dev.fake_waldur.store import PlanPeriod, Resource, Store, Usage, User

FORBIDDEN = {"detail": "You do not have permission to perform this action."}
VALID_STATES = ("OK", "Updating", "Terminating")
SP_BACKFILL = (
    "Service providers can only specify date for limit-based or prepaid billing components "
    "when backfilling past billing periods."
)
OTHER_BACKFILL = "Only staff users and service providers can specify date for backfilling"
DATE_FORMAT = (
    "Datetime has wrong format. Use one of these formats instead: "
    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)
SERVER_ERROR_PAGE = (
    '\n<!doctype html>\n<html lang="en">\n<head>\n  <title>Server Error (500)</title>\n</head>\n'
    "<body>\n  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n"
)


@dataclasses.dataclass
class Outcome:
    status: int
    body: Any = None  # JSON-able, or the HTML page when html
    html: bool = False
    resource: Resource | None = None


def _bad(body: Any) -> Outcome:
    return Outcome(400, body)


def amount_error(value: Any) -> tuple[Decimal | None, str | None]:
    if value is None:
        return None, "This field may not be null."
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None, "A valid number is required."
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:
        return None, "A valid number is required."
    if not number.is_finite():
        return None, "A valid number is required."
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    if exponent >= 0:
        total, whole, places = len(digits) + exponent, len(digits) + exponent, 0
    elif len(digits) > -exponent:
        total, whole, places = len(digits), len(digits) + exponent, -exponent
    else:
        total, whole, places = -exponent, 0, -exponent
    if total > 20:  # DRF's DecimalField(max_digits=20, decimal_places=2), its order of checks
        return None, "Ensure that there are no more than 20 digits in total."
    if places > 2:
        return None, "Ensure that there are no more than 2 decimal places."
    if whole > 18:
        return None, "Ensure that there are no more than 18 digits before the decimal point."
    return number.quantize(Decimal("0.01")), None  # DRF quantizes to the field's places


def _items(raw: Any, mode8: bool) -> tuple[list[dict[str, Any]], Any]:
    if not isinstance(raw, list):
        return [], [f'Expected a list of items but got type "{type(raw).__name__}".']
    items: list[dict[str, Any]] = []
    errors: list[dict[str, list[str]]] = []
    for entry in raw:
        problems: dict[str, list[str]] = {}
        if not isinstance(entry, dict):
            errors.append({"non_field_errors": ["Invalid data. Expected a dictionary."]})
            continue
        type_ = entry.get("type")
        if type_ is None:
            problems["type"] = [
                "This field is required." if "type" not in entry else "This field may not be null."
            ]
        elif not str(type_).strip():
            problems["type"] = ["This field may not be blank."]
        if "amount" not in entry:
            problems["amount"] = ["This field is required."]
            number = None
        else:
            number, why = amount_error(entry["amount"])
            if why:
                problems["amount"] = [why]
        description = str(entry.get("description") or "")
        if mode8 and len(description) > 2000:
            problems["description"] = ["Ensure this field has no more than 2000 characters."]
        recurring = entry.get("recurring", False)
        if recurring is not None and not isinstance(recurring, bool):
            problems["recurring"] = ["Must be a valid boolean."]
        policy = entry.get("missing_usage_policy")
        if mode8 and policy is not None and policy not in ("none", "reuse", "zero"):
            problems["missing_usage_policy"] = [f'"{policy}" is not a valid choice.']
        errors.append(problems)
        if not problems:
            policy = policy or ("reuse" if recurring else "none")
            items.append(
                {
                    "type": str(type_),
                    "amount": number,
                    "description": description,
                    "recurring": bool(recurring),
                    "policy": policy,
                }
            )
    return items, (errors if any(errors) else None)


def _resolve_period(
    store: Store, resource: Resource, moment: dt.datetime, zone: dt.tzinfo
) -> PlanPeriod | None:
    now = store.now()
    if store.config.mode != "8":  # 7.x: the latest-starting period covering now
        covering = [
            p
            for p in resource.plan_periods
            if (p.start is None or p.start <= now) and (p.end is None or p.end > now)
        ]
        return max(covering, key=lambda p: p.start or dt.datetime.min.replace(tzinfo=UTC), default=None)
    first = month_start_instant(moment, zone)
    after = (first + dt.timedelta(days=32)).replace(day=1)
    overlapping = [
        p
        for p in resource.plan_periods
        if (p.start is None or p.start < after) and (p.end is None or p.end >= first)
    ]
    early = dt.datetime.min.replace(tzinfo=UTC)
    started = [p for p in overlapping if (p.start or early) <= moment]
    if started:
        return max(started, key=lambda p: p.start or early)
    if overlapping:  # a period starting mid-month takes usage dated at the month start
        return min(overlapping, key=lambda p: p.start or early)
    if resource.plan is not None and month_start(moment, zone) == month_start(now, zone):
        created = PlanPeriod(uuid=uuid.uuid4(), plan=resource.plan, start=first, end=None)
        resource.plan_periods.append(created)
        store.changed()  # a new plan period: the index must see it
        return created
    return None


def set_usage(store: Store, user: User, payload: Any) -> Outcome:
    """Validate ``payload`` as ComponentUsageCreateSerializer would, check the caller's
    right, write. Holds the store lock throughout, like Waldur's atomic transaction."""
    with store.lock:
        return _set_usage(store, user, payload)


def _set_usage(store: Store, user: User, payload: Any) -> Outcome:
    mode8 = store.config.mode == "8"
    zone = store.config.zone() if mode8 else UTC
    now = store.now()
    if payload is None:
        return _bad({"non_field_errors": ["No data provided"]})
    if not isinstance(payload, dict):
        return _bad(
            {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(payload).__name__}."]}
        )
    errors: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    if "usages" not in payload:
        errors["usages"] = ["This field is required."]
    else:
        items, item_errors = _items(payload["usages"], mode8)
        if item_errors:
            errors["usages"] = item_errors
    resource: Resource | None = None
    period: PlanPeriod | None = None
    for name in ("resource", "plan_period"):
        value = payload.get(name)
        if value is None:
            continue
        key = parse_uuid(str(value))
        if key is None:
            errors[name] = [f"“{value}” is not a valid UUID."]
        elif name == "resource":
            resource = store.resources.get(key)
            if resource is None:
                errors[name] = [f"Object with uuid={value} does not exist."]
        else:
            found = store.plan_period(key)
            if found is None:
                errors[name] = [f"Object with uuid={value} does not exist."]
            else:
                resource, period = found
                if period.end is not None and period.end < month_start_instant(now, zone):
                    errors[name] = ["Billing period is closed."]
    date: dt.datetime | None = None
    if mode8 and payload.get("date") is not None:
        date = parse_instant(payload["date"])
        if date is None:
            errors["date"] = [DATE_FORMAT]
    if errors:
        return _bad(errors)
    if resource is None:
        return _bad({"non_field_errors": ["Either plan_period or resource should be provided."]})
    offering = resource.offering
    if mode8 and resource.plan is None:
        return _bad({"non_field_errors": ["Resource must have a plan to report usage"]})
    if resource.state not in VALID_STATES:
        return _bad({"resource": ["Resource is not in valid state."]})
    reportable = ("usage", "limit", "one") if mode8 else ("usage", "limit")
    valid = {c.type for c in offering.components if c.billing_type in reportable}
    invalid = sorted({i["type"] for i in items} - valid)
    if invalid:
        return _bad({"non_field_errors": [f"These components are invalid: {', '.join(invalid)}."]})
    if date is not None:
        if date > now:
            return _bad({"date": ["Cannot submit usage for future dates"]})
        if month_start(date, zone) < month_start(now, zone) and not user.is_staff:
            if not user.provides(offering):
                return _bad({"date": [OTHER_BACKFILL]})
            kinds = {c.type: c.billing_type for c in offering.components}
            if any(kinds[i["type"]] not in ("limit", "one") for i in items):
                return _bad({"date": [SP_BACKFILL]})
    if not (user.is_staff or user.provides(offering)):
        return Outcome(403, FORBIDDEN, resource=resource)
    if not mode8:
        crash = resource.plan is None or any(
            len(i["description"]) > 2000 or abs(i["amount"]) >= Decimal(10) ** 12 for i in items
        )
        if crash:
            return Outcome(500, SERVER_ERROR_PAGE, html=True, resource=resource)
        over = _over_limit(store, resource, items, now)
        if over:
            return Outcome(400, [over], resource=resource)
    _write(store, user, resource, period, items, date, zone)
    return Outcome(201, resource=resource)


def _over_limit(
    store: Store, resource: Resource, items: list[dict[str, Any]], now: dt.datetime
) -> str | None:
    """7.x OfferingComponent.validate_amount: stored usage of the limit period plus the new
    amount must not pass the limit. The period's rows are the year's ("annual"), all ("total")
    or, for "month", those dated exactly at the month start, as 7.x filters: in practice
    none, since rows carry the time of the report. So annual and total limits count the
    current month's own row too, and re-sending the same value can be refused."""
    billing = month_start(now, UTC)
    first = month_start_instant(now, UTC)
    for item in items:
        component = resource.offering.component(item["type"])
        assert component is not None
        if not component.limit_period or not component.limit_amount:
            continue
        total: Decimal = item["amount"] + sum(
            (
                u.usage
                for u in store.usages_of(resource)
                if u.component is component
                and (
                    component.limit_period == "total"
                    or (component.limit_period == "annual" and u.billing_period.year == billing.year)
                    or (component.limit_period == "month" and u.date == first)
                )
            ),
            Decimal(0),
        )
        if total > component.limit_amount:
            return f"Total amount exceeds limit. Total amount: {total}, limit: {component.limit_amount}."
    return None


def _write(
    store: Store,
    user: User,
    resource: Resource,
    period: PlanPeriod | None,
    items: list[dict[str, Any]],
    date: dt.datetime | None,
    zone: dt.tzinfo,
) -> None:
    moment = date or store.now()
    billing = month_start(moment, zone)
    if period is None:
        period = _resolve_period(store, resource, moment, zone)
    latest = {i["type"]: i for i in items}  # a repeated type: the last line wins
    for type_, item in latest.items():
        component = resource.offering.component(type_)
        assert component is not None
        for u in store.usages_of(resource):
            if u.component is component and u.billing_period == billing:
                u.recurring = False
        key = (resource.uuid, type_, billing, period.uuid if period else None)
        stamp = store.stamp()
        if period is not None:  # 8.x consolidates a legacy NULL-plan-period twin
            store.drop_usage((resource.uuid, type_, billing, None))
        row = store.usages.get(key)
        if row is None:
            row = Usage(
                uuid.uuid4(), resource, component, billing, period, item["amount"], "", moment, stamp, stamp
            )
            store.put_usage(key, row)
        row.usage = item["amount"]
        row.description = item["description"]
        row.date = moment
        row.modified = stamp
        row.recurring = item["recurring"]
        row.missing_usage_policy = item["policy"]
        row.modified_by = user.username
    resource.current_usages = {t: i["amount"] for t, i in latest.items()}
    resource.modified = store.stamp()
    store.changed(layout=False)
