"""The outbox in SQL (services.forward_ports.OutboxStore) and the operator's view of it.

Leases: a forwarder leases keys by writing ``lease_owner``/``lease_until``. The pick is
serialized between forwarders so that "no other key of this resource is leased" holds
exactly: on PostgreSQL by a transaction-scoped advisory lock (the pick's statements see
every lease committed before it), with ``FOR UPDATE SKIP LOCKED`` so that a pick never waits
behind a commit marking the same rows; on SQLite by a first no-op write, which takes the
database's write lock before anything is read (SQLite has one writer at a time anyway).
A lease that expired (its forwarder died) is free again.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import (
    Engine,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    null,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from ingest.adapters.sql import tables as t
from ingest.services.forward_ports import ComponentValue, OutboxEntry

OUTBOX: Table = t.UsageOutbox.__table__  # type: ignore[assignment]
FAILURES: Table = t.ForwardFailure.__table__  # type: ignore[assignment]
USAGES: Table = t.ComponentUsage.__table__  # type: ignore[assignment]
LEASE_LOCK = 0x5741_4C44  # pg_advisory_xact_lock key of the pick ("WALD")


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands times back without a zone; this service stores them in UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


def _key(entry: OutboxEntry) -> Any:
    return and_(OUTBOX.c.resource_uuid == entry.resource, OUTBOX.c.billing_period == entry.billing_period)


class SqlOutbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    # -- the forwarder's port ------------------------------------------------------------

    def lease(self, owner: str, limit: int, now: dt.datetime, until: dt.datetime) -> list[OutboxEntry]:
        o = OUTBOX
        sibling = o.alias("sibling")
        free = or_(o.c.lease_until.is_(None), o.c.lease_until < now)
        pick = (
            select(o.c.resource_uuid, o.c.billing_period)
            .where(
                o.c.dirty_since.is_not(None),
                or_(o.c.next_attempt_at.is_(None), o.c.next_attempt_at <= now),
                free,
                ~exists().where(
                    sibling.c.resource_uuid == o.c.resource_uuid,
                    sibling.c.billing_period != o.c.billing_period,
                    sibling.c.lease_until >= now,
                ),
            )
            .order_by(o.c.dirty_since)
            .limit(limit * 4)
        )
        with Session(self.engine) as session, session.begin():
            if self.is_postgres:
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LEASE_LOCK})
                pick = pick.with_for_update(skip_locked=True, of=o)
            else:
                session.execute(text("UPDATE usage_outbox SET lease_owner = lease_owner WHERE 0 = 1"))
            keys: list[tuple[uuid.UUID, dt.date]] = []
            resources: set[uuid.UUID] = set()
            for resource, period in session.execute(pick):
                if resource not in resources:  # one key per resource in flight
                    resources.add(resource)
                    keys.append((resource, period))
                if len(keys) == limit:
                    break
            if not keys:
                return []
            where = tuple_(o.c.resource_uuid, o.c.billing_period).in_(keys)
            session.execute(update(o).where(where).values(lease_owner=owner, lease_until=until))
            rows = session.execute(
                select(
                    o.c.resource_uuid,
                    o.c.billing_period,
                    o.c.dirty_seq,
                    o.c.dirty_since,
                    o.c.pending_reports,
                    o.c.acked_seq,
                    o.c.acked_values,
                    o.c.attempts,
                ).where(where)
            ).all()
            values: dict[tuple[uuid.UUID, dt.date], list[ComponentValue]] = {}
            for u in session.execute(
                select(
                    USAGES.c.resource_uuid,
                    USAGES.c.billing_period,
                    USAGES.c.component_type,
                    USAGES.c.amount,
                    USAGES.c.plan_period_uuid,
                    USAGES.c.report_seq,
                )
                .where(tuple_(USAGES.c.resource_uuid, USAGES.c.billing_period).in_(keys))
                .order_by(USAGES.c.component_type)
            ):
                values.setdefault((u.resource_uuid, u.billing_period), []).append(
                    ComponentValue(u.component_type, f"{u.amount:.2f}", u.plan_period_uuid, int(u.report_seq))
                )
        order = {k: i for i, k in enumerate(keys)}
        entries = [
            OutboxEntry(
                r.resource_uuid,
                r.billing_period,
                int(r.dirty_seq),
                _utc(r.dirty_since) or now,
                int(r.pending_reports),
                int(r.acked_seq),
                json.loads(r.acked_values) if r.acked_values else None,
                int(r.attempts),
                tuple(values.get((r.resource_uuid, r.billing_period), ())),
            )
            for r in rows
        ]
        return sorted(entries, key=lambda e: order[(e.resource, e.billing_period)])

    def settle(
        self, entry: OutboxEntry, owner: str, seq: int, values: dict[str, str] | None, now: dt.datetime
    ) -> bool:
        o = OUTBOX
        changes: dict[str, Any] = {
            "acked_seq": case((o.c.acked_seq < seq, seq), else_=o.c.acked_seq),
            "dirty_since": case((o.c.dirty_seq <= seq, null()), else_=o.c.dirty_since),
            "pending_reports": case(
                (o.c.pending_reports > entry.pending_reports, o.c.pending_reports - entry.pending_reports),
                else_=0,
            ),
            "attempts": 0,
            "next_attempt_at": None,
            "last_error": None,
            "lease_owner": None,
            "lease_until": None,
        }
        if values is not None:
            changes["acked_values"] = case(
                (o.c.acked_seq <= seq, json.dumps(values, sort_keys=True)), else_=o.c.acked_values
            )
            changes["acked_at"] = now
        with Session(self.engine) as session, session.begin():
            done = session.execute(update(o).where(_key(entry), o.c.lease_owner == owner).values(**changes))
            # an older forward failure of the key is resolved by this newer acknowledgement
            session.execute(
                update(FAILURES)
                .where(
                    FAILURES.c.resource_uuid == entry.resource,
                    FAILURES.c.billing_period == entry.billing_period,
                    FAILURES.c.resolved_at.is_(None),
                    FAILURES.c.seq <= seq,
                )
                .values(resolved_at=now)
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def retry_later(self, entry: OutboxEntry, owner: str, attempts: int, at: dt.datetime, error: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(OUTBOX)
                .where(_key(entry), OUTBOX.c.lease_owner == owner)
                .values(
                    attempts=attempts,
                    next_attempt_at=at,
                    last_error=error[:2000],
                    lease_owner=None,
                    lease_until=None,
                )
            )

    def release(self, entry: OutboxEntry, owner: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(OUTBOX)
                .where(_key(entry), OUTBOX.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    def quarantine(
        self,
        entry: OutboxEntry,
        owner: str,
        reason: str,
        status: int | None,
        body: str,
        request: dict[str, Any] | None,
        attempts: int,
        now: dt.datetime,
    ) -> None:
        o = OUTBOX
        seq = max(entry.max_seq, entry.dirty_seq)
        with Session(self.engine) as session, session.begin():
            done = session.execute(
                update(o)
                .where(_key(entry), o.c.lease_owner == owner)
                .values(
                    # a commit during the call made it dirty again: the newer values go next
                    failed=o.c.dirty_seq <= seq,
                    dirty_since=case((o.c.dirty_seq <= seq, null()), else_=o.c.dirty_since),
                    attempts=0,
                    next_attempt_at=None,
                    last_error=f"{reason}: {body}"[:2000],
                    lease_owner=None,
                    lease_until=None,
                )
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return  # the lease expired and was taken over: its new owner decides
            session.execute(
                insert(FAILURES).values(
                    resource_uuid=entry.resource,
                    billing_period=entry.billing_period,
                    seq=seq,
                    reason=reason,
                    status_code=status,
                    body=body,
                    request=json.dumps(request) if request is not None else None,
                    attempts=attempts,
                    created_at=now,
                )
            )

    def oldest_dirty(self) -> dt.datetime | None:
        with self.engine.connect() as conn:
            found = conn.execute(select(func.min(OUTBOX.c.dirty_since))).scalar()
        return _utc(found)

    # -- the operator's view (ingest waldur status / failures) ---------------------------

    def status(self, now: dt.datetime) -> dict[str, Any]:
        o = OUTBOX
        dirty = o.c.dirty_since.is_not(None)
        with self.engine.connect() as conn:
            counts = conn.execute(
                select(
                    func.count().filter(dirty),
                    func.min(o.c.dirty_since),
                    func.count().filter(o.c.lease_until > now),
                    func.count().filter(dirty, o.c.next_attempt_at > now),
                    func.count().filter(o.c.failed),
                    func.coalesce(func.sum(o.c.pending_reports).filter(dirty), 0),
                )
            ).one()
            reasons = conn.execute(
                select(FAILURES.c.reason, func.count())
                .where(FAILURES.c.resolved_at.is_(None))
                .group_by(FAILURES.c.reason)
                .order_by(FAILURES.c.reason)
            ).all()
            sync = conn.execute(select(t.WaldurSyncState.__table__).where(text("id = 1"))).mappings().first()
        oldest = _utc(counts[1])
        return {
            "dirty_keys": int(counts[0]),
            "oldest_dirty_since": oldest,
            "oldest_dirty_age_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
            "in_flight": int(counts[2]),
            "waiting_retry": int(counts[3]),
            "failed_keys": int(counts[4]),
            "pending_reports": int(counts[5]),
            "failures_by_reason": {r: int(n) for r, n in reasons},
            "catalog_sync": None
            if sync is None
            else {
                "last_sync_at": _utc(sync["last_sync_at"]),
                "last_full_at": _utc(sync["last_full_at"]),
                "summary": json.loads(sync["last_summary"]) if sync["last_summary"] else None,
                "last_error": sync["last_error"],
                "last_error_at": _utc(sync["last_error_at"]),
                "server_version": sync["server_version"],
            },
        }

    def failures(self, include_resolved: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
        query = select(FAILURES).order_by(FAILURES.c.id).limit(limit)
        if not include_resolved:
            query = query.where(FAILURES.c.resolved_at.is_(None))
        with self.engine.connect() as conn:
            return [_failure_doc(dict(r)) for r in conn.execute(query).mappings()]

    def failure(self, failure_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(FAILURES).where(FAILURES.c.id == failure_id)).mappings().first()
        return None if row is None else _failure_doc(dict(row), full=True)

    def retry(self, ids: list[int] | None, now: dt.datetime) -> list[int]:
        """Resolve unresolved failures (``ids``, or all when None) and make their keys dirty
        again; returns the ids retried."""
        f = FAILURES
        query = select(f.c.id, f.c.resource_uuid, f.c.billing_period).where(f.c.resolved_at.is_(None))
        if ids is not None:
            query = query.where(f.c.id.in_(ids))
        with Session(self.engine) as session, session.begin():
            found = session.execute(query).all()
            # in key order, as commits lock outbox rows: no deadlock with a batch in flight
            for _id, resource, period in sorted(found, key=lambda r: (r[1], r[2])):
                session.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.resource_uuid == resource, OUTBOX.c.billing_period == period)
                    .values(
                        dirty_since=func.coalesce(OUTBOX.c.dirty_since, now),
                        failed=False,
                        attempts=0,
                        next_attempt_at=None,
                    )
                )
            if found:
                session.execute(update(f).where(f.c.id.in_([r[0] for r in found])).values(resolved_at=now))
        return [int(r[0]) for r in found]


def _failure_doc(row: dict[str, Any], full: bool = False) -> dict[str, Any]:
    doc = {
        "id": int(row["id"]),
        "resource": str(row["resource_uuid"]),
        "billing_period": row["billing_period"].isoformat(),
        "seq": int(row["seq"]),
        "reason": row["reason"],
        "status": row["status_code"],
        "attempts": int(row["attempts"]),
        "created_at": _utc(row["created_at"]),
        "resolved_at": _utc(row["resolved_at"]),
    }
    body = row["body"] or ""
    if full:
        doc["body"] = body
        doc["request"] = json.loads(row["request"]) if row["request"] else None
    else:
        doc["body"] = body[:120]
    return doc
