"""What every command shares: the one user-facing error, the process's runtime and the
output forms (JSON, a table, one record as field/value lines). Every time a command prints is
ISO 8601 in UTC (``2026-11-27T10:00:00.123Z``), whatever the store handed back: an epoch
number, a datetime with or without a zone (SQLite keeps none), an ISO string."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.bootstrap import Runtime

# how a command family registers a command: add(name, fn, help, parent) -> its parser
Add = Callable[..., Any]


class CliError(Exception):
    """A user-facing failure: printed as one line by ``main``, exit status 2."""


def runtime() -> Runtime:
    """This process's runtime (built on first use: commands that need no connection pay
    nothing for it)."""
    from ingest import bootstrap

    return bootstrap.runtime()


# fields that hold a moment (not a date the provider wrote inside its payload: never touched)
TIME_FIELDS = frozenset(
    {"accepted_at", "committed_at", "updated_at", "at", "date", "first_accepted_at", "last_accepted_at"}
)
OPAQUE_FIELDS = frozenset({"payload", "envelope", "token"})


def utc_text(value: Any) -> Any:
    """A moment as ISO 8601 UTC with milliseconds and ``Z``; anything else unchanged. A time
    without a zone is UTC (that is how this service stores and passes them)."""
    moment: dt.datetime | None = None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and "T" in value:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if moment is None:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def readable(doc: Any) -> Any:
    """``doc`` with every moment (TIME_FIELDS, at any depth outside OPAQUE_FIELDS) as
    ``utc_text``."""
    if isinstance(doc, dict):
        return {
            k: v if k in OPAQUE_FIELDS else utc_text(v) if k in TIME_FIELDS else readable(v)
            for k, v in doc.items()
        }
    if isinstance(doc, list | tuple):
        return [readable(v) for v in doc]
    return doc


def print_json(doc: Any, indent: int | None = 2) -> None:
    print(json.dumps(readable(doc), indent=indent, default=str))


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(*columns)
    for r in readable(rows):
        out.add_row(*[str(r.get(c) if r.get(c) is not None else "-") for c in columns])
    Console().print(out)


def record(doc: dict[str, Any]) -> None:
    """One record for a person: a field/value table; nested values as compact JSON."""
    rows = [
        {"field": k, "value": v if v is None or isinstance(v, str) else json.dumps(v, default=str)}
        for k, v in readable(doc).items()
    ]
    table(rows, ["field", "value"])
