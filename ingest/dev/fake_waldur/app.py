"""The fake's Falcon app: Waldur's marketplace endpoints (§5.1) and the control API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import falcon

from ingest.dev.fake_waldur import listing, serialize
from ingest.dev.fake_waldur.formats import iso, month_start_instant, parse_uuid
from ingest.dev.fake_waldur.gate import Unauthorized, authenticate
from ingest.dev.fake_waldur.paging import BadQuery, Query, page
from ingest.dev.fake_waldur.sink import SetUsage, record, send, user_of
from ingest.dev.fake_waldur.store import Store, User
from ingest.dev.fake_waldur.usage import FORBIDDEN
from ingest.dev.fake_waldur.user_usage import UserUsages

NOT_FOUND = {"detail": "Not found."}
VERSIONS = {"8": "8.0.1", "7.0.7": "7.0.7"}


def _base(req: falcon.Request) -> str:
    return str(req.prefix)


class Gatekeeper:
    """Token auth for /api/ (not /api/version/), request counts, DRF's 405 body."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not req.path.startswith("/api/"):
            return
        header = req.get_header("Authorization")
        if req.path == "/api/version/" and not header:
            return  # open to anonymous callers; a bad token is still refused, as DRF does
        try:
            req.context.user = authenticate(self.store, header, req.get_param("x-auth-token"))
        except Unauthorized as exc:
            send(resp, 401, {"detail": exc.detail})
            resp.set_header("WWW-Authenticate", "Token")
            resp.complete = True
            if req.path == "/api/marketplace-component-usages/set_usage/":
                raw = req.bounded_stream.read()
                try:
                    payload = json.loads(raw) if raw else None
                except ValueError:
                    payload = None
                record(self.store, req, resp, time.time(), raw, payload)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, ok: bool) -> None:
        self.store.count_request(f"{req.method} {req.uri_template or req.path}", resp.status_code)


