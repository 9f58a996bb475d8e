"""Read-only queries for the command line and the tests."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Engine, select

from ingest.adapters import tables as t


def usage_rows(engine: Engine, resource: uuid.UUID, period: dt.date | None = None
               ) -> list[dict[str, Any]]:
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
