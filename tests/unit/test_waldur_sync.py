"""The catalog sync from Waldur over fakes of its ports (no sockets), and the reader over the
official client with an httpx.MockTransport."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

import httpx
import pytest

from ingest.services import catalog_file
from ingest.services.sync_ports import (
    CatalogView,
    ChangeSet,
    HeldOffering,
    HeldProvider,
    HeldResource,
    Progress,
    RemoteComponent,
    RemoteOffering,
    RemotePlanPeriod,
    RemoteProvider,
    RemoteResource,
    SecretRead,
    ServerInfo,
    SyncBusy,
    SyncState,
    WaldurError,
)
from ingest.services.waldur_sync import (
    SAFETY_MARGIN,
    CatalogSync,
    ConfigurationError,
    SyncFailed,
    SyncSettings,
)

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def u(name: str) -> UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, name)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


class FakeWaldur:
    """The WaldurCatalog port over dicts; ``modified`` times drive the filters (8.x), or are
    ignored on providers/offerings and day-only on resources (``version`` 7.x)."""

    def __init__(self, clock: Clock, version: str = "8.1.3") -> None:
        self.clock = clock
        self.version = version
        self.is_staff = True
        self.providers_: dict[UUID, tuple[RemoteProvider, dt.datetime]] = {}
        self.secrets_: dict[UUID, str | WaldurError] = {}
        self.offerings_: dict[UUID, tuple[RemoteOffering, dt.datetime]] = {}
        self.resources_: dict[UUID, tuple[RemoteResource, dt.datetime]] = {}
        self.periods_: dict[UUID, list[RemotePlanPeriod]] = {}
        self.fail: WaldurError | None = None
        self.fail_resources: WaldurError | None = None
        self.refuse_datetime = False
        self.refuse_date = False
        self.calls: list[tuple[str, Any]] = []
        self.plan_period_requests: list[UUID] = []

    # building
    def provider(self, name: str, secret: str = "s" * 20) -> UUID:
        customer = u(name)
        self.providers_[customer] = (RemoteProvider(customer, u(name + "-sp"), name), self.clock())
        self.secrets_[customer] = secret
        return customer

    def offering(
        self, name: str, customer: UUID, components: Sequence[tuple[str, str]] = (("cpu", "usage"),)
    ) -> UUID:
        o = RemoteOffering(u(name), customer, name, tuple(RemoteComponent(t, b, "h") for t, b in components))
        self.offerings_[o.uuid] = (o, self.clock())
        return o.uuid

    def resource(self, name: str, offering: UUID, state: str = "OK", plan: UUID | None = None) -> UUID:
        r = RemoteResource(u(name), offering, name, state, plan or u("plan"))
        self.resources_[r.uuid] = (r, self.clock())
        self.periods_[r.uuid] = [RemotePlanPeriod(u(name + "-pp"), r.uuid, T0 - dt.timedelta(days=40), None)]
        return r.uuid

    def change(self, resource: UUID, **fields: Any) -> None:
        r, _ = self.resources_[resource]
        self.resources_[resource] = (dataclasses.replace(r, **fields), self.clock())

    def rotate(self, customer: UUID, secret: str) -> None:
        p, _ = self.providers_[customer]
        self.providers_[customer] = (p, self.clock())
        self.secrets_[customer] = secret

    # the port
    @property
    def old(self) -> bool:
        return self.version.startswith("7")

    def server(self) -> ServerInfo:
        if self.fail:
            raise self.fail
        return ServerInfo(self.version, self.is_staff, "bridge")

    def providers(self, since: dt.datetime | None) -> list[RemoteProvider]:
        self.calls.append(("providers", since))
        return [p for p, m in self.providers_.values() if since is None or self.old or m >= since]

    def secrets(self, providers: Sequence[RemoteProvider]) -> dict[UUID, SecretRead]:
        self.calls.append(("secrets", [p.customer for p in providers]))
        found = {}
        for p in providers:
            s = self.secrets_[p.customer]
            if isinstance(s, WaldurError):
                if s.kind != "forbidden":
                    raise s
                found[p.customer] = SecretRead(None, "403: the token may not read it")
            else:
                found[p.customer] = SecretRead(s)
        return found

    def offerings(self, scope: Sequence[UUID], since: dt.datetime | None) -> list[RemoteOffering]:
        self.calls.append(("offerings", since))
        return [
            o
            for o, m in self.offerings_.values()
            if (not scope or o.uuid in scope) and (since is None or self.old or m >= since)
        ]

    def resources(
        self, offerings: Sequence[UUID], since: dt.datetime | dt.date | None, progress: Progress
    ) -> list[RemoteResource]:
        self.calls.append(("resources", since))
        if self.fail_resources:
            raise self.fail_resources
        if isinstance(since, dt.datetime) and (self.refuse_datetime or self.old):
            raise WaldurError("rejected", 400, '{"modified":["Enter a valid date."]}')
        if since is not None and not isinstance(since, dt.datetime) and self.refuse_date:
            raise WaldurError("rejected", 400, '{"modified":["bad"]}')

        def newer(m: dt.datetime) -> bool:
            if since is None:
                return True
            if isinstance(since, dt.datetime):
                return m >= since
            return m.date() >= since

        return [
            r for r, m in self.resources_.values() if (not offerings or r.offering in offerings) and newer(m)
        ]

    def resources_by_uuid(self, uuids: Sequence[UUID]) -> dict[UUID, RemoteResource]:
        self.calls.append(("resources_by_uuid", list(uuids)))
        return {x: self.resources_[x][0] for x in uuids if x in self.resources_}

    def plan_periods(
        self, resources: Sequence[UUID], progress: Progress
    ) -> dict[UUID, list[RemotePlanPeriod] | None]:
        self.plan_period_requests += list(resources)
        return {r: (list(self.periods_[r]) if r in self.periods_ else None) for r in resources}


@dataclasses.dataclass
class HeldSecret:
    name: str
    secret: str | None = None
    previous: str | None = None
    until: dt.datetime | None = None


class FakeCatalog:
    """The CatalogStore port in memory, with rotate_secret's grace semantics."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.providers: dict[UUID, HeldSecret] = {}
        self.offerings: dict[UUID, HeldOffering] = {}
        self.resources: dict[UUID, HeldResource] = {}
        self.periods: dict[UUID, RemotePlanPeriod] = {}
        self.version = 0
        self.applied = 0
        self.views: list[int | None] = []  # None: the whole catalog, else how many resources

    def view(self, resources: Sequence[UUID] | None = None) -> CatalogView:
        wanted = set(self.resources) if resources is None else set(resources)
        self.views.append(None if resources is None else len(wanted))
        return CatalogView(
            {c: HeldProvider(p.name, p.secret) for c, p in self.providers.items()},
            dict(self.offerings),
            {k: r for k, r in self.resources.items() if k in wanted},
            {k: p for k, p in self.periods.items() if p.resource in wanted},
        )

    def apply(self, changes: ChangeSet, grace: dt.timedelta) -> int:
        assert not changes.empty
        for x in changes.remove_plan_periods:
            self.periods.pop(x)
        gone_offerings = set(changes.remove_offerings) | {
            o for o, held in self.offerings.items() if held.customer in changes.remove_providers
        }
        gone_resources = set(changes.remove_resources) | {
            r for r, held in self.resources.items() if held.offering in gone_offerings
        }
        for r in gone_resources:
            self.resources.pop(r)
        self.periods = {k: p for k, p in self.periods.items() if p.resource not in gone_resources}
        for o in gone_offerings:
            self.offerings.pop(o)
        for c in changes.remove_providers:
            self.providers.pop(c)
        for p in changes.providers:
            self.providers.setdefault(p.customer, HeldSecret(p.name)).name = p.name
        for customer, secret, rotate in changes.secrets:
            held = self.providers[customer]
            if rotate:
                held.previous, held.until = held.secret, self.clock() + grace
            held.secret = secret
        for o in changes.offerings:
            self.offerings[o.uuid] = HeldOffering(
                o.customer, o.name, {c.type: (c.billing_type, c.measured_unit) for c in o.components}
            )
        for r in changes.resources:
            self.resources[r.uuid] = HeldResource(r.offering, r.name, r.state, r.plan)
        for pp in changes.plan_periods:
            self.periods[pp.uuid] = pp
        self.version += 1
        self.applied += 1
        return self.version


