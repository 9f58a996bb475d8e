"""Parse and check a catalog document (JSON or YAML) into rows for SqlCatalog.load."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import yaml

from ingest.domain.ids import parse_uuid
from ingest.domain.model import BILLING_TYPES


class CatalogFileError(ValueError):
    pass


def _uuid(value: Any, where: str) -> uuid.UUID:
    found = parse_uuid(str(value))
    if found is None:
        raise CatalogFileError(f"{where}: {value!r} is not a UUID")
    return found


def _instant(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise CatalogFileError(f"{where}: {value!r} is not an ISO 8601 date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CatalogFileError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {str(exc).splitlines()[0]}"
        ) from None
    return parse(doc)


def parse(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise CatalogFileError(
            "the catalog must be an object with service_providers, offerings and resources"
        )
    out: dict[str, Any] = {"service_providers": [], "offerings": [], "resources": []}
    try:
        for i, p in enumerate(doc.get("service_providers") or []):
            where = f"service_providers[{i}]"
            secret = p.get("api_secret_code")
            out["service_providers"].append(
                {
                    "customer_uuid": _uuid(p["customer"], f"{where}.customer"),
                    "name": str(p.get("name", "")),
                    "api_secret_code": None if secret in (None, "") else str(secret),
                    "rate_limit": None if p.get("rate_limit") is None else float(p["rate_limit"]),
                }
            )
        for i, o in enumerate(doc.get("offerings") or []):
            where = f"offerings[{i}]"
            components = []
            for j, c in enumerate(o.get("components") or []):
                billing = c.get("billing_type", "usage")
                if billing not in BILLING_TYPES:
                    raise CatalogFileError(
                        f"{where}.components[{j}].billing_type: {billing!r} "
                        f"is not one of {', '.join(sorted(BILLING_TYPES))}"
                    )
                components.append(
                    {
                        "type": str(c["type"]),
                        "billing_type": billing,
                        "measured_unit": str(c.get("measured_unit", "")),
                    }
                )
            out["offerings"].append(
                {
                    "uuid": _uuid(o["uuid"], f"{where}.uuid"),
                    "customer_uuid": _uuid(o["customer"], f"{where}.customer"),
                    "name": str(o.get("name", "")),
                    "components": components,
                }
            )
        for i, r in enumerate(doc.get("resources") or []):
            where = f"resources[{i}]"
            plan = r.get("plan")
            out["resources"].append(
                {
                    "uuid": _uuid(r["uuid"], f"{where}.uuid"),
                    "offering_uuid": _uuid(r["offering"], f"{where}.offering"),
                    "name": str(r.get("name", "")),
                    "state": str(r.get("state", "OK")),
                    "plan_uuid": None if plan is None else _uuid(plan, f"{where}.plan"),
                    "plan_periods": [
                        {
                            "uuid": _uuid(pp["uuid"], f"{where}.plan_periods[{k}].uuid"),
                            "start": _instant(pp.get("start"), f"{where}.plan_periods[{k}].start"),
                            "end": _instant(pp.get("end"), f"{where}.plan_periods[{k}].end"),
                        }
                        for k, pp in enumerate(r.get("plan_periods") or [])
                    ],
                }
            )
    except KeyError as exc:
        raise CatalogFileError(f"missing field {exc.args[0]!r}") from None
    except (TypeError, AttributeError) as exc:
        raise CatalogFileError(f"malformed catalog: {exc}") from None
    return out
