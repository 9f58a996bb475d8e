"""Thin tasks: each calls one service. Idempotent: running one twice, or concurrently on two
workers, commits nothing twice (consumer-group claims + sequence-guarded upserts)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import text

from ingest import bootstrap
from ingest.adapters.sql.unit_of_work import SqlUnitOfWork
from ingest.domain.errors import Transient
from ingest.services.drain import drain as drain_journal
from ingest.services.drain import reconcile as reconcile_journal
from workers.app import app


@app.task(name="workers.tasks.drain", acks_late=True, ignore_result=True)
def drain() -> dict[str, Any]:
    rt = bootstrap.runtime()
    s = rt.settings
    try:
        stats = drain_journal(
            rt.queue, rt.committer, rt.consumer_name, s.batch_size, s.flush_interval, s.drain_budget
        )
    except Transient as exc:
        return {"error": str(exc)}
    return dataclasses.asdict(stats)


@app.task(name="workers.tasks.reconcile", acks_late=True, ignore_result=True)
def reconcile() -> dict[str, int]:
    rt = bootstrap.runtime()
    s = rt.settings
    database_ok = True
    max_seq = 0
    try:
        with SqlUnitOfWork(rt.engine) as uow:
            uow.session.execute(text("SELECT 1"))
            max_seq = uow.max_seq()
    except Exception:
        database_ok = False
    return reconcile_journal(
        rt.queue,
        rt.committer,
        rt.consumer_name,
        s.reconcile_after,
        s.batch_size,
        s.journal_retention_hours * 3600,
        max_seq,
        database_ok,
    )