class FakeState:
    def __init__(self) -> None:
        self.state = SyncState()
        self.failures: list[str] = []

    def read(self) -> SyncState:
        return self.state

    def succeeded(
        self,
        *,
        watermark: dt.datetime,
        at: dt.datetime,
        full: bool,
        summary: dict[str, Any],
        server_version: str | None,
    ) -> None:
        self.state = dataclasses.replace(
            self.state,
            watermark=watermark,
            last_sync_at=at,
            last_full_at=at if full else self.state.last_full_at,
            last_summary=summary,
            last_error=None,
            server_version=server_version,
        )

    def failed(self, *, at: dt.datetime, error: str, server_version: str | None) -> None:
        self.failures.append(error)
        self.state = dataclasses.replace(self.state, last_error=error, last_error_at=at)


class Lock:
    def __init__(self) -> None:
        self.held = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.held:
            raise SyncBusy("busy")
        self.held = True
        try:
            yield
        finally:
            self.held = False


@dataclasses.dataclass
class World:
    clock: Clock
    waldur: FakeWaldur
    catalog: FakeCatalog
    state: FakeState
    lock: Lock
    outcomes: list[str]

    def sync(self, scope: Sequence[UUID] = (), **settings: Any) -> CatalogSync:
        return CatalogSync(
            self.waldur,
            self.catalog,
            self.state,
            self.lock,
            SyncSettings(scope=tuple(scope), **settings),
            clock=self.clock,
            on_outcome=lambda outcome, _s: self.outcomes.append(outcome),
        )


