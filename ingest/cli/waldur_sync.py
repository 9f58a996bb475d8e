"""``ingest waldur sync``: the catalog from Waldur (owned by the sync work; placeholder)."""

from __future__ import annotations

from typing import Any

from ingest.cli.context import Add


def register(group: Any, add: Add) -> None:
    pass
