"""The control API under /__fake__/ (loopback only): what tests, the demo and the bench use
to look inside the fake and to steer it. Documented in the package docstring."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any
from zoneinfo import ZoneInfo

import falcon

from ingest.dev.fake_waldur import seed, serialize
from ingest.dev.fake_waldur.formats import iso, parse_instant, parse_uuid, two_places
from ingest.dev.fake_waldur.store import PlanPeriod, Provider, Store

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def rotate(store: Store, provider: Provider) -> str:
    with store.lock:
        provider.secret = secrets.token_hex(16)
        provider.modified = store.stamp()
        store.changed()
        return provider.secret


def _send(resp: falcon.Response, status: int, body: Any) -> None:
    resp.status = status
    resp.content_type = "application/json"
    resp.text = json.dumps(body)


def _body(req: falcon.Request) -> Any:
    raw = req.bounded_stream.read()
    return json.loads(raw) if raw else {}


def _shown_faults(store: Store) -> list[dict[str, Any]]:
    return [{**f, "resource": f["resource"].hex if f.get("resource") else None} for f in store.faults]


class _Control:
    def __init__(self, store: Store) -> None:
        self.store = store


class Guard:
    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: Any
    ) -> None:
        if isinstance(resource, _Control) and req.remote_addr not in LOOPBACK:
            _send(resp, 403, {"detail": "the control API answers loopback callers only"})
            resp.complete = True


class Calls(_Control):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        since = req.get_param_as_int("since") or 0
        with self.store.lock:
            _send(resp, 200, {"calls": self.store.calls[since:], "next": len(self.store.calls)})


class Usages(_Control):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self.store.lock:
            rows = [
                {
                    "uuid": u.uuid.hex,
                    "resource": u.resource.uuid.hex,
                    "type": u.component.type,
                    "billing_period": u.billing_period.isoformat(),
                    "plan_period": u.plan_period.uuid.hex if u.plan_period else None,
                    "usage": two_places(u.usage),
                    "description": u.description,
                    "date": iso(u.date),
                    "modified": iso(u.modified),
                    "modified_by": u.modified_by,
                    "recurring": u.recurring,
                    "missing_usage_policy": u.missing_usage_policy,
                    "user_usages": {name: two_places(v) for name, v in u.user_usages.items()},
                }
                for u in self.store.usages.values()
            ]
        _send(resp, 200, rows)


class Stats(_Control):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self.store.lock:
            body = {
                "requests": self.store.requests,
                "set_usage_calls": len(self.store.calls),
                "api_secret_code_posts": len(self.store.rotations),
                "rotations": self.store.rotations,
                "faults": _shown_faults(self.store),
                "resources": len(self.store.resources),
            }
            _send(resp, 200, body)


class Faults(_Control):
    """``{"count": K, "status": S, "retry_after": N?, "body": ...?, "html": bool?}`` for the next
    K set_usage calls; ``{"count": K, "reset": true}`` resets their connections; with
    ``"resource": uuid`` and no count, every call for that resource; ``{"clear": true}``."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        doc = _body(req)
        with self.store.lock:
            if doc.get("clear"):
                self.store.faults.clear()
            else:
                fault = {
                    k: v for k, v in doc.items() if k in ("status", "retry_after", "body", "html", "reset")
                }
                fault["remaining"] = doc.get("count", None if doc.get("resource") else 1)
                if doc.get("resource"):
                    fault["resource"] = parse_uuid(str(doc["resource"]))
                self.store.faults.append(fault)
            shown = [
                {**f, "resource": f["resource"].hex if f.get("resource") else None} for f in self.store.faults
            ]
        _send(resp, 200, {"faults": shown})


class Catalog(_Control):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            counts = seed.merge(self.store, _body(req))
        except (seed.SeedError, ValueError) as exc:
            _send(resp, 400, {"detail": str(exc)})
            return
        _send(resp, 200, counts)


