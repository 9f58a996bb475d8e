"""The signed payload, message for message, with no I/O.

``validate_report`` mirrors Waldur's ComponentUsageCreateSerializer against a CatalogSnapshot:
field errors are collected together in field order; the object-level (catalog) rules come from
``ingest.domain.rules`` and stop at the first failure, as DRF's ``validate()`` does. See
shared/docs/waldur-contract.md for the table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ingest.domain import rules
from ingest.domain.envelope import (
    NOT_BOOLEAN,
    NOT_STRING,
    NULL,
    REQUIRED,
    as_char,
    char_field,
    expected_dict,
    parse_boolean,
    text_problems,
)
from ingest.domain.errors import Forbidden, Rejected
from ingest.domain.ids import parse_uuid
from ingest.domain.model import (
    MISSING_USAGE_POLICIES,
    AmountError,
    CatalogSnapshot,
    PlanPeriod,
    Resource,
    month_start,
    month_start_instant,
    parse_amount,
)

DESCRIPTION_MAX = 2000
DATETIME_FORMAT = (
    "Datetime has wrong format. Use one of these formats instead: "
    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    type: str
    amount: Decimal
    description: str
    recurring: bool
    missing_usage_policy: str


@dataclasses.dataclass(frozen=True, slots=True)
class ValidReport:
    resource: Resource
    plan_period: PlanPeriod | None
    date: dt.datetime
    billing_period: dt.date
    lines: tuple[Line, ...]


def _line(item: object) -> tuple[Line | None, dict[str, Any]]:
    if not isinstance(item, dict):
        return None, {"non_field_errors": [expected_dict(item)]}
    errors: dict[str, Any] = {}
    type_ = char_field(item, "type", errors)
    type_problems = text_problems(type_) if type_ is not None else []
    if type_problems:
        errors["type"] = type_problems
        type_ = None
    amount: Decimal | None = None
    if "amount" not in item:
        errors["amount"] = [REQUIRED]
    elif item["amount"] is None:
        errors["amount"] = [NULL]
    else:
        try:
            amount = parse_amount(item["amount"])
        except AmountError as exc:
            errors["amount"] = [str(exc)]
    description = ""
    if "description" in item:
        raw = item["description"]
        text = as_char(raw)
        if raw is None:
            errors["description"] = [NULL]
        elif text is None:
            errors["description"] = [NOT_STRING]
        else:
            stripped = text.strip()
            problems = text_problems(stripped)
            if len(stripped) > DESCRIPTION_MAX:
                problems.insert(0, f"Ensure this field has no more than {DESCRIPTION_MAX} characters.")
            if problems:
                errors["description"] = problems
            else:
                description = stripped
    recurring = False
    if "recurring" in item:
        parsed = parse_boolean(item["recurring"])
        if parsed is None:
            errors["recurring"] = [NULL if item["recurring"] is None else NOT_BOOLEAN]
        else:
            recurring = parsed
    policy = "reuse" if recurring else "none"
    if "missing_usage_policy" in item:
        raw = item["missing_usage_policy"]
        if raw is None:
            errors["missing_usage_policy"] = [NULL]
        elif not isinstance(raw, str) or raw not in MISSING_USAGE_POLICIES:
            errors["missing_usage_policy"] = [f'"{raw}" is not a valid choice.']
        else:
            policy = raw
    if errors or type_ is None or amount is None:
        return None, errors
    return Line(type_, amount, description, recurring or policy == "reuse", policy), {}


def _parse_date(value: object, tz: ZoneInfo) -> dt.datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed


def _in_range(moment: dt.datetime, tz: ZoneInfo) -> bool:
    """An instant the calendar can hold in UTC and in the billing zone (not year 0 or 10000)."""
    try:
        moment.astimezone(dt.UTC)
        moment.astimezone(tz)
    except (OverflowError, ValueError):
        return False
    return True


def _related(
    claims: dict[str, Any],
    name: str,
    table: Mapping[uuid.UUID, Any],
    missing: Callable[[object], rules.Broken],
    errors: dict[str, Any],
) -> Any:
    """A DRF related-object field: "" counts as null; unparseable or unknown is not found."""
    if name not in claims:
        return None
    raw = claims[name]
    if raw is None or raw == "":
        errors[name] = [NULL]
        return None
    key = parse_uuid(raw)
    found = table.get(key) if key is not None else None
    if found is None:
        errors.update(missing(raw).body)
    return found


def validate_report(
    claims: dict[str, Any],
    catalog: CatalogSnapshot,
    customer: uuid.UUID,
    now: dt.datetime,
    tz: ZoneInfo,
    enforce_ownership: bool = True,
    max_lines: int = 100,
) -> ValidReport:
    """Apply rules a-n of the contract (and ownership); raise Rejected on the first failure."""
    errors: dict[str, Any] = {}
    lines: list[Line] = []
    if "usages" not in claims:
        errors["usages"] = [REQUIRED]
    elif claims["usages"] is None:
        errors["usages"] = [NULL]
    elif not isinstance(claims["usages"], list):
        kind = type(claims["usages"]).__name__
        errors["usages"] = {"non_field_errors": [f'Expected a list of items but got type "{kind}".']}
    elif len(claims["usages"]) > max_lines:
        errors["usages"] = {"non_field_errors": [f"Ensure this field has no more than {max_lines} elements."]}
    else:
        item_errors = []
        for item in claims["usages"]:
            line, problems = _line(item)
            item_errors.append(problems)
            if line is not None:
                lines.append(line)
        if any(item_errors):
            errors["usages"] = item_errors
    plan_period: PlanPeriod | None = _related(
        claims, "plan_period", catalog.plan_periods, rules.plan_period_missing, errors
    )
    if plan_period is not None:
        closed = rules.period_closed(plan_period, month_start_instant(now, tz))
        if closed is not None:
            errors.update(closed.body)
    resource: Resource | None = _related(
        claims, "resource", catalog.resources, rules.resource_missing, errors
    )
    date = now
    if "date" in claims:
        if claims["date"] is None:
            errors["date"] = [NULL]
        else:
            parsed = _parse_date(claims["date"], tz)
            if parsed is None:
                errors["date"] = [DATETIME_FORMAT]
            elif not _in_range(parsed, tz):
                errors["date"] = ["Datetime value out of the supported range."]
            else:
                date = parsed
    if errors:
        raise Rejected(errors)

    if plan_period is not None:
        resource = catalog.resources.get(plan_period.resource)
        if resource is None:
            raise rules.resource_of_period_missing(claims["plan_period"], plan_period.resource).rejected()
    elif resource is None:
        raise rules.either_or().rejected()
    if enforce_ownership and catalog.owner_of(resource) != customer:
        raise Forbidden()
    kinds = catalog.components_of(resource)
    billing_period = month_start(date, tz)
    broken = (
        rules.plan(resource)
        or rules.state(resource)
        or rules.components(lines, rules.reportable(kinds))
        or rules.future_date(date, now)
        or rules.backfill(billing_period, month_start(now, tz), kinds, lines)
    )
    if broken is not None:
        raise broken.rejected()
    if plan_period is None:
        plan_period = resource.plan_period_at(date, tz)
    return ValidReport(resource, plan_period, date, billing_period, tuple(lines))
