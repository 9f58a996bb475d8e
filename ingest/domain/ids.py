"""Identifiers: uuids as the contract spells them, and our report ids. One home for each
parse, so the web, the worker and the CLI read a uuid the same way."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import re
import threading
import uuid

NIL = uuid.UUID(int=0)
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z").match


def parse_uuid(value: object) -> uuid.UUID | None:
    """Hyphenated or 32-hex strings; anything else is None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    return _uuid_from_text(value)


@functools.lru_cache(maxsize=65536)  # the same customers and resources, request after request
def _uuid_from_text(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# Parsing the same few thousand UUIDs and months again for every report was a tenth of a
# worker's time; resources and periods repeat across a batch and across batches.
as_uuid = functools.lru_cache(maxsize=65536)(uuid.UUID)
as_month = functools.lru_cache(maxsize=1024)(dt.date.fromisoformat)


def canonical_uuid(text: str) -> str:
    """Dedupe keys must agree with the unique constraint, whatever spelling an envelope has
    (the web writes the canonical form, so parsing is the rare path)."""
    return text if _CANONICAL(text) else str(uuid.UUID(text))


@functools.lru_cache(maxsize=1024)
def canonical_month(text: str) -> str:
    return dt.date.fromisoformat(text).isoformat()


def uuid_or_none(text: str | None) -> uuid.UUID | None:
    return uuid.UUID(text) if text else None


def uuid_argument(value: str) -> uuid.UUID:
    """An argparse type: a uuid, or a clear usage error."""
    found = parse_uuid(value)
    if found is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID")
    return found


class _Randomness:
    """Random hex read from the OS 4 KiB at a time (a getrandom call per request was 2% of a
    web worker), and dropped in a forked child so no two processes share a suffix."""

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._hex, self._at = "", 0

    def take(self, chars: int) -> str:
        with self._lock:
            if self._at + chars > len(self._hex):
                self._hex, self._at = os.urandom(4096).hex(), 0
            out = self._hex[self._at : self._at + chars]
            self._at += chars
            return out


_RANDOM = _Randomness()


def new_report_id(accepted_at: float) -> str:
    """32 hex characters: acceptance time in ms (12) + randomness (20). The time prefix lets
    a status lookup find a queued report in the journal by scanning a few milliseconds."""
    return f"{int(accepted_at * 1000):012x}{_RANDOM.take(20)}"


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """A journal stream id ("ms-n") as a sortable pair (milliseconds, n): acceptance order."""
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


def accepted_ms(report_id: str) -> int | None:
    try:
        return int(report_id[:12], 16) if len(report_id) == 32 else None
    except ValueError:
        return None
