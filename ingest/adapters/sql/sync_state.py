"""The SyncStateStore port (the one row, id 1, of ``waldur_sync_state``) and the SyncLock
port (one catalog sync at a time)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from ingest.adapters.sql import tables as t
from ingest.adapters.sql.catalog import as_utc
from ingest.services.sync_ports import SyncBusy, SyncState


class SqlSyncState:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self) -> SyncState:
        with Session(self.engine) as session:
            row = session.get(t.WaldurSyncState, 1)
            if row is None:
                return SyncState()
            summary = None
            if row.last_summary:
                try:
                    summary = json.loads(row.last_summary)
                except ValueError:
                    summary = None
            return SyncState(
                watermark=as_utc(row.watermark),
                last_sync_at=as_utc(row.last_sync_at),
                last_full_at=as_utc(row.last_full_at),
                last_summary=summary,
                last_error=row.last_error,
                last_error_at=as_utc(row.last_error_at),
                server_version=row.server_version,
            )

    def _row(self, session: Session) -> t.WaldurSyncState:
        row = session.get(t.WaldurSyncState, 1, with_for_update=True)
        if row is None:
            row = t.WaldurSyncState(id=1)
            session.add(row)
        return row

    def succeeded(
        self,
        *,
        watermark: dt.datetime,
        at: dt.datetime,
        full: bool,
        summary: dict[str, Any],
        server_version: str | None,
    ) -> None:
        with Session(self.engine) as session, session.begin():
            row = self._row(session)
            row.watermark = watermark
            row.last_sync_at = at
            if full:
                row.last_full_at = at
            row.last_summary = json.dumps(summary, default=str)
            row.last_error = None
            row.last_error_at = None
            if server_version:
                row.server_version = server_version[:64]

    def failed(self, *, at: dt.datetime, error: str, server_version: str | None) -> None:
        with Session(self.engine) as session, session.begin():
            row = self._row(session)
            row.last_error = error[:2000]
            row.last_error_at = at
            if server_version:
                row.server_version = server_version[:64]


class SqlSyncLock:
    """The SyncLock port in the database itself, so a sync needs nothing but SQL and Waldur.

    PostgreSQL: a session advisory lock (per database) taken with ``pg_try_advisory_lock`` on
    a connection of its own, in autocommit (no transaction stays open while the sync reads
    Waldur); if this process dies the server frees it with the connection. SQLite (one
    host): an exclusive ``flock`` on a file beside the database, freed by the kernel."""

    KEY = 0x5741_4C44_5359_4E43  # "WALDSYNC"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.engine.dialect.name == "postgresql":
            with self._advisory():
                yield
        else:
            with self._flock():
                yield

    @contextlib.contextmanager
    def _advisory(self) -> Iterator[None]:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.KEY}).scalar():
                raise SyncBusy("another catalog sync is running (PostgreSQL advisory lock)")
            try:
                yield
            finally:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
                except Exception:
                    conn.invalidate()  # the session ends, and the lock with it
                    raise
        finally:
            conn.close()

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        database = self.engine.url.database
        if not database or database == ":memory:":
            yield  # an in-memory database is one process's own
            return
        with open(f"{database}.waldur-sync.lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SyncBusy(f"another catalog sync is running (lock file {handle.name})") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
