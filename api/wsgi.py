"""gunicorn entry point: ``gunicorn api.wsgi:app``. Connections open lazily in each worker."""

from __future__ import annotations

from sqlalchemy import text

from api.app import create_app
from ingest import bootstrap


def _database() -> None:
    with bootstrap.runtime().engine.connect() as conn:
        conn.execute(text("SELECT 1"))


app = create_app(
    lambda: bootstrap.runtime().intake,
    {"redis": lambda: bootstrap.runtime().queue.ping(), "database": _database},
    bootstrap.runtime().settings.max_body_bytes,
)
