"""The journal epoch's SQL side: journal_state's one row, read and written under its row
lock (services/journal_epoch.py's EpochStore)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.adapters.sql import tables as t
from ingest.services.journal_epoch import JournalState, NewestCommitted

ROW = 1
_FIELDS = [f.name for f in dataclasses.fields(JournalState)]


class _Transaction:
    def __init__(self, session: Session) -> None:
        self.session = session

    def state(self) -> JournalState:
        row = self.session.get(t.JournalStateRow, ROW)
        if row is None:
            return JournalState()
        values: dict[str, Any] = {name: getattr(row, name) for name in _FIELDS}
        values["last_loss"] = json.loads(row.last_loss) if row.last_loss else None
        values["floor_seq"] = int(row.floor_seq or 0)
        values["committed_seq"] = int(row.committed_seq or 0)
        values["verified_seq"] = int(row.verified_seq or 0)
        values["losses"] = int(row.losses or 0)
        return JournalState(**values)

    def newest(self) -> NewestCommitted | None:
        found = self.session.execute(
            select(t.UsageReport.seq, t.UsageReport.id, t.UsageReport.accepted_at)
            .order_by(t.UsageReport.seq.desc())
            .limit(1)
        ).first()
        if found is None:
            return None
        seq, report_id, accepted_at = found
        if accepted_at.tzinfo is None:  # SQLite gives naive UTC
            accepted_at = accepted_at.replace(tzinfo=dt.UTC)
        return NewestCommitted(int(seq), str(report_id), accepted_at.timestamp())

    def committed_seqs(self, above: int, upto: int) -> set[int]:
        """Sequences of the reports in SQL with above < seq <= upto."""
        seq = t.UsageReport.seq
        return {int(v) for v in self.session.scalars(select(seq).where(seq > above, seq <= upto))}

    def save(self, state: JournalState) -> None:
        values = dataclasses.asdict(state)
        values["last_loss"] = json.dumps(state.last_loss) if state.last_loss else None
        self.session.execute(update(t.JournalStateRow).where(t.JournalStateRow.id == ROW).values(**values))


class SqlEpochStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self) -> JournalState:
        """The row as it is, without the lock (JournalState() before the first check)."""
        with Session(self.engine) as session:
            return _Transaction(session).state()

    @contextmanager
    def locked(self) -> Iterator[_Transaction]:
        """A transaction that first writes the row (a row lock on PostgreSQL, the write lock
        on SQLite), so checks from several processes act one at a time."""
        with Session(self.engine) as session:
            touched = session.execute(
                update(t.JournalStateRow)
                .where(t.JournalStateRow.id == ROW)
                .values(losses=t.JournalStateRow.losses)
            )
            if not getattr(touched, "rowcount", 0):
                session.rollback()
                try:
                    session.add(t.JournalStateRow(id=ROW, floor_seq=0, committed_seq=0, losses=0))
                    session.commit()
                except IntegrityError:  # another process created it first
                    session.rollback()
                session.execute(
                    update(t.JournalStateRow)
                    .where(t.JournalStateRow.id == ROW)
                    .values(losses=t.JournalStateRow.losses)
                )
            yield _Transaction(session)
            session.commit()
