"""gunicorn entry point: ``gunicorn -c python:api.gunicorn_conf api.asgi:app`` (an ASGI app
served by uvicorn workers). Connections open lazily in each worker."""

from __future__ import annotations

from typing import Any

from api.app import create_app
from ingest import bootstrap


def _database() -> None:
    bootstrap.runtime().check_database()


def _report_status(report_id: str, authorization: str | None, customer: str | None) -> dict[str, Any] | None:
    from ingest.services import access, operations

    rt = bootstrap.runtime()
    who = access.authorize(
        rt.catalog,
        rt.settings.operator_token,
        authorization,
        customer,
        max_ttl=rt.settings.status_token_max_ttl,
    )
    if len(report_id) > 64 or not report_id.isalnum():
        return None
    found = operations.report_status(rt, report_id)
    if found is None or (not isinstance(who, access.Operator) and found["customer"] != str(who)):
        return None
    return found


app = create_app(
    lambda: bootstrap.runtime().intake,
    {"redis": lambda: bootstrap.runtime().redis_primary(), "database": _database},
    bootstrap.runtime().settings.max_body_bytes,
    _report_status,
    batch_max_body=bootstrap.runtime().settings.batch_max_bytes,
    metrics=bootstrap.metrics(),
    # the handler flushes this worker's tally on its loop; the exposition runs in a thread
    exposition=lambda: bootstrap.metrics_exposition(journal=True, flush=False),
)