@pytest.fixture
def world() -> World:
    clock = Clock()
    waldur = FakeWaldur(clock)
    hpc = waldur.provider("hpc", "hpc-secret-0123456789")
    cloud = waldur.provider("cloud", "cloud-secret-0123456789")
    compute = waldur.offering("compute", hpc, [("cpu", "usage"), ("storage", "limit"), ("switch", "few")])
    vms = waldur.offering("vms", cloud)
    waldur.resource("r1", compute)
    waldur.resource("r2", compute, state="Erred")
    waldur.resource("r3", vms)
    return World(clock, waldur, FakeCatalog(clock), FakeState(), Lock(), [])


def test_first_sync_is_full_and_loads_everything(world: World) -> None:
    summary = world.sync().run()
    assert (summary["mode"], summary["reason"]) == ("full", "first sync")
    assert set(world.catalog.resources) == {u("r1"), u("r2"), u("r3")}
    assert world.catalog.resources[u("r2")].state == "Erred"
    assert world.catalog.offerings[u("compute")].components["switch"] == ("few", "h")
    assert world.catalog.providers[u("hpc")].secret == "hpc-secret-0123456789"
    assert len(world.catalog.periods) == 3
    assert summary["changes"]["resources"] == {"added": 3, "updated": 0, "removed": 0}
    assert summary["secrets"]["set"] == 2
    assert world.catalog.version == 1
    assert world.state.state.watermark == T0 - SAFETY_MARGIN
    assert world.state.state.last_full_at == T0
    assert world.outcomes == ["changed"]


def test_incremental_adds_and_updates_and_reads_plan_periods_only_of_changed(world: World) -> None:
    sync = world.sync()
    sync.run()
    world.clock.advance(minutes=10)
    world.waldur.change(u("r1"), state="Terminating")
    world.waldur.resource("r4", u("vms"))
    world.waldur.plan_period_requests.clear()
    summary = sync.run()
    assert summary["mode"] == "incremental"
    assert summary["resource_filter"] == "date-time"
    assert summary["changes"]["resources"] == {"added": 1, "updated": 1, "removed": 0}
    assert sorted(world.waldur.plan_period_requests) == sorted([u("r1"), u("r4")])
    assert world.catalog.views[-2:] == [0, 4]  # an incremental run reads only what Waldur returned
    assert world.catalog.resources[u("r1")].state == "Terminating"
    assert u("r4") in world.catalog.resources
    assert world.catalog.version == 2


def test_a_resource_modified_without_change_costs_no_write(world: World) -> None:
    sync = world.sync()
    sync.run()
    world.clock.advance(minutes=10)
    world.waldur.change(u("r1"))  # set_usage bumps modified: no catalog change
    summary = sync.run()
    assert summary["changed"] is False
    assert summary["catalog_version"] is None
    assert world.catalog.version == 1 and world.catalog.applied == 1
    assert world.outcomes == ["changed", "unchanged"]


