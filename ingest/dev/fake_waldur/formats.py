"""Waldur's value formats: hex uuids out, ISO date-times with Z, 2-decimal usage strings."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal, InvalidOperation

UTC = dt.UTC


def hex_uuid(value: uuid.UUID | None) -> str | None:
    return None if value is None else value.hex


def parse_uuid(value: object) -> uuid.UUID | None:
    """Hyphenated or 32-hex, as Django's UUIDField accepts; anything else is None."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def iso(moment: dt.datetime | None) -> str | None:
    """DRF's rendering: isoformat, the UTC offset as Z, no fraction when there is none."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def parse_instant(value: object) -> dt.datetime | None:
    """An ISO date-time (offset optional, UTC assumed) or a plain date (its midnight UTC)."""
    if isinstance(value, dt.datetime):
        moment = value
    elif not isinstance(value, str) or not value.strip():
        return None
    else:
        text = value.strip().replace(" ", "+") if "T" in value else value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_plain_date(value: str) -> bool:
    try:
        dt.date.fromisoformat(value.strip())
    except ValueError:
        return False
    return True


def month_start(moment: dt.datetime, zone: dt.tzinfo) -> dt.date:
    local = moment.astimezone(zone)
    return dt.date(local.year, local.month, 1)


def month_start_instant(moment: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    first = month_start(moment, zone)
    return dt.datetime(first.year, first.month, 1, tzinfo=zone)


def two_places(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


def to_decimal(value: object) -> Decimal | None:
    """A number or numeric string as DRF's DecimalField reads it; None when it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None
