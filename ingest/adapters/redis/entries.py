"""The journal stream's vocabulary: its consumer group, entry ids, and how an entry becomes a
Delivery. Shared by the modules of this package."""

from __future__ import annotations

from typing import Any

from ingest.services.ports import Delivery

GROUP = "commit"


def entry(entry_id: bytes | str, fields: dict[bytes, bytes], deliveries: int = 1) -> Delivery:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Delivery(eid, int(fields.get(b"s", b"0")), fields.get(b"r", b""), deliveries)


def s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (milliseconds, sequence)."""
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)
