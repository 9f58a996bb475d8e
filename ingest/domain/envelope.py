"""The request envelope, message for message, with no I/O: DRF's field rules as Waldur's
ServiceProviderSignatureSerializer applies them (customer, data, dry_run), and the batch
endpoint's envelope. Field errors are collected together in field order.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Container
from typing import Any

from ingest.domain.errors import Rejected, non_field_error
from ingest.domain.ids import parse_uuid
from ingest.domain.rules import does_not_exist

REQUIRED = "This field is required."
BLANK = "This field may not be blank."
NULL = "This field may not be null."
NOT_STRING = "Not a valid string."
NOT_BOOLEAN = "Must be a valid boolean."
# DRF 3.15 BooleanField lower-cases a string before looking it up in these sets
TRUE_VALUES = frozenset({"t", "y", "yes", "true", "on", "1"})
FALSE_VALUES = frozenset({"f", "n", "no", "false", "off", "0"})


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    customer: uuid.UUID
    data: str
    dry_run: bool


def expected_dict(value: object) -> str:
    return f"Invalid data. Expected a dictionary, but got {type(value).__name__}."


def parse_boolean(value: object) -> bool | None:
    """DRF 3.15 BooleanField: None when the value is not boolean-like. Strings in any casing
    ("TrUe", "oFf"), with no trimming; the numbers 1 and 0 (and 1.0, 0.0)."""
    if value is True or value is False:
        return value
    if isinstance(value, float) and value in (0.0, 1.0):  # DRF's sets hold 1 and 0.0: 1.0 == 1
        return value == 1.0
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        key = value.lower() if isinstance(value, str) else str(value) if value in (0, 1) else None
        if key in TRUE_VALUES:
            return True
        if key in FALSE_VALUES:
            return False
    return None


def as_char(value: object) -> str | None:
    """DRF CharField's coercion: a string, or a JSON number (not a boolean) as Python's
    ``str()`` writes it (123 -> "123", 1e20 -> "1e+20"); None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # an int past Python's digit limit: not a string DRF could make
            return None
    return None


def char_field(body: dict[str, Any], name: str, errors: dict[str, Any]) -> str | None:
    """A required, non-blank DRF CharField (trimmed); the message in ``errors`` otherwise."""
    if name not in body:
        errors[name] = [REQUIRED]
        return None
    raw = body[name]
    if raw is None:
        errors[name] = [NULL]
        return None
    value = as_char(raw)
    if value is None:
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
    elif body["customer"] is None or body["customer"] == "":
        # a related-object field: DRF turns "" into None ("  " stays, and is not found)
        errors["customer"] = [NULL]
    else:
        raw = body["customer"]
        customer = parse_uuid(raw)
        if customer is None or (known_customers is not None and customer not in known_customers):
            errors["customer"] = [does_not_exist(raw)]
            customer = None
    data = char_field(body, "data", errors)
    data_problems = text_problems(data) if data is not None else []
    if data_problems:  # a field error, reported with the others, before the signature step
        errors["data"] = data_problems
        data = None
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
