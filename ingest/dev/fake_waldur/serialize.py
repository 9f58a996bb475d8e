"""Rows as Waldur's serializers render them (8.x by default; mode 7.0.7 drops 8.x-only keys)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ingest.dev.fake_waldur.formats import iso, two_places
from ingest.dev.fake_waldur.store import Component, Offering, PlanPeriod, Provider, Resource, Usage, User


def _url(base: str, collection: str, key: Any) -> str:
    return f"{base}/api/{collection}/{key.hex}/"


def user_me(user: User, base: str) -> dict[str, Any]:
    permissions = [
        {"role_name": "CUSTOMER.OWNER", "scope_type": "customer", "scope_uuid": c.hex, "customer_uuid": c.hex}
        for c in sorted(user.owner_of)
    ] + [
        {"role_name": "OFFERING.MANAGER", "scope_type": "offering", "scope_uuid": o.hex}
        for o in sorted(user.manager_of)
    ]
    return {
        "url": _url(base, "users", user.uuid),
        "uuid": user.uuid.hex,
        "username": user.username,
        "full_name": user.username,
        "email": f"{user.username}@example.org",
        "is_staff": user.is_staff,
        "is_support": user.is_support,
        "is_active": user.is_active,
        "token_lifetime": user.token_lifetime,
        "permissions": permissions,
    }


def provider(row: Provider, base: str, offering_count: int) -> dict[str, Any]:
    return {
        "url": _url(base, "marketplace-service-providers", row.uuid),
        "uuid": row.uuid.hex,
        "created": iso(row.created),
        "description": "",
        "enable_notifications": True,
        "customer": _url(base, "customers", row.customer),
        "customer_uuid": row.customer.hex,
        "customer_name": row.name,
        "customer_abbreviation": "",
        "customer_slug": row.name.lower().replace(" ", "-"),
        "customer_native_name": "",
        "customer_country": "",
        "offering_count": offering_count,
        "organization_groups": [],
    }


def component(row: Component, offering: Offering, mode: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "uuid": row.uuid.hex,
        "billing_type": row.billing_type,
        "type": row.type,
        "name": row.name,
        "description": "",
        "measured_unit": row.measured_unit,
        "unit_factor": 1,
        "limit_period": row.limit_period,
        "limit_amount": row.limit_amount,
        "article_code": "",
        "max_value": None,
        "min_value": None,
        "max_available_limit": None,
        "is_boolean": False,
        "default_limit": None,
        "factor": None,
        "is_builtin": False,
    }
    if mode == "8":
        out["offering_uuid"] = offering.uuid.hex
        out["is_prepaid"] = row.billing_type == "one"
    return out


def offering(row: Offering, base: str, customer_name: str, mode: str) -> dict[str, Any]:
    return {
        "url": _url(base, "marketplace-provider-offerings", row.uuid),
        "uuid": row.uuid.hex,
        "created": iso(row.created),
        "name": row.name,
        "slug": row.name.lower().replace(" ", "-"),
        "description": "",
        "customer": _url(base, "customers", row.customer),
        "customer_uuid": row.customer.hex,
        "customer_name": customer_name,
        "state": row.state,
        "type": row.type,
        "shared": True,
        "billable": True,
        "components": [component(c, row, mode) for c in row.components],
    }


def _usage_value(value: Decimal, mode: str) -> Any:
    return float(value) if mode == "8" else two_places(value)


def resource(row: Resource, base: str, provider_name: str, mode: str) -> dict[str, Any]:
    o = row.offering
    limit_types = [c.type for c in o.components if c.billing_type == "limit"]
    limit_usage = (
        {t: float(row.current_usages.get(t, Decimal(0))) for t in limit_types}
        if row.plan is not None and limit_types
        else None  # what a real server sends, and what the 8.x client chokes on
    )
    out: dict[str, Any] = {
        "url": _url(base, "marketplace-provider-resources", row.uuid),
        "uuid": row.uuid.hex,
        "name": row.name,
        "slug": row.name.lower().replace(" ", "-"),
        "state": row.state,
        "created": iso(row.created),
        "modified": iso(row.modified),
        "description": "",
        "backend_id": row.backend_id,
        "offering": _url(base, "marketplace-provider-offerings", o.uuid),
        "offering_uuid": o.uuid.hex,
        "offering_name": o.name,
        "offering_type": o.type,
        "offering_shared": True,
        "offering_billable": True,
        "provider_uuid": o.customer.hex,
        "provider_name": provider_name,
        "plan": None if row.plan is None else f"{base}/api/marketplace-public-plans/{row.plan.hex}/",
        "plan_uuid": None if row.plan is None else row.plan.hex,
        "plan_name": None if row.plan is None else f"Plan {row.plan.hex[:8]}",
        "customer_uuid": row.customer_uuid.hex,
        "customer_name": f"Customer {row.customer_uuid.hex[:8]}",
        "project": _url(base, "projects", row.project_uuid),
        "project_uuid": row.project_uuid.hex,
        "project_name": f"Project {row.project_uuid.hex[:8]}",
        "current_usages": {k: _usage_value(v, mode) for k, v in row.current_usages.items()},
        "limits": dict(row.limits),
        "limit_usage": limit_usage,
        "is_usage_based": any(c.billing_type == "usage" for c in o.components),
        "is_limit_based": bool(limit_types),
        "end_date": None,
        "username": None,
    }
    if mode == "8":
        out["offering_components"] = [component(c, o, mode) for c in o.components]
        out["offering_state"] = o.state
    return out


def base_usage(row: Usage, mode: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "uuid": row.uuid.hex,
        "created": iso(row.created),
        "description": row.description,
        "type": row.component.type,
        "name": row.component.name,
        "measured_unit": row.component.measured_unit,
        "usage": two_places(row.usage),
        "date": iso(row.date),
        "recurring": row.recurring,
    }
    if mode == "8":
        out["missing_usage_policy"] = row.missing_usage_policy
    return out


def plan_period(row: PlanPeriod, usages: list[Usage], mode: str) -> dict[str, Any]:
    return {
        "uuid": row.uuid.hex,
        "plan_name": f"Plan {row.plan.hex[:8]}",
        "plan_uuid": row.plan.hex,
        "start": iso(row.start),
        "end": iso(row.end),
        "components": [base_usage(u, mode) for u in usages],
    }


def component_usage(row: Usage, base: str, mode: str) -> dict[str, Any]:
    r = row.resource
    out = base_usage(row, mode)
    out.update(
        {
            "url": _url(base, "marketplace-component-usages", row.uuid),
            "resource_name": r.name,
            "resource_uuid": r.uuid.hex,
            "offering_name": r.offering.name,
            "offering_uuid": r.offering.uuid.hex,
            "project_name": f"Project {r.project_uuid.hex[:8]}",
            "project_uuid": r.project_uuid.hex,
            "customer_name": f"Customer {r.customer_uuid.hex[:8]}",
            "customer_uuid": r.customer_uuid.hex,
            "billing_period": row.billing_period.isoformat(),
            "modified_by": None,
        }
    )
    return out


def restrict(row: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """``field=`` (RestrictedSerializerMixin): unknown names are ignored."""
    if not fields:
        return row
    return {k: v for k, v in row.items() if k in fields}