class ResourceControl(_Control):
    """POST ``{"state": "Erred"}`` or ``{"plan": uuid|null}``: a saved resource (bumps modified);
    a plan switch ends the open period now and starts a new one. DELETE unlinks (hard delete)."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        doc = _body(req)
        key = parse_uuid(uuid)
        with self.store.lock:
            row = None if key is None else self.store.resources.get(key)
            if row is None:
                _send(resp, 404, {"detail": "Not found."})
                return
            if "state" in doc:
                if doc["state"] not in seed.RESOURCE_STATES:
                    _send(resp, 400, {"state": [f"{doc['state']!r} is not a resource state"]})
                    return
                row.state = doc["state"]
            if "plan" in doc:
                self._switch_plan(row, doc["plan"])
            if "name" in doc:
                row.name = str(doc["name"])
            row.modified = self.store.stamp()
            self.store.changed()
            body = serialize.resource(row, str(req.prefix), "", self.store.config.mode)
        _send(resp, 200, body)

    def _switch_plan(self, row: Any, plan: Any) -> None:
        now = self.store.stamp()
        new = None if plan is None else parse_uuid(str(plan))
        for period in row.plan_periods:
            if period.end is None:
                period.end = now
        row.plan = new
        if new is not None:
            key = seed.derived(f"period:{now.isoformat()}", row.uuid)
            row.plan_periods.append(PlanPeriod(uuid=key, plan=new, start=now, end=None))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        key = parse_uuid(uuid)
        with self.store.lock:
            row = None if key is None else self.store.resources.get(key)
            if row is None:
                _send(resp, 404, {"detail": "Not found."})
                return
            self.store.delete_resource(row)
        resp.status = 204


class Rotate(_Control):
    def on_post(self, req: falcon.Request, resp: falcon.Response, customer: str) -> None:
        key = parse_uuid(customer)
        provider = None if key is None else self.store.provider_of_customer(key)
        if provider is None:
            _send(resp, 404, {"detail": "Not found."})
            return
        _send(
            resp,
            200,
            {"api_secret_code": rotate(self.store, provider), "service_provider": provider.uuid.hex},
        )


class Config(_Control):
    """``rate`` (calls/s or null), ``rate_mode`` (queue|429), ``latency_ms``, ``mode`` (8|7.0.7),
    ``time_zone``, ``now`` (a frozen ISO instant or null), ``token_lifetime`` (seconds or null,
    for ``token``, default the staff token)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _send(resp, 200, self._shown())

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        doc = _body(req)
        config = self.store.config
        with self.store.lock:
            try:
                if "mode" in doc:
                    if doc["mode"] not in ("8", "7.0.7"):
                        raise ValueError("mode is 8 or 7.0.7")
                    config.mode = doc["mode"]
                if "rate" in doc:
                    config.rate = None if doc["rate"] in (None, 0) else float(doc["rate"])
                if "rate_mode" in doc:
                    config.rate_mode = "429" if str(doc["rate_mode"]) == "429" else "queue"
                if "latency_ms" in doc:
                    config.latency_ms = float(doc["latency_ms"] or 0)
                if "time_zone" in doc:
                    ZoneInfo(doc["time_zone"])
                    config.time_zone = doc["time_zone"]
                if "now" in doc:
                    config.now = None if doc["now"] is None else parse_instant(doc["now"])
                if "token_lifetime" in doc:
                    user = self.store.users[doc.get("token") or self.store.staff_token]
                    user.token_lifetime = (
                        None if doc["token_lifetime"] is None else int(doc["token_lifetime"])
                    )
            except (ValueError, KeyError) as exc:
                _send(resp, 400, {"detail": f"bad config: {exc}"})
                return
            self.store.changed()
        _send(resp, 200, self._shown())

    def _shown(self) -> dict[str, Any]:
        c = self.store.config
        now: dt.datetime | None = c.now
        return {"mode": c.mode, "rate": c.rate, "rate_mode": c.rate_mode, "latency_ms": c.latency_ms,
                "time_zone": c.time_zone, "now": iso(now)}  # fmt: skip


def add_routes(app: falcon.App[falcon.Request, falcon.Response], store: Store) -> None:
    app.add_middleware(Guard())
    app.add_route("/__fake__/calls", Calls(store))
    app.add_route("/__fake__/usages", Usages(store))
    app.add_route("/__fake__/stats", Stats(store))
    app.add_route("/__fake__/faults", Faults(store))
    app.add_route("/__fake__/catalog", Catalog(store))
    app.add_route("/__fake__/resources/{uuid}", ResourceControl(store))
    app.add_route("/__fake__/rotate/{customer}", Rotate(store))
    app.add_route("/__fake__/config", Config(store))