def test_incremental_removes_nothing_full_removes_what_vanished(world: World) -> None:
    sync = world.sync()
    sync.run()
    world.clock.advance(minutes=10)
    del world.waldur.resources_[u("r2")]
    del world.waldur.offerings_[u("vms")]
    del world.waldur.resources_[u("r3")]
    assert sync.run()["changed"] is False
    assert u("r2") in world.catalog.resources
    summary = sync.run(full=True)
    assert (summary["mode"], summary["reason"]) == ("full", "asked for (--full)")
    assert summary["changes"]["resources"]["removed"] == 2
    assert summary["changes"]["offerings"]["removed"] == 1
    assert summary["changes"]["plan_periods"]["removed"] == 2
    assert set(world.catalog.resources) == {u("r1")}
    assert set(world.catalog.offerings) == {u("compute")}
    assert ("resources_by_uuid", [u("r2")]) in world.waldur.calls  # confirmed one by one


def test_full_sync_restores_a_resource_the_page_walk_missed(world: World) -> None:
    sync = world.sync()
    sync.run()
    listed = world.waldur.resources

    def skipping(*args: Any) -> list[RemoteResource]:
        return [r for r in listed(*args) if r.uuid != u("r2")]

    world.waldur.resources = skipping  # type: ignore[method-assign]
    summary = sync.run(full=True)
    assert summary["vanished_but_listed_again"] == 1
    assert u("r2") in world.catalog.resources
    assert summary["changed"] is False


def test_full_sync_when_the_interval_has_passed(world: World) -> None:
    sync = world.sync(full_interval=dt.timedelta(hours=1))
    sync.run()
    world.clock.advance(minutes=30)
    assert sync.run()["mode"] == "incremental"
    world.clock.advance(minutes=31)
    summary = sync.run()
    assert summary["mode"] == "full"
    assert "WALDUR_FULL_SYNC_INTERVAL" in summary["reason"]


def test_scope_keeps_to_the_offerings_named_and_their_providers(world: World) -> None:
    outside = u("loaded-from-a-file")
    world.catalog.providers[u("cloud")] = HeldSecret("cloud", "x" * 20)
    world.catalog.offerings[outside] = HeldOffering(u("cloud"), "file", {"cpu": ("usage", "")})
    world.catalog.resources[u("rf")] = HeldResource(outside, "rf", "OK", None)
    summary = world.sync(scope=[u("compute")]).run()
    assert set(world.catalog.offerings) == {u("compute"), outside}
    assert set(world.catalog.resources) == {u("r1"), u("r2"), u("rf")}
    assert ("secrets", [u("hpc")]) in world.waldur.calls  # no other provider's secret is read
    assert world.catalog.providers[u("cloud")].secret == "x" * 20
    assert summary["changes"]["offerings"]["removed"] == 0
    assert summary["changes"]["resources"]["removed"] == 0
    assert summary["seen"]["offerings"] == 1


def test_a_changed_scope_makes_the_next_sync_full(world: World) -> None:
    world.sync(scope=[u("compute")]).run()
    world.clock.advance(minutes=10)
    assert world.sync(scope=[u("compute")]).run()["mode"] == "incremental"
    summary = world.sync(scope=[u("compute"), u("vms")]).run()
    assert (summary["mode"], summary["reason"]) == ("full", "WALDUR_OFFERINGS changed")
    assert u("r3") in world.catalog.resources


def test_a_rotated_secret_keeps_the_old_one_for_the_grace(world: World) -> None:
    sync = world.sync(grace=dt.timedelta(minutes=30))
    sync.run()
    world.clock.advance(minutes=10)
    world.waldur.rotate(u("hpc"), "hpc-secret-new-0123456789")
    summary = sync.run()
    assert summary["secrets"]["rotated"] == 1
    held = world.catalog.providers[u("hpc")]
    assert (held.secret, held.previous) == ("hpc-secret-new-0123456789", "hpc-secret-0123456789")
    assert held.until == world.clock.now + dt.timedelta(minutes=30)
    assert "hpc-secret" not in json.dumps(summary)  # a secret is never in the summary


