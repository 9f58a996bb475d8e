"""The SQL side (SQLAlchemy 2.x; PostgreSQL in production, SQLite for development): the
tables (tables.py, the one source of the schema and of the commit's column lists), the unit
of work of a batch commit (unit_of_work.py, with pg_copy.py: COPY + merge on PostgreSQL), the
catalog (catalog.py), read-only queries (read_model.py) and Alembic driven from code
(migrate.py).

Only ingest.bootstrap and the tests import this package (the ops CLI and the dev runner
reach migrate.py too).
"""
