"""The SyncStateStore port: the one row (id 1) of ``waldur_sync_state``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ingest.adapters.sql import tables as t
from ingest.adapters.sql.catalog import as_utc
from ingest.services.sync_ports import SyncState


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
