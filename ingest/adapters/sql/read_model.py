"""Read-only queries for the command line and the tests."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Engine, select

from ingest.adapters.sql import tables as t


def usage_rows(engine: Engine, resource: uuid.UUID, period: dt.date | None = None) -> list[dict[str, Any]]:
    u = t.ComponentUsage
    query = select(u).where(u.resource_uuid == resource)
    if period is not None:
        query = query.where(u.billing_period == period)
    query = query.order_by(u.billing_period, u.component_type)
    with engine.connect() as conn:
        return [
            {
                "resource": str(row.resource_uuid),
                "billing_period": row.billing_period.isoformat()[:10],
                "component": row.component_type,
                "amount": str(row.amount),
                "plan_period": str(row.plan_period_uuid) if row.plan_period_uuid else None,
                "description": row.description,
                "recurring": row.recurring,
                "missing_usage_policy": row.missing_usage_policy,
                "date": row.date.isoformat(),
                "sequence": row.report_seq,
                "report_id": row.report_id,
            }
            for row in conn.execute(query)
        ]


REPORT_FIELDS = (
    "id",
    "seq",
    "customer_uuid",
    "resource_uuid",
    "billing_period",
    "accepted_at",
    "state",
    "reason_code",
    "reason",
    "deliveries",
    "committed_at",
    "payload",
    "token",
)


def _report_dict(row: Any) -> dict[str, Any]:
    out = {name: getattr(row, name) for name in REPORT_FIELDS}
    for name, value in out.items():
        if isinstance(value, (dt.date, uuid.UUID)):
            out[name] = str(value) if isinstance(value, uuid.UUID) else value.isoformat()
    out["customer"] = out.pop("customer_uuid")
    out["resource"] = out.pop("resource_uuid")
    return out


def report(engine: Engine, report_id: str) -> dict[str, Any] | None:
    r = t.UsageReport
    with engine.connect() as conn:
        row = conn.execute(select(r).where(r.id == report_id)).first()
    return _report_dict(row) if row else None


def committed_values(engine: Engine, report_id: str) -> list[dict[str, Any]]:
    u = t.ComponentUsage
    with engine.connect() as conn:
        rows = conn.execute(
            select(u.component_type, u.amount, u.billing_period).where(u.report_id == report_id)
        ).all()
    return [{"component": c, "amount": str(a), "billing_period": b.isoformat()[:10]} for c, a, b in rows]


def quarantined(
    engine: Engine,
    customer: uuid.UUID | None = None,
    resource: uuid.UUID | None = None,
    reason: str | None = None,
    since: dt.datetime | None = None,
    ids: list[str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    r = t.UsageReport
    query = select(r).where(r.state == "quarantined").order_by(r.seq)
    if customer:
        query = query.where(r.customer_uuid == customer)
    if resource:
        query = query.where(r.resource_uuid == resource)
    if reason:
        query = query.where(r.reason_code == reason)
    if since:
        query = query.where(r.accepted_at >= since)
    if ids is not None:
        query = query.where(r.id.in_(ids))
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [{**_report_dict(row), "envelope": row.envelope} for row in conn.execute(query)]


def delete_reports(engine: Engine, ids: list[str]) -> int:
    from sqlalchemy import delete

    r = t.UsageReport
    with engine.begin() as conn:
        return int(conn.execute(delete(r).where(r.id.in_(ids), r.state == "quarantined")).rowcount)


def state_counts(engine: Engine, window: dt.timedelta = dt.timedelta(minutes=1)) -> dict[str, Any]:
    from sqlalchemy import func

    r = t.UsageReport
    since = dt.datetime.now(dt.UTC) - window
    with engine.connect() as conn:
        counts = dict(conn.execute(select(r.state, func.count()).group_by(r.state)).all())
        recent = dict(
            conn.execute(select(r.state, func.count()).where(r.committed_at >= since).group_by(r.state)).all()
        )
        max_seq = conn.execute(select(func.max(r.seq))).scalar()
    return {
        "counts": {k: int(v) for k, v in counts.items()},
        "per_second": {k: round(int(v) / window.total_seconds(), 2) for k, v in recent.items()},
        "max_seq": int(max_seq or 0),
    }


def current_usage(
    engine: Engine, keys: list[tuple[uuid.UUID, str, dt.date]]
) -> dict[tuple[uuid.UUID, str, dt.date], tuple[str, int]]:
    """(amount, sequence) per usage key, for replay's dry run."""
    u = t.ComponentUsage
    out: dict[tuple[uuid.UUID, str, dt.date], tuple[str, int]] = {}
    resources = list({k[0] for k in keys})
    with engine.connect() as conn:
        for i in range(0, len(resources), 500):
            rows = conn.execute(
                select(u.resource_uuid, u.component_type, u.billing_period, u.amount, u.report_seq).where(
                    u.resource_uuid.in_(resources[i : i + 500])
                )
            )
            for res, comp, period, amount, seq in rows:
                day = period.date() if isinstance(period, dt.datetime) else period
                out[(res, comp, day)] = (str(amount), int(seq))
    return out
