"""Catalog sync from Waldur (the bridge): a task on the ``waldur`` queue, run by beat."""

from __future__ import annotations

from typing import Any

from workers.app import app


@app.task(name="workers.sync.sync", acks_late=True, ignore_result=True)
def sync() -> dict[str, Any]:
    """Placeholder: an incremental sync, or a full one when WALDUR_FULL_SYNC_INTERVAL is due."""
    return {}