def test_a_secret_the_token_may_not_read_is_reported_and_the_sync_goes_on(world: World) -> None:
    world.waldur.secrets_[u("cloud")] = WaldurError("forbidden", 403, '{"detail":"no"}')
    summary = world.sync().run()
    assert [p["customer"] for p in summary["secrets"]["unreadable"]] == [str(u("cloud"))]
    assert "403" in summary["secrets"]["unreadable"][0]["reason"]
    assert world.catalog.providers[u("cloud")].secret is None
    assert u("r3") in world.catalog.resources


def test_a_short_secret_is_refused_like_the_loader_does(world: World) -> None:
    summary = world.sync(secret_min_length=22).run()
    assert {p["reason"] for p in summary["secrets"]["unreadable"]} == {"shorter than SECRET_MIN_LENGTH=22"}


def test_dry_run_writes_nothing_and_says_what_would_change(world: World) -> None:
    summary = world.sync().run(dry_run=True)
    assert summary["dry_run"] and summary["changed"]
    assert summary["changes"]["resources"]["added"] == 3
    assert world.catalog.applied == 0 and world.catalog.resources == {}
    assert world.state.state == SyncState()
    would = summary["would_change"]
    assert would["resources"]["upsert"]["count"] == 3
    assert f"{u('r2')} Erred" in would["resources"]["upsert"]["first"]
    assert would["secrets"]["set"]["count"] == 2
    assert "secret-0123456789" not in json.dumps(summary)


@pytest.mark.parametrize("detail", ["Token has expired.", "Invalid token."])
def test_401_is_a_configuration_error(world: World, detail: str) -> None:
    world.waldur.fail = WaldurError("unauthorized", 401, json.dumps({"detail": detail}))
    with pytest.raises(ConfigurationError, match="WALDUR_TOKEN") as raised:
        world.sync().run()
    assert detail in str(raised.value)
    assert world.state.state.last_error == str(raised.value)
    assert world.outcomes == ["unauthorized"]
    assert world.catalog.applied == 0


def test_a_failure_midway_writes_nothing_and_is_recorded(world: World) -> None:
    world.waldur.fail_resources = WaldurError("server_error", 503, "busy", transient=True)
    with pytest.raises(SyncFailed):
        world.sync().run()
    assert world.catalog.applied == 0
    assert "server_error" in (world.state.state.last_error or "")
    assert world.state.state.watermark is None


def test_a_database_failure_is_recorded_and_raised(world: World) -> None:
    def broken(changes: ChangeSet, grace: dt.timedelta) -> int:
        raise OSError("disk full")

    world.catalog.apply = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        world.sync().run()
    assert world.state.state.last_error == "OSError: disk full"
    assert world.outcomes == ["failed"]


def test_7x_gets_a_day_filter_and_no_filter_on_providers(world: World) -> None:
    world.waldur.version = "7.0.7"
    sync = world.sync()
    sync.run()
    world.clock.advance(minutes=10)
    world.waldur.calls.clear()
    summary = sync.run()
    assert summary["mode"] == "incremental"
    assert summary["resource_filter"] == "date"
    assert ("providers", None) in world.waldur.calls
    assert ("resources", (T0 - SAFETY_MARGIN).date()) in world.waldur.calls


def test_a_refused_datetime_filter_falls_back_to_a_date_then_to_full(world: World) -> None:
    sync = world.sync()
    sync.run()
    world.clock.advance(minutes=10)
    world.waldur.refuse_datetime = True
    assert sync.run()["resource_filter"] == "date"
    world.waldur.refuse_date = True
    summary = sync.run()
    assert summary["mode"] == "full"
    assert "refused the modified filter" in summary["reason"]


def test_an_ended_plan_period_waldur_no_longer_lists_is_kept(world: World) -> None:
    sync = world.sync()
    sync.run()
    ended = RemotePlanPeriod(u("old-pp"), u("r1"), T0 - dt.timedelta(days=70), T0 - dt.timedelta(days=40))
    world.catalog.periods[ended.uuid] = ended
    world.waldur.periods_[u("r1")] = [RemotePlanPeriod(u("new-pp"), u("r1"), T0, None)]
    summary = sync.run(full=True)
    assert summary["changes"]["plan_periods"] == {"added": 1, "updated": 0, "removed": 1}
    assert set(p for p, pp in world.catalog.periods.items() if pp.resource == u("r1")) == {
        u("old-pp"),
        u("new-pp"),
    }