def _not_allowed(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    send(resp, 405, {"detail": f'Method "{req.method}" not allowed.'})
    if isinstance(ex, falcon.HTTPError) and isinstance(ex.headers, dict):
        resp.set_headers(ex.headers)  # Allow


def _not_found(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    send(resp, 404, NOT_FOUND)


class Me:
    def __init__(self, store: Store) -> None:
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send(resp, 200, serialize.user_me(user_of(req), _base(req)))


class Version:
    def __init__(self, store: Store) -> None:
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        number = VERSIONS.get(self.store.config.mode, self.store.config.mode)
        send(resp, 200, {"version": number, "latest_version": number})


Lister = Callable[[Store, User, Query], Sequence[Any]]
Render = Callable[[Store, Any, str], dict[str, Any]]


def _render_provider(store: Store, row: Any, base: str) -> dict[str, Any]:
    count = sum(1 for o in store.offerings.values() if o.customer == row.customer)
    return serialize.provider(row, base, count)


def _customer_name(store: Store, customer: Any) -> str:
    found = store.provider_of_customer(customer)
    return found.name if found else ""


def _render_offering(store: Store, row: Any, base: str) -> dict[str, Any]:
    return serialize.offering(row, base, _customer_name(store, row.customer), store.config.mode)


def _render_resource(store: Store, row: Any, base: str) -> dict[str, Any]:
    return serialize.resource(row, base, _customer_name(store, row.offering.customer), store.config.mode)


def _render_usage(store: Store, row: Any, base: str) -> dict[str, Any]:
    return serialize.component_usage(row, base, store.config.mode)


class Collection:
    """A paginated list (GET) and its count (HEAD), and one row by uuid."""

    def __init__(
        self,
        store: Store,
        lister: Lister,
        render: Render,
        getter: Callable[[Any], Any],
        visible: Callable[[User, Any], bool],
    ) -> None:
        self.store, self.lister, self.render, self.getter, self.visible = (
            store,
            lister,
            render,
            getter,
            visible,
        )

    def _page(self, req: falcon.Request, resp: falcon.Response, head: bool) -> None:
        q = Query(req.query_string)
        try:
            with self.store.lock:
                rows, headers = page(self.lister(self.store, user_of(req), q), q, _base(req) + req.path)
                body = [serialize.restrict(self.render(self.store, r, _base(req)), q.fields()) for r in rows]
        except BadQuery as exc:
            send(resp, exc.status, exc.body)
            return
        send(resp, 200, None if head else body)
        if not head:
            resp.content_type = "application/json"
        for name, value in headers.items():
            resp.set_header(name, value)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._page(req, resp, head=False)

    def on_head(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._page(req, resp, head=True)

    def find(self, req: falcon.Request, uuid: str) -> Any:
        key = parse_uuid(uuid)
        row = None if key is None else self.getter(key)
        return row if row is not None and self.visible(user_of(req), row) else None

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        with self.store.lock:
            row = self.find(req, uuid)
            body = None if row is None else self.render(self.store, row, _base(req))
        if body is None:
            send(resp, 404, NOT_FOUND)
        else:
            send(resp, 200, serialize.restrict(body, Query(req.query_string).fields()))

    def on_head_item(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        self.on_get_item(req, resp, uuid)
        resp.data = b""


class Secret:
    """GET reads a provider's api_secret_code (staff or owner); POST rotates it, loudly."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        key = parse_uuid(uuid)
        provider = None if key is None else self.store.providers.get(key)
        user = user_of(req)
        if provider is None:
            send(resp, 404, NOT_FOUND)
        elif not (user.is_staff or provider.customer in user.owner_of):
            send(resp, 403, FORBIDDEN)
        else:
            send(resp, 200, {"api_secret_code": provider.secret})

    def on_post(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        key = parse_uuid(uuid)
        provider = None if key is None else self.store.providers.get(key)
        user = user_of(req)
        with self.store.lock:
            self.store.rotations.append(
                {"time": iso(self.store.now()), "user": user.username, "service_provider": uuid}
            )
        print(f"fake Waldur: api_secret_code POST (rotation) by {user.username} for {uuid}", flush=True)
        if provider is None:
            send(resp, 404, NOT_FOUND)
        elif not (user.is_staff or provider.customer in user.owner_of):
            send(resp, 403, FORBIDDEN)
        else:
            from ingest.dev.fake_waldur.control import rotate

            send(resp, 200, {"api_secret_code": rotate(self.store, provider)})


class PlanPeriods:
    def __init__(self, store: Store, resources: Collection) -> None:
        self.store, self.resources = store, resources

    def on_get(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        with self.store.lock:
            row = self.resources.find(req, uuid)
            if row is None:
                send(resp, 404, NOT_FOUND)
                return
            now = self.store.now()
            first = month_start_instant(now, self.store.config.zone())
            billing = first.date()
            body = [
                serialize.plan_period(
                    pp,
                    [
                        u
                        for u in self.store.usages_of(row)
                        if u.plan_period is pp and u.billing_period == billing
                    ],
                    self.store.config.mode,
                )
                for pp in row.plan_periods
                if pp.end is None or pp.end >= first
            ]
        send(resp, 200, body)


def create_app(store: Store) -> falcon.App[falcon.Request, falcon.Response]:
    from ingest.dev.fake_waldur import control

    app = falcon.App(middleware=[Gatekeeper(store)])
    app.add_error_handler(falcon.HTTPMethodNotAllowed, _not_allowed)
    app.add_error_handler(falcon.HTTPNotFound, _not_found)
    app.add_route("/api/users/me/", Me(store))
    app.add_route("/api/version/", Version(store))
    providers = Collection(store, listing.providers, _render_provider, store.providers.get, lambda u, r: True)
    offerings = Collection(
        store, listing.offerings, _render_offering, store.offerings.get, listing.offering_visible
    )
    resources = Collection(
        store,
        listing.resources,
        _render_resource,
        store.resources.get,
        lambda u, r: listing.offering_visible(u, r.offering),
    )
    usages = Collection(
        store,
        listing.usages,
        _render_usage,
        store.usage_by_uuid,
        lambda u, r: listing.offering_visible(u, r.resource.offering),
    )
    for path, collection in (
        ("marketplace-service-providers", providers),
        ("marketplace-provider-offerings", offerings),
        ("marketplace-provider-resources", resources),
        ("marketplace-component-usages", usages),
    ):
        app.add_route(f"/api/{path}/", collection)
        app.add_route(f"/api/{path}/{{uuid}}/", collection, suffix="item")
    app.add_route("/api/marketplace-service-providers/{uuid}/api_secret_code/", Secret(store))
    app.add_route("/api/marketplace-provider-resources/{uuid}/plan_periods/", PlanPeriods(store, resources))
    app.add_route("/api/marketplace-component-usages/set_usage/", SetUsage(store))
    per_user = UserUsages(store)
    app.add_route("/api/marketplace-component-usages/{uuid}/set_user_usages/", per_user, suffix="bulk")
    app.add_route("/api/marketplace-component-usages/{uuid}/set_user_usage/", per_user, suffix="single")
    control.add_routes(app, store)
    return app
