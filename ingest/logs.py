"""Logs: one JSON object per line for log shippers, or one human line on a terminal
(LOG_FORMAT); a ``report_id`` extra is carried as a field either way.

INFO is what an operator acts on: start and stop, a commit summary at most once a minute,
quarantines, back-pressure turning on and off, reconciler passes that changed something.
Routine periodic ticks are DEBUG -- Celery's own "Sending due task" (after the first of each
task), "Task ... received" and "Task ... succeeded" included (``Routine``)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import orjson

FORMATS = ("json", "text")
EXTRAS = ("report_id", "entry_id", "consumer")
SUMMARY_INTERVAL = 60.0  # seconds: at most one commit summary line per process and interval


def utc_iso(epoch: float) -> str:
    """An epoch time as ISO 8601 UTC, to the millisecond: 2026-11-27T10:00:00.123Z."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "t": utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in EXTRAS:
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-11-27T10:00:00.123Z INFO    ingest.services.drain: message report_id=...``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{utc_iso(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = [f"{key}={getattr(record, key)}" for key in EXTRAS if hasattr(record, key)]
        if extras:
            line += " " + " ".join(extras)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# Celery's per-message INFO lines (celery.app.trace's LOG_RECEIVED / LOG_SUCCESS templates):
# one pair per drain task, i.e. every 2 s for ever.
_ROUTINE_TEMPLATES = {
    "celery.worker.strategy": ("Task %(name)s[%(id)s] received",),
    "celery.app.trace": ("Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",),
}
_BEAT_SENDING = "Scheduler: Sending due task"


class Routine(logging.Filter):
    """Demote Celery's routine INFO lines to DEBUG (and drop them below ``level``); its
    warnings and errors pass untouched. Beat's "Sending due task X" stays INFO the first time
    for each X (it shows the schedule works), DEBUG after that."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        self._sent: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith("celery."):
            return True
        template = str(record.msg)
        if template.startswith(_BEAT_SENDING) and record.name == "celery.beat":
            entry = str(record.args[0]) if isinstance(record.args, tuple) and record.args else template
            if entry not in self._sent:
                self._sent.add(entry)
                return True
        elif template not in _ROUTINE_TEMPLATES.get(record.name, ()):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.level <= logging.DEBUG


def resolve_format(fmt: str, stream: IO[str] | None = None) -> str:
    """``json`` or ``text``; empty: text when ``stream`` (stderr) is a terminal, else JSON."""
    if fmt:
        return fmt
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or odd stream
        return "json"


_chosen: list[str] = []  # the format the last configure() of this process chose


def configure(level: str, fmt: str | None = None) -> None:
    """Send every logger's records to stderr in ``fmt`` (see resolve_format; None: what an
    earlier call of this process chose, else as for empty) at ``level``. Idempotent: a second
    call replaces the first one's handler."""
    handler = logging.StreamHandler()
    chosen = _chosen[-1] if fmt is None and _chosen else resolve_format(fmt or "", handler.stream)
    _chosen[:] = [chosen]
    handler.setFormatter(TextFormatter() if chosen == "text" else JsonFormatter())
    numeric = logging.getLevelName(level.upper())
    handler.addFilter(Routine(numeric if isinstance(numeric, int) else logging.INFO))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx (the Waldur client's transport) logs every request at INFO: a line per forwarded
    # set_usage and per synced resource; what an operator needs is in our own summaries
    quiet = level.upper() != "DEBUG"
    logging.getLogger("httpx").setLevel(logging.WARNING if quiet else logging.DEBUG)


class Summary:
    """Counts that add up between lines: at most one INFO line per ``interval`` seconds, and
    none for an interval in which nothing happened. ``add`` is called on every tick (a drain
    task runs at least every 2 s), which is when a due line is written; ``flush`` writes what
    is left (at shutdown)."""

    def __init__(
        self,
        logger: logging.Logger,
        render: Callable[[dict[str, int], float], str],
        interval: float = SUMMARY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.render = render
        self.interval = interval
        self.clock = clock
        self.counts: dict[str, int] = {}
        self._since = clock()
        self._lock = threading.Lock()

    def add(self, **counts: Any) -> None:
        with self._lock:
            for key, value in counts.items():
                if isinstance(value, int):
                    self.counts[key] = self.counts.get(key, 0) + value
            now = self.clock()
            if now - self._since >= self.interval:
                self._emit(now)

    def flush(self) -> None:
        with self._lock:
            self._emit(self.clock())

    def _emit(self, now: float) -> None:
        if any(self.counts.values()):
            self.logger.info(self.render(dict(self.counts), now - self._since))
        self.counts.clear()
        self._since = now


def commit_line(counts: dict[str, int], seconds: float) -> str:
    """The drain summary: ``committed 1200 reports (3 superseded, 1 quarantined) in 4 batches
    in the last 60 s``."""
    extra = [f"{counts[k]} {k}" for k in ("superseded", "quarantined") if counts.get(k)]
    return (
        f"committed {counts.get('committed', 0)} reports"
        + (f" ({', '.join(extra)})" if extra else "")
        + f" in {counts.get('batches', 0)} batches in the last {seconds:.0f} s"
    )