def test_a_provider_gone_from_waldur_goes_with_its_offerings(world: World) -> None:
    sync = world.sync()
    sync.run()
    del world.waldur.providers_[u("cloud")]
    del world.waldur.offerings_[u("vms")]
    del world.waldur.resources_[u("r3")]
    summary = sync.run(full=True)
    assert summary["changes"]["service_providers"]["removed"] == 1
    assert set(world.catalog.providers) == {u("hpc")}


def test_one_sync_at_a_time(world: World) -> None:
    sync = world.sync()
    with world.lock(), pytest.raises(SyncBusy):
        sync.run()


def test_the_catalog_file_accepts_few() -> None:
    doc = catalog_file.parse(
        {
            "offerings": [
                {
                    "uuid": str(u("o")),
                    "customer": str(u("c")),
                    "components": [{"type": "x", "billing_type": "few"}],
                }
            ]
        }
    )
    assert doc["offerings"][0]["components"][0]["billing_type"] == "few"


# -- the reader over the official client, with a mock transport --


def _reader(handler: Any) -> Any:
    from ingest.adapters.waldur.catalog_reader import WaldurCatalogReader
    from ingest.adapters.waldur.client import make_client

    client = make_client("https://waldur.test/", "tok", 5)
    client.set_httpx_client(
        httpx.Client(base_url="https://waldur.test", transport=httpx.MockTransport(handler))
    )
    return WaldurCatalogReader(client, workers=2, sleep=lambda _s: None)


def test_the_reader_retries_a_5xx_and_never_posts() -> None:
    seen: list[tuple[str, str]] = []
    failures = iter([503, 502])
    sp, customer = u("sp"), u("customer")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.url.path.endswith("/api_secret_code/"):
            status = next(failures, 200)
            return httpx.Response(
                status, json={"api_secret_code": "abc" * 8} if status == 200 else {"detail": "x"}
            )
        raise AssertionError(request.url)

    found = _reader(handler).secrets([RemoteProvider(customer, sp, "p")])
    assert found[customer] == SecretRead("abc" * 8)
    assert len(seen) == 3 and {m for m, _ in seen} == {"GET"}


def test_the_reader_reports_a_403_secret_and_raises_401() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/users/me/":
            return httpx.Response(401, json={"detail": "Token has expired."})
        return httpx.Response(403, json={"detail": "You do not have permission to perform this action."})

    reader = _reader(handler)
    found = reader.secrets([RemoteProvider(u("c"), u("sp"), "p")])
    assert found[u("c")].secret is None and "403" in (found[u("c")].problem or "")
    with pytest.raises(WaldurError) as raised:
        reader.server()
    assert raised.value.kind == "unauthorized" and "expired" in raised.value.detail


def test_the_reader_walks_resource_pages_with_null_limit_usage_asked_away() -> None:
    offering = u("o")
    rows = [
        {
            "uuid": u(f"r{i}").hex,
            "name": f"r{i}",
            "state": "OK",
            "offering_uuid": offering.hex,
            "plan_uuid": None,
        }
        for i in range(250)
    ]
    queries: list[httpx.QueryParams] = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.params)
        page = int(request.url.params.get("page", 1))
        size = int(request.url.params["page_size"])
        chunk = rows[(page - 1) * size : page * size]
        link = f'<https://waldur.test/api/marketplace-provider-resources/?page={page + 1}>; rel="next"'
        headers = {"X-Result-Count": str(len(rows))}
        if page * size < len(rows):
            headers["Link"] = link
        return httpx.Response(200, json=chunk, headers=headers)

    found = _reader(handler).resources([offering], dt.date(2026, 12, 1), _NoBar())
    assert len(found) == 250 and found[0].plan is None
    assert [q.get("page") for q in queries] == [None, "2", "3"]
    first = queries[0]
    assert first.get_list("field") == ["uuid", "name", "state", "offering_uuid", "plan_uuid", "modified"]
    assert first["modified"] == "2026-12-01" and first["o"] == "created"
    assert first.get_list("offering_uuid") == [str(offering)]


class _NoBar:
    def phase(self, name: str, total: int | None) -> None:
        assert total == 250

    def advance(self, n: int = 1) -> None:
        pass
