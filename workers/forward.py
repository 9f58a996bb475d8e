"""Forwarding committed usage to Waldur (the bridge): tasks on the ``waldur`` queue, served
by the Procfile's ``forwarder`` process, so a slow Waldur never stalls commits."""

from __future__ import annotations

from typing import Any

from workers.app import app


@app.task(name="workers.forward.forward", acks_late=True, ignore_result=True)
def forward() -> dict[str, Any]:
    """Placeholder: forward what the outbox holds."""
    return {}
