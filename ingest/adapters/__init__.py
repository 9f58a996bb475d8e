"""Adapters: the implementations of the ports in ingest/services/ports.py (and of the
journal protocol the services use) over real infrastructure.

- ``redis/``: the Redis Stream journal and work queue, its Lua scripts, the web's pipelined
  accept, the replay guard.
- ``sql/``: SQLAlchemy 2.x tables, the unit of work of a batch commit (COPY + merge on
  PostgreSQL, upsert on SQLite), the catalog, read-only queries, Alembic driven from code.
- ``secretbox.py``: provider secrets sealed at rest; ``prometheus.py``: metrics.

House style: only ingest.bootstrap (which builds them once per process) and the tests import
these modules; the domain and the services never do.
"""
