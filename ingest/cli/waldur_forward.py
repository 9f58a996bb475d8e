"""``ingest waldur status`` and ``ingest waldur failures``: usage forwarding (placeholder)."""

from __future__ import annotations

from typing import Any

from ingest.cli.context import Add


def register(group: Any, add: Add) -> None:
    pass
