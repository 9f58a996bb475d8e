"""The forwarder's rules, without I/O: the ``date`` a set_usage carries, the back-off, what a
Waldur rejection means, and which server lines honour ``date``."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from typing import Any
from zoneinfo import ZoneInfo

from ingest.domain.model import month_start_instant, next_month_start_instant

# How far behind our clock a forwarded ``date`` stays, so that a Waldur whose clock is a
# little behind ours never sees it in its future (8.x: 400 "Cannot submit usage for future
# dates").
DATE_MARGIN = dt.timedelta(seconds=60)


def period_bounds(period: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """[first instant, first instant of the next month) of a billing period in ``tz``."""
    moment = dt.datetime(period.year, period.month, 15, tzinfo=tz)
    return month_start_instant(moment, tz), next_month_start_instant(moment, tz)


def is_past(period: dt.date, now: dt.datetime, tz: ZoneInfo) -> bool:
    """Whether the billing period has ended (in BILLING_TIMEZONE)."""
    return now >= period_bounds(period, tz)[1]


def usage_date(period: dt.date, now: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    """The ``date`` to send: ``min(now, end of the period) - DATE_MARGIN``, which is inside
    the period and never in Waldur's future. For the current month that is about now (the
    plan period Waldur resolves is the one in force now); for a past month it is its last
    minute, the same plan period its last current-month forwards resolved. None in the first
    minute of a month: not yet (the margin would fall into the previous month)."""
    start, end = period_bounds(period, tz)
    moment = min(now, end) - DATE_MARGIN
    if moment < start:
        return None
    return moment.astimezone(tz)


def not_before(period: dt.date, tz: ZoneInfo) -> dt.datetime:
    """When ``usage_date`` first has an answer for ``period``."""
    return period_bounds(period, tz)[0] + DATE_MARGIN


BACKOFF_BASE = 2.0  # seconds, first retry
BACKOFF_CAP = 300.0


def backoff(attempts: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: exponential, capped, with equal jitter (half
    fixed, half random, so keys that failed together spread out), and never sooner than
    Waldur's ``Retry-After``."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    delay: float = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    return max(delay, retry_after or 0.0)


def honours_date(version: str | None) -> bool:
    """Whether a Waldur of this version files usage under the month of ``date``: the 8.x
    line does; 7.x ignores ``date`` and files everything under the current month (bridge §7
    row 5). An unknown version is treated as 7.x: a past month's value is never misfiled."""
    found = re.match(r"\s*v?(\d+)", version or "")
    return found is not None and int(found.group(1)) >= 8


def _texts(body: Any) -> list[str]:
    if isinstance(body, str):
        return [body]
    if isinstance(body, list):
        return [t for item in body for t in _texts(item)]
    if isinstance(body, dict):
        return [t for value in body.values() for t in _texts(value)]
    return [str(body)]


def parsed(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


# A rejection's reason code, by what Waldur said (the bodies of bridge §3.4 and §7)
_REASONS = (
    ("Billing period is closed", "period_closed"),
    ("backfilling", "backfill_refused"),
    ("future dates", "future_date"),
    ("does not exist", "unknown_resource"),
    ("not in valid state", "resource_state"),
    ("components are invalid", "invalid_components"),
    ("must have a plan", "no_plan"),
    ("exceeds limit", "over_limit"),
)


def rejection_reason(body: str) -> str:
    """The reason code of a 4xx body (JSON object, bare list or text; compared parsed)."""
    doc = parsed(body)
    texts = " ".join(_texts(doc))
    for needle, reason in _REASONS:
        if needle in texts:
            return reason
    return "rejected_list" if isinstance(doc, list) else "rejected"
