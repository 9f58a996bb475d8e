"""Forwarding committed usage to Waldur (the bridge): tasks on the ``waldur`` queue, served
by the Procfile's ``forwarder`` process, so a slow Waldur never stalls commits."""

from __future__ import annotations

from typing import Any

from ingest import bootstrap
from workers.app import app

# One pass forwards for this long, then returns (calls in flight finish first). Beat starts
# one every 5 s and the drain task kicks one after a commit; passes that overlap share the
# work through the outbox leases, and an expired task message is simply dropped.
PASS_BUDGET = 20.0


@app.task(name="workers.forward.forward", acks_late=True, ignore_result=True)
def forward() -> dict[str, Any]:
    """Forward what the outbox holds (idempotent: leases keep one forward per resource in
    flight; a key already clean costs nothing). Off without WALDUR_URL."""
    rt = bootstrap.runtime()
    if not rt.settings.bridge_enabled:
        return {}
    return rt.forwarder.run(PASS_BUDGET)
