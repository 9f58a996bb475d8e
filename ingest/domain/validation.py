"""Waldur's request rules, message for message, with no I/O.

``parse_envelope`` mirrors ServiceProviderSignatureSerializer (customer, data, dry_run);
``validate_report`` mirrors ComponentUsageCreateSerializer against a CatalogSnapshot. Field
errors are collected together in field order; object-level rules stop at the first failure,
as DRF's ``validate()`` does. See shared/docs/waldur-contract.md for the table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Container
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ingest.domain.errors import Forbidden, Rejected, field_error, non_field_error
from ingest.domain.ids import parse_uuid
from ingest.domain.model import (
    BACKFILL_BILLING_TYPES,
    MISSING_USAGE_POLICIES,
    REPORTABLE_BILLING_TYPES,
    AmountError,
    CatalogSnapshot,
    PlanPeriod,
    Resource,
    month_start,
    month_start_instant,
    parse_amount,
)

REQUIRED = "This field is required."
BLANK = "This field may not be blank."
NULL = "This field may not be null."
NOT_STRING = "Not a valid string."
NOT_BOOLEAN = "Must be a valid boolean."
DESCRIPTION_MAX = 2000
DATETIME_FORMAT = (
    "Datetime has wrong format. Use one of these formats instead: "
    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)
TRUE_VALUES = frozenset(
    {"t", "T", "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "1"}
)
FALSE_VALUES = frozenset(
    {"f", "F", "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "0"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    customer: uuid.UUID
    data: str
    dry_run: bool


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


def does_not_exist(value: object) -> str:
    return f"Object with uuid={value} does not exist."


def expected_dict(value: object) -> str:
    return f"Invalid data. Expected a dictionary, but got {type(value).__name__}."


def parse_boolean(value: object) -> bool | None:
    """DRF BooleanField: None when the value is not boolean-like."""
    if value is True or value is False:
        return value
    if isinstance(value, float) and value in (0.0, 1.0):  # DRF's sets hold 1 and 0.0: 1.0 == 1
        return value == 1.0
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        key = value if isinstance(value, str) else str(value) if value in (0, 1) else None
        if key in TRUE_VALUES:
            return True
        if key in FALSE_VALUES:
            return False
    return None


def _char_field(body: dict[str, Any], name: str, errors: dict[str, Any]) -> str | None:
    if name not in body:
        errors[name] = [REQUIRED]
        return None
    value = body[name]
    if value is None:
        errors[name] = [NULL]
        return None
    if not isinstance(value, str):
        errors[name] = [NOT_STRING]
        return None
    value = value.strip()
    if not value:
        errors[name] = [BLANK]
        return None
    return value


_SURROGATE = re.compile("[\ud800-\udfff]").search


def text_problems(value: str) -> list[str]:
    """DRF CharField's last two validators: PostgreSQL text cannot hold NUL, and a lone
    surrogate (JSON "\\ud800") is not UTF-8. Either made an accepted report fail its commit."""
    problems = []
    if "\x00" in value:
        problems.append("Null characters are not allowed.")
    found = _SURROGATE(value)
    if found:
        problems.append(f"Surrogate characters are not allowed: U+{ord(found.group()):X}.")
    return problems


def parse_envelope(body: object, known_customers: Container[uuid.UUID] | None = None) -> Envelope:
    """Validate customer / data / dry_run; raise Rejected with every field error at once.

    ``known_customers`` decides "does not exist" for a well-formed UUID; None skips that check
    (the caller then looks the customer up itself).
    """
    if not isinstance(body, dict):
        raise non_field_error(expected_dict(body))
    errors: dict[str, Any] = {}
    customer: uuid.UUID | None = None
    if "customer" not in body:
        errors["customer"] = [REQUIRED]
    elif body["customer"] is None:
        errors["customer"] = [NULL]
    else:
        raw = body["customer"]
        customer = parse_uuid(raw)
        if customer is None or (known_customers is not None and customer not in known_customers):
            errors["customer"] = [does_not_exist(raw)]
            customer = None
    data = _char_field(body, "data", errors)
    dry_run = False
    if "dry_run" in body:
        raw_dry = body["dry_run"]
        parsed = parse_boolean(raw_dry) if raw_dry is not None else None
        if parsed is None:
            errors["dry_run"] = [NULL if raw_dry is None else NOT_BOOLEAN]
        else:
            dry_run = parsed
    if errors:
        raise Rejected(errors)
    assert customer is not None and data is not None
    return Envelope(customer, data, dry_run)


@dataclasses.dataclass(frozen=True, slots=True)
class BatchEnvelope:
    customer: uuid.UUID
    reports: list[Any]
    dry_run: bool


def parse_batch_envelope(
    body: object, known_customers: Container[uuid.UUID], max_reports: int
) -> BatchEnvelope:
    """customer / reports / dry_run of the batch endpoint, with set_usage's messages."""
    if not isinstance(body, dict):
        raise non_field_error(expected_dict(body))
    envelope_errors: dict[str, Any] = {}
    try:
        parse_envelope({**body, "data": "x"}, known_customers)
    except Rejected as exc:
        envelope_errors.update(exc.body)
    reports = body.get("reports")
    if "reports" not in body:
        envelope_errors["reports"] = [REQUIRED]
    elif not isinstance(reports, list):
        envelope_errors["reports"] = [f'Expected a list of items but got type "{type(reports).__name__}".']
    elif len(reports) > max_reports:
        raise Rejected(
            {"reports": [f"Ensure this field has no more than {max_reports} elements."]}, status=413
        )
    if envelope_errors:
        raise Rejected(envelope_errors)
    dry_run = parse_boolean(body.get("dry_run", False)) or False
    return BatchEnvelope(uuid.UUID(str(parse_uuid(body["customer"]))), list(reports or []), dry_run)


