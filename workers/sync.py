"""Catalog sync from Waldur (the bridge): a task on the ``waldur`` queue, run by beat."""

from __future__ import annotations

import logging
from typing import Any

from ingest import bootstrap
from ingest.services.sync_ports import SyncBusy
from ingest.services.waldur_sync import ConfigurationError, SyncFailed
from workers.app import app, settings

log = logging.getLogger("workers.sync")

# a full sync of a large Waldur is one request per resource: it may take far longer than a
# drain (the app's default limits); the next beat tick is the retry, never an autoretry loop
TIME_LIMIT = int(max(900.0, settings.waldur_full_sync_interval))


@app.task(
    name="workers.sync.sync",
    acks_late=True,
    ignore_result=True,
    max_retries=0,
    time_limit=TIME_LIMIT + 60,
    soft_time_limit=TIME_LIMIT,
)
def sync() -> dict[str, Any]:
    """One catalog sync: incremental, or full when WALDUR_FULL_SYNC_INTERVAL is due. All or
    nothing; one at a time across processes (a redelivered copy finds the lock held and
    skips). A refused WALDUR_TOKEN is logged at ERROR and recorded for ``ingest waldur
    status``, and not retried until the next tick."""
    rt = bootstrap.runtime()
    if not rt.settings.bridge_enabled:
        return {"skipped": "standalone"}
    try:
        summary = rt.catalog_sync.run()
    except SyncBusy:
        return {"skipped": "busy"}
    except ConfigurationError as exc:
        log.error("catalog sync: %s", exc)
        return {"error": "unauthorized"}
    except SyncFailed as exc:
        log.error("catalog sync failed, nothing written: %s", exc)
        return {"error": "failed"}
    if summary["changed"]:
        log.info(
            "catalog sync (%s): %s; catalog version %s",
            summary["mode"],
            ", ".join(
                f"{kind} +{c['added']} ~{c['updated']} -{c['removed']}"
                for kind, c in summary["changes"].items()
            ),
            summary["catalog_version"],
        )
    return {k: summary[k] for k in ("mode", "changed", "catalog_version", "seconds")}
