"""argparse types shared by every command: each returns a parsed value or raises
ArgumentTypeError with a one-line message naming the bad value."""

from __future__ import annotations

import argparse
import datetime as dt
from decimal import Decimal

from ingest.domain.ids import uuid_argument

__all__ = ["duration", "instant", "month", "usage", "uuid_argument"]


def month(value: str) -> dt.date:
    """A billing month like 2026-11 (the first day of it)."""
    try:
        return dt.datetime.strptime(value, "%Y-%m").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a month like 2026-11") from None


def instant(value: str) -> dt.datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time like 2026-11-27T10:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def usage(value: str) -> tuple[str, str]:
    """COMPONENT=AMOUNT, the amount a decimal number (kept as written)."""
    name, sep, amount = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{value!r} is not COMPONENT=AMOUNT")
    try:
        Decimal(amount)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"{amount!r} is not a number") from None
    return name, amount


def duration(value: str) -> dt.timedelta:
    """Seconds, or a number with a unit: 90s, 30m, 1h, 2d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value and value[-1] in units:
            return dt.timedelta(seconds=float(value[:-1]) * units[value[-1]])
        return dt.timedelta(seconds=float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration like 90s, 30m, 1h") from None