def _line(item: object) -> tuple[Line | None, dict[str, Any]]:
    if not isinstance(item, dict):
        return None, {"non_field_errors": [expected_dict(item)]}
    errors: dict[str, Any] = {}
    type_ = _char_field(item, "type", errors)
    # checked here, not in _char_field: a token (data) holding them fails verification anyway
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
        if raw is None:
            errors["description"] = [NULL]
        elif not isinstance(raw, str):
            errors["description"] = [NOT_STRING]
        else:
            stripped = raw.strip()
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


def _related(claims: dict[str, Any], name: str, table: dict[uuid.UUID, Any], errors: dict[str, Any]) -> Any:
    if name not in claims:
        return None
    raw = claims[name]
    if raw is None:
        errors[name] = [NULL]
        return None
    key = parse_uuid(raw)
    found = table.get(key) if key is not None else None
    if found is None:
        errors[name] = [does_not_exist(raw)]
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
    plan_period: PlanPeriod | None = _related(claims, "plan_period", catalog.plan_periods, errors)
    if (
        plan_period is not None
        and plan_period.end is not None
        and plan_period.end < month_start_instant(now, tz)
    ):
        errors["plan_period"] = ["Billing period is closed."]
    resource: Resource | None = _related(claims, "resource", catalog.resources, errors)
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
            raise field_error("plan_period", does_not_exist(claims["plan_period"]))
    elif resource is None:
        raise non_field_error("Either plan_period or resource should be provided.")
    if enforce_ownership and catalog.owner_of(resource) != customer:
        raise Forbidden()
    if not resource.state_is_valid:
        raise field_error("resource", "Resource is not in valid state.")
    components = catalog.components_of(resource)
    invalid = sorted(
        {line.type for line in lines}
        - {name for name, billing in components.items() if billing in REPORTABLE_BILLING_TYPES}
    )
    if invalid:
        raise non_field_error(f"These components are invalid: {', '.join(invalid)}.")
    if resource.plan is None:
        raise non_field_error("Resource must have a plan to report usage")
    if date > now:
        raise field_error("date", "Cannot submit usage for future dates")
    billing_period = month_start(date, tz)
    if billing_period < month_start(now, tz) and any(
        components.get(line.type) not in BACKFILL_BILLING_TYPES for line in lines
    ):
        raise field_error(
            "date",
            "Service providers can only specify date for limit-based or prepaid billing "
            "components when backfilling past billing periods.",
        )
    if plan_period is None:
        plan_period = resource.plan_period_at(date)
    return ValidReport(resource, plan_period, date, billing_period, tuple(lines))
