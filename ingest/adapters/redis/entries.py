"""The journal stream's vocabulary: its consumer group, entry ids, and how an entry becomes a
Delivery. Shared by the modules of this package."""

from __future__ import annotations

from typing import Any

from ingest.domain.ids import stream_id_key as id_key
from ingest.services.ports import Delivery

__all__ = ["GROUP", "entry", "id_key", "s"]

GROUP = "commit"


def entry(entry_id: bytes | str, fields: dict[bytes, bytes], deliveries: int = 1) -> Delivery:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Delivery(eid, int(fields.get(b"s", b"0")), fields.get(b"r", b""), deliveries)


def s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
