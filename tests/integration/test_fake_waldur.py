"""The fake Waldur as a real process, spoken to through the official waldur-api-client 8.1.3:
paging, counts, field selection, auth and roles, secrets, plan periods, set_usage (bodies,
order of checks, last write wins), the 7.0.7 quirks, the rate cap and injected faults."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from waldur_api_client import AuthenticatedClient
from waldur_api_client.api.marketplace_component_usages import (
    marketplace_component_usages_list,
    marketplace_component_usages_set_usage,
    marketplace_component_usages_set_user_usages,
)
from waldur_api_client.api.marketplace_provider_offerings import (
    marketplace_provider_offerings_count,
    marketplace_provider_offerings_list,
    marketplace_provider_offerings_retrieve,
)
from waldur_api_client.api.marketplace_provider_resources import (
    marketplace_provider_resources_count,
    marketplace_provider_resources_list,
    marketplace_provider_resources_plan_periods_list,
    marketplace_provider_resources_retrieve,
)
from waldur_api_client.api.marketplace_service_providers import (
    marketplace_service_providers_count,
    marketplace_service_providers_list,
    service_provider_api_secret_code_retrieve,
)
from waldur_api_client.api.users import users_me_retrieve
from waldur_api_client.api.version import version_retrieve
from waldur_api_client.errors import UnexpectedStatus
from waldur_api_client.models import (
    ComponentUsageCreateRequest,
    ComponentUsageItemRequest,
    ComponentUserUsageBulkCreateRequest,
    ComponentUserUsageCreateRequest,
    ProviderOfferingDetailsFieldEnum,
    ResourceFieldEnum,
    ResourceOEnum,
    ResourceState,
)
from waldur_api_client.types import UNSET

from ingest.dev.fake_waldur import process

C1, C2 = "c1000000-0000-4000-8000-000000000001", "c1000000-0000-4000-8000-000000000002"
SP1 = "5b100000-0000-4000-8000-000000000001"
O1, O2 = "0f100000-0000-4000-8000-000000000001", "0f100000-0000-4000-8000-000000000002"
PLAN = "9e100000-0000-4000-8000-000000000001"
N = 250
NOPLAN, ERRED = "e2000000-0000-4000-8000-000000000001", "e2000000-0000-4000-8000-000000000002"
CLOSED, CLOSED_PP = "e2000000-0000-4000-8000-000000000003", "fa000000-0000-4000-8000-000000000003"
OTHER = "e2000000-0000-4000-8000-000000000004"
LIMITED = "e2000000-0000-4000-8000-000000000005"
MISSING = "e9999999-0000-4000-8000-000000000000"
TOKENS = {"owner": "owner-token", "manager": "manager-token", "stranger": "stranger-token"}
FIELDS = [ResourceFieldEnum.UUID, ResourceFieldEnum.STATE, ResourceFieldEnum.MODIFIED, ResourceFieldEnum.NAME]


def r(i: int) -> str:
    return f"e1000000-0000-4000-8000-{i:012x}"


def _resource(
    rid: str, offering: str, plan: str | None = PLAN, state: str = "OK", **extra: Any
) -> dict[str, Any]:
    periods = (
        [{"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, rid)), "start": "2026-01-01T00:00:00Z"}] if plan else []
    )
    return {"uuid": rid, "offering": offering, "name": rid[-4:], "state": state, "plan": plan,
            "plan_periods": periods, **extra}  # fmt: skip


SEED: dict[str, Any] = {
    "service_providers": [
        {"customer": C1, "uuid": SP1, "name": "Alpha HPC", "api_secret_code": "alpha-secret"},
        {"customer": C2, "name": "Beta Cloud", "api_secret_code": "beta-secret"},
    ],
    "offerings": [
        {"uuid": O1, "customer": C1, "name": "Alpha Cluster", "components": [
            {"type": "cpu_hours", "billing_type": "usage", "measured_unit": "hours"},
            {"type": "ram_gb", "billing_type": "usage", "measured_unit": "GB"},
            {"type": "storage_tb", "billing_type": "limit", "measured_unit": "TB",
             "limit_amount": 100, "limit_period": "month"},
            {"type": "prepaid", "billing_type": "one", "measured_unit": "unit"},
            {"type": "support", "billing_type": "fixed", "measured_unit": "month"},
            {"type": "switch", "billing_type": "few", "measured_unit": "unit"},
        ]},
        {"uuid": O2, "customer": C2, "name": "Beta VMs", "components": [
            {"type": "cpu_hours", "billing_type": "usage", "measured_unit": "hours"},
        ]},
    ],
    "resources": [_resource(r(i), O1) for i in range(1, N + 1)]
    + [
        _resource(NOPLAN, O2, plan=None),
        _resource(ERRED, O2, state="Erred"),
        {**_resource(CLOSED, O2), "plan_periods": [
            {"uuid": CLOSED_PP, "start": "2025-01-01T00:00:00Z", "end": "2025-06-01T00:00:00Z"},
            {"uuid": "fa000000-0000-4000-8000-000000000004", "start": "2025-06-01T00:00:00Z", "end": None},
        ]},
        _resource(OTHER, O2),
        _resource(LIMITED, O1),
    ],
    "users": [
        {"token": TOKENS["owner"], "username": "owner", "owner_of": [C1]},
        {"token": TOKENS["manager"], "username": "manager", "manager_of": [O1]},
        {"token": TOKENS["stranger"], "username": "stranger"},
        {"token": "inactive-token", "username": "gone", "is_active": False},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def fake() -> Iterator[process.FakeWaldur]:
    with process.start(seed=SEED) as running:
        yield running
        assert running.stats()["api_secret_code_posts"] <= 1  # only the test that POSTs on purpose
    assert running.proc.returncode == 0  # SIGTERM stops it cleanly


@pytest.fixture(scope="module")
def fake7() -> Iterator[process.FakeWaldur]:
    with process.start(seed=SEED, mode="7.0.7") as running:
        yield running


def client(fake: process.FakeWaldur, who: str | None = None) -> AuthenticatedClient:
    token = TOKENS.get(who, who) if who else fake.token
    return AuthenticatedClient(base_url=fake.base_url, token=token or "", timeout=httpx.Timeout(30))


def raw(
    fake: process.FakeWaldur, method: str, path: str, who: str | None = None, **kw: Any
) -> httpx.Response:
    token = TOKENS.get(who, who) if who else fake.token
    return httpx.request(method, fake.base_url + path, headers={"Authorization": f"Token {token}"}, **kw)


def usage(resource: str, **amounts: str) -> ComponentUsageCreateRequest:
    items = [ComponentUsageItemRequest(type_=k, amount=v) for k, v in amounts.items()]
    return ComponentUsageCreateRequest(usages=items, resource=uuid.UUID(resource))


def report(client: AuthenticatedClient, body: ComponentUsageCreateRequest) -> Any:
    """set_usage through the client: its parsed answer (None on 201), or UnexpectedStatus."""
    response = marketplace_component_usages_set_usage.sync_detailed(client=client, body=body)
    assert response.status_code == 201
    return response.parsed


def rejected(fake: process.FakeWaldur, body: ComponentUsageCreateRequest, who: str | None = None) -> Any:
    with pytest.raises(UnexpectedStatus) as caught:
        report(client=client(fake, who), body=body)
    return caught.value.status_code, caught.value.content


def last_month() -> dt.datetime:
    first = dt.datetime.now(dt.UTC).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    return first - dt.timedelta(days=3)


def requests_to(fake: process.FakeWaldur, endpoint: str) -> int:
    return sum(fake.stats()["requests"].get(endpoint, {}).values())


# --- listing -------------------------------------------------------------------------------


def test_sync_all_walks_250_resources_in_three_requests(fake: process.FakeWaldur) -> None:
    before = requests_to(fake, "GET /api/marketplace-provider-resources/")
    rows = marketplace_provider_resources_list.sync_all(
        client=client(fake), offering_uuid=[uuid.UUID(O1)], field=FIELDS, o=[ResourceOEnum.CREATED]
    )
    assert requests_to(fake, "GET /api/marketplace-provider-resources/") - before == 3
    uuids = [row.uuid for row in rows]
    assert len(uuids) == N + 1 == len(set(uuids))
    assert uuids[:2] == [uuid.UUID(r(1)), uuid.UUID(r(2))]  # creation order
    assert all(row.state == ResourceState.OK and row.offering_uuid is UNSET for row in rows)


def test_head_counts_and_page_headers(fake: process.FakeWaldur) -> None:
    c = client(fake)
    assert marketplace_provider_resources_count.sync(client=c, offering_uuid=[uuid.UUID(O1)]) == N + 1
    assert marketplace_service_providers_count.sync(client=c) == 2
    assert marketplace_provider_offerings_count.sync(client=c) == 2
    head = raw(fake, "HEAD", "/api/marketplace-provider-resources/")
    assert head.status_code == 200 and head.headers["X-Result-Count"] == str(N + 5) and head.content == b""
    page = raw(fake, "GET", "/api/marketplace-provider-resources/", params={"page": 2, "field": "uuid"})
    assert len(page.json()) == 10  # the default page size
    links = dict(reversed(part.split("; ")) for part in page.headers["Link"].split(", "))
    base = fake.base_url + "/api/marketplace-provider-resources/"
    assert links == {
        'rel="first"': f"<{base}?field=uuid>",
        'rel="prev"': f"<{base}?field=uuid>",
        'rel="next"': f"<{base}?field=uuid&page=3>",
        'rel="last"': f"<{base}?field=uuid&page=26>",
    }
    big = raw(
        fake, "GET", "/api/marketplace-provider-resources/", params={"page_size": 1000, "field": "uuid"}
    )
    assert len(big.json()) == 100  # clamped
    past = raw(fake, "GET", "/api/marketplace-provider-resources/", params={"page": 99})
    assert (past.status_code, past.json()) == (404, {"detail": "Invalid page."})


def test_field_selection_and_null_limit_usage(fake: process.FakeWaldur) -> None:
    c = client(fake)
    one = raw(fake, "GET", f"/api/marketplace-provider-resources/{uuid.UUID(r(1)).hex}/",
              params=[("field", "uuid"), ("field", "state")])  # fmt: skip
    assert one.json() == {"uuid": uuid.UUID(r(1)).hex, "state": "OK"}
    assert raw(fake, "GET", f"/api/marketplace-provider-resources/{NOPLAN}/").json()["limit_usage"] is None
    # a resource without a plan breaks the 8.x client's Resource.from_dict for the whole page ...
    with pytest.raises((TypeError, AttributeError)):
        marketplace_provider_resources_list.sync_all(client=c, offering_uuid=[uuid.UUID(O2)])
    # ... unless the caller asks only for the fields it needs
    rows = marketplace_provider_resources_list.sync_all(client=c, offering_uuid=[uuid.UUID(O2)], field=FIELDS)
    assert len(rows) == 4
    offering = marketplace_provider_offerings_retrieve.sync(
        uuid.UUID(O1), client=c, field=[ProviderOfferingDetailsFieldEnum.COMPONENTS]
    )
    assert offering.uuid is UNSET
    assert [(x.type_, str(x.billing_type)) for x in offering.components][-2:] == [
        ("support", "fixed"),
        ("switch", "few"),
    ]
    assert offering.components[3].is_prepaid is True


def test_filters_repeated_comma_and_invalid(fake: process.FakeWaldur) -> None:
    c = client(fake)
    both = marketplace_provider_resources_count.sync(client=c, state=[ResourceState.OK, ResourceState.ERRED])
    assert both == N + 5
    assert marketplace_provider_resources_count.sync(client=c, state=[ResourceState.ERRED]) == 1
    comma = raw(fake, "HEAD", "/api/marketplace-provider-resources/", params={"offering_uuid": f"{O1},{O2}"})
    assert comma.headers["X-Result-Count"] == str(N + 5)
    by_provider = raw(fake, "HEAD", "/api/marketplace-provider-resources/", params={"provider_uuid": C2})
    assert by_provider.headers["X-Result-Count"] == "4"
    listed = raw(fake, "HEAD", "/api/marketplace-provider-offerings/", params={"uuid_list": f"{O1},{O2}"})
    assert listed.headers["X-Result-Count"] == "2"
    bad = raw(fake, "GET", "/api/marketplace-provider-resources/", params={"offering_uuid": "nope"})
    assert (bad.status_code, bad.json()) == (400, {"offering_uuid": ["Enter a valid UUID."]})
    newest = raw(
        fake, "GET", "/api/marketplace-provider-resources/", params={"o": "-created", "field": "uuid"}
    )
    assert newest.json()[0]["uuid"] == uuid.UUID(LIMITED).hex
    providers = marketplace_service_providers_list.sync(client=c)
    assert [p.customer_name for p in providers] == ["Alpha HPC", "Beta Cloud"]
    assert providers[0].uuid == uuid.UUID(SP1) and providers[0].customer_uuid == uuid.UUID(C1)
    assert providers[1].uuid != uuid.UUID(C2)  # a derived service-provider uuid, never the customer's
    assert version_retrieve.sync(client=c).version.startswith("8.")


def test_modified_filter_sees_writes_and_not_unlinks(fake: process.FakeWaldur) -> None:
    c = client(fake)
    mark = dt.datetime.now(dt.UTC)
    fake.merge({"resources": [_resource("e3000000-0000-4000-8000-000000000001", O2)]})
    assert report(client=c, body=usage(OTHER, cpu_hours="1")) is None
    fake.set_resource(ERRED, state="Erred", name="erred again")
    changed = marketplace_provider_resources_list.sync_all(client=c, modified=mark, field=FIELDS)
    assert {str(x.uuid) for x in changed} == {"e3000000-0000-4000-8000-000000000001", OTHER, ERRED}
    before = marketplace_provider_resources_list.sync_all(client=c, modified_before=mark, field=FIELDS)
    assert len(before) == N + 3  # N + 6 rows, 3 of them changed since the mark
    fake.unlink("e3000000-0000-4000-8000-000000000001")
    changed = marketplace_provider_resources_list.sync_all(client=c, modified=mark, field=FIELDS)
    assert {str(x.uuid) for x in changed} == {OTHER, ERRED}
    gone = raw(fake, "GET", "/api/marketplace-provider-resources/e3000000000040008000000000000001/")
    assert (gone.status_code, gone.json()) == (404, {"detail": "Not found."})


# --- auth, roles, secrets ----------------------------------------------------------------------


def test_401_bodies(fake: process.FakeWaldur) -> None:
    missing = httpx.get(fake.base_url + "/api/users/me/")
    assert (missing.status_code, missing.json()) == (
        401,
        {"detail": "Authentication credentials were not provided."},
    )
    for token, detail in (("wrong", "Invalid token."), ("inactive-token", "User inactive or deleted.")):
        with pytest.raises(UnexpectedStatus) as caught:
            users_me_retrieve.sync(client=client(fake, token))
        assert caught.value.status_code == 401 and json.loads(caught.value.content) == {"detail": detail}
    fake.merge(
        {"users": [{"token": "short-lived", "username": "brief", "is_staff": True, "token_lifetime": 1}]}
    )
    me = users_me_retrieve.sync(client=client(fake, "short-lived"))
    assert me.is_staff is True and me.token_lifetime == 1
    time.sleep(1.3)  # idle longer than the lifetime
    with pytest.raises(UnexpectedStatus) as caught:
        users_me_retrieve.sync(client=client(fake, "short-lived"))
    assert json.loads(caught.value.content) == {"detail": "Token has expired."}


def test_visibility_by_role(fake: process.FakeWaldur) -> None:
    assert marketplace_provider_resources_count.sync(client=client(fake, "owner")) == N + 1
    assert marketplace_provider_resources_count.sync(client=client(fake, "manager")) == N + 1
    assert marketplace_provider_resources_count.sync(client=client(fake, "stranger")) == 0
    assert marketplace_service_providers_count.sync(client=client(fake, "stranger")) == 2
    assert [o.name for o in marketplace_provider_offerings_list.sync(client=client(fake, "owner"))] == [
        "Alpha Cluster"
    ]
    hidden = raw(fake, "GET", f"/api/marketplace-provider-resources/{OTHER}/", who="owner")
    assert hidden.status_code == 404


def test_secret_by_service_provider_uuid(fake: process.FakeWaldur) -> None:
    sp = uuid.UUID(SP1)
    assert (
        service_provider_api_secret_code_retrieve.sync(sp, client=client(fake)).api_secret_code
        == "alpha-secret"
    )
    assert service_provider_api_secret_code_retrieve.sync(sp, client=client(fake, "owner")).api_secret_code
    for who in ("manager", "stranger"):
        with pytest.raises(UnexpectedStatus) as caught:
            service_provider_api_secret_code_retrieve.sync(sp, client=client(fake, who))
        assert caught.value.status_code == 403
        assert json.loads(caught.value.content) == {
            "detail": "You do not have permission to perform this action."
        }
    with pytest.raises(UnexpectedStatus) as caught:  # the customer uuid is not the path's key
        service_provider_api_secret_code_retrieve.sync(uuid.UUID(C1), client=client(fake))
    assert caught.value.status_code == 404
    mark = dt.datetime.now(dt.UTC)
    rotated = fake.rotate(C2)
    (moved,) = marketplace_service_providers_list.sync(
        client=client(fake), modified=mark
    )  # the change signal
    assert moved.customer_uuid == uuid.UUID(C2)
    beta = marketplace_service_providers_list.sync(client=client(fake), customer_uuid=uuid.UUID(C2))[0]
    assert (
        service_provider_api_secret_code_retrieve.sync(beta.uuid, client=client(fake)).api_secret_code
        == rotated
    )
    assert fake.stats()["api_secret_code_posts"] == 0
    raw(fake, "POST", f"/api/marketplace-service-providers/{beta.uuid.hex}/api_secret_code/")
    assert fake.stats()["api_secret_code_posts"] == 1  # recorded loudly, for "the bridge never rotates"


# --- plan periods and set_usage ------------------------------------------------------------------


def test_plan_periods_parse_and_drop_closed_ones(fake: process.FakeWaldur) -> None:
    periods = marketplace_provider_resources_plan_periods_list.sync(uuid.UUID(CLOSED), client=client(fake))
    assert [p.uuid for p in periods] == [uuid.UUID("fa000000-0000-4000-8000-000000000004")]
    assert periods[0].plan_uuid == uuid.UUID(PLAN) and periods[0].end is None
    report(client=client(fake), body=usage(r(7), cpu_hours="3.5"))
    (period,) = marketplace_provider_resources_plan_periods_list.sync(uuid.UUID(r(7)), client=client(fake))
    assert [(u.type_, u.usage) for u in period.components] == [("cpu_hours", "3.50")]


def test_set_usage_last_write_wins_and_bumps_modified(fake: process.FakeWaldur) -> None:
    c = client(fake)
    before = marketplace_provider_resources_retrieve.sync(uuid.UUID(r(3)), client=c, field=FIELDS).modified
    assert report(client=c, body=usage(r(3), cpu_hours="12.5", ram_gb="4")) is None
    hex_body = {"resource": uuid.UUID(r(3)).hex, "usages": [{"type": "cpu_hours", "amount": "13.75"}]}
    reply = raw(fake, "POST", "/api/marketplace-component-usages/set_usage/", json=hex_body)
    assert (reply.status_code, reply.content, reply.headers.get("content-type")) == (201, b"", None)
    after = marketplace_provider_resources_retrieve.sync(
        uuid.UUID(r(3)), client=c, field=[*FIELDS, ResourceFieldEnum.CURRENT_USAGES]
    )
    assert after.modified > before
    assert after.current_usages.additional_properties == {"cpu_hours": 13.75}  # replaced, not merged
    rows = marketplace_component_usages_list.sync_all(client=c, resource_uuid=uuid.UUID(r(3)))
    assert sorted((row.type_, row.usage) for row in rows) == [("cpu_hours", "13.75"), ("ram_gb", "4.00")]
    month = dt.date.today().replace(day=1)
    assert {row.billing_period for row in rows} == {month}
    calls = fake.calls()
    assert [c["status"] for c in calls[-2:]] == [201, 201] and calls[-1]["user"] == "staff"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"resource": MISSING, "usages": [{"type": "cpu_hours", "amount": "1"}]},
         {"resource": [f"Object with uuid={MISSING} does not exist."]}),
        ({"resource": ERRED, "usages": [{"type": "cpu_hours", "amount": "1"}]},
         {"resource": ["Resource is not in valid state."]}),
        ({"resource": r(1), "usages": [{"type": "support", "amount": "1"}, {"type": "switch", "amount": "1"},
                                       {"type": "cpu_hours", "amount": "1"}]},
         {"non_field_errors": ["These components are invalid: support, switch."]}),
        ({"plan_period": CLOSED_PP, "usages": [{"type": "cpu_hours", "amount": "1"}]},
         {"plan_period": ["Billing period is closed."]}),
        ({"resource": NOPLAN, "usages": [{"type": "cpu_hours", "amount": "1"}]},
         {"non_field_errors": ["Resource must have a plan to report usage"]}),
        ({"usages": [{"type": "cpu_hours", "amount": "1"}]},
         {"non_field_errors": ["Either plan_period or resource should be provided."]}),
        ({"resource": r(1)}, {"usages": ["This field is required."]}),
        ({"resource": r(1), "usages": [{"type": "cpu_hours", "amount": "1.005"}]},
         {"usages": [{"amount": ["Ensure that there are no more than 2 decimal places."]}]}),
        ({"resource": r(1), "date": "2099-01-01T00:00:00Z", "usages": [{"type": "cpu_hours", "amount": "1"}]},
         {"date": ["Cannot submit usage for future dates"]}),
    ],
)  # fmt: skip
def test_set_usage_400_bodies(fake: process.FakeWaldur, body: dict[str, Any], expected: Any) -> None:
    reply = raw(fake, "POST", "/api/marketplace-component-usages/set_usage/", json=body)
    assert (reply.status_code, reply.json()) == (400, expected)


def test_set_usage_400_through_the_client(fake: process.FakeWaldur) -> None:
    status, content = rejected(fake, usage(ERRED, cpu_hours="1.00"))
    assert (status, json.loads(content)) == (400, {"resource": ["Resource is not in valid state."]})


def test_permission_is_checked_after_validation(fake: process.FakeWaldur) -> None:
    status, content = rejected(fake, usage(r(1), cpu_hours="1"), who="stranger")
    assert (status, json.loads(content)) == (
        403,
        {"detail": "You do not have permission to perform this action."},
    )
    status, content = rejected(fake, usage(r(1), support="1"), who="stranger")  # invalid body: 400 first
    assert status == 400
    status, _ = rejected(fake, usage(OTHER, cpu_hours="1"), who="owner")  # another provider's resource
    assert status == 403
    for who in ("owner", "manager"):
        assert report(client=client(fake, who), body=usage(r(2), cpu_hours="2")) is None


def test_backfill_rules_by_role(fake: process.FakeWaldur) -> None:
    past = last_month()

    def dated(who: str | None, **amounts: str) -> Any:
        body = usage(r(4), **amounts)
        body.date = past
        try:
            return report(client=client(fake, who), body=body)
        except UnexpectedStatus as exc:
            return json.loads(exc.content)

    assert dated("owner", cpu_hours="1") == {
        "date": [
            "Service providers can only specify date for limit-based or prepaid billing components "
            "when backfilling past billing periods."
        ]
    }
    assert dated("stranger", cpu_hours="1") == {
        "date": ["Only staff users and service providers can specify date for backfilling"]
    }
    assert dated("owner", storage_tb="5", prepaid="1") is None
    assert dated(None, cpu_hours="7") is None  # staff may backfill anything
    stored = {(u["type"], u["billing_period"]) for u in fake.usages() if u["resource"] == uuid.UUID(r(4)).hex}
    month = past.date().replace(day=1).isoformat()
    assert stored == {("storage_tb", month), ("prepaid", month), ("cpu_hours", month)}


# --- knobs: rate, latency, faults -----------------------------------------------------------------


def test_rate_cap_queues_calls(fake: process.FakeWaldur) -> None:
    fake.configure(rate=10)
    since = len(fake.calls())
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            bodies = [usage(r(10 + i), cpu_hours=str(i)) for i in range(20)]
            list(pool.map(lambda body: report(client=client(fake), body=body), bodies))
    finally:
        fake.configure(rate=None)
    admitted = sorted(c["admitted"] for c in fake.calls(since))
    assert len(admitted) == 20 and all(c["status"] == 201 for c in fake.calls(since))
    assert admitted[-1] - admitted[0] >= 1.8  # 20 slots 0.1 s apart
    assert all(admitted[i + 10] - admitted[i] >= 0.95 for i in range(10))  # never 11 in a second


def test_rate_cap_429_mode(fake: process.FakeWaldur) -> None:
    fake.configure(rate=2, rate_mode="429")
    try:
        replies = [
            raw(fake, "POST", "/api/marketplace-component-usages/set_usage/",
                json={"resource": r(30), "usages": [{"type": "cpu_hours", "amount": "1"}]})
            for _ in range(4)
        ]  # fmt: skip
    finally:
        fake.configure(rate=None, rate_mode="queue")
    assert replies[0].status_code == 201
    throttled = [x for x in replies if x.status_code == 429]
    assert throttled and all(int(x.headers["Retry-After"]) >= 1 for x in throttled)


def test_latency(fake: process.FakeWaldur) -> None:
    fake.configure(latency_ms=300)
    try:
        started = time.monotonic()
        report(client=client(fake), body=usage(r(31), cpu_hours="1"))
        assert time.monotonic() - started >= 0.3
    finally:
        fake.configure(latency_ms=0)


def test_injected_faults(fake: process.FakeWaldur) -> None:
    fake.fault(status=503, count=2, retry_after=7)
    for _ in range(2):
        reply = raw(fake, "POST", "/api/marketplace-component-usages/set_usage/",
                    json={"resource": r(40), "usages": [{"type": "cpu_hours", "amount": "1"}]})  # fmt: skip
        assert (reply.status_code, reply.headers["Retry-After"]) == (503, "7")
    assert report(client=client(fake), body=usage(r(40), cpu_hours="2")) is None
    fake.fault(reset=True)
    with pytest.raises(httpx.TransportError):
        report(client=client(fake), body=usage(r(40), cpu_hours="3"))
    fake.fault(resource=r(41), status=500)
    for _ in range(2):
        status, content = rejected(fake, usage(r(41), cpu_hours="1"))
        assert status == 500 and b"Server Error (500)" in content
    assert report(client=client(fake), body=usage(r(42), cpu_hours="1")) is None
    fake.clear_faults()
    assert report(client=client(fake), body=usage(r(41), cpu_hours="1")) is None
    kinds = [(c["status"], c["fault"], c["reset"]) for c in fake.calls()[-8:]]
    assert (
        kinds
        == [(503, True, False)] * 2
        + [(201, False, False), (500, True, True)]
        + [(500, True, False)] * 2
        + [(201, False, False)] * 2
    )


def test_plan_switch_opens_a_new_period(fake: process.FakeWaldur) -> None:
    new_plan = "9e100000-0000-4000-8000-000000000002"
    before = marketplace_provider_resources_retrieve.sync(uuid.UUID(r(50)), client=client(fake), field=FIELDS)
    fake.set_resource(r(50), plan=new_plan)
    periods = marketplace_provider_resources_plan_periods_list.sync(uuid.UUID(r(50)), client=client(fake))
    assert [(str(p.plan_uuid), p.end is None) for p in periods] == [(PLAN, False), (new_plan, True)]
    after = marketplace_provider_resources_retrieve.sync(uuid.UUID(r(50)), client=client(fake), field=FIELDS)
    assert after.modified > before.modified


# --- mode 7.0.7 ---------------------------------------------------------------------------------


def test_707_version_and_missing_8x_fields(fake7: process.FakeWaldur) -> None:
    c = client(fake7)
    assert version_retrieve.sync(client=c).version == "7.0.7"
    offering = marketplace_provider_offerings_retrieve.sync(uuid.UUID(O1), client=c)
    assert offering.components[0].is_prepaid is UNSET and offering.components[0].offering_uuid is UNSET
    row = raw(fake7, "GET", f"/api/marketplace-provider-resources/{r(1)}/").json()
    assert "offering_components" not in row


def test_707_modified_filters(fake7: process.FakeWaldur) -> None:
    c = client(fake7)
    with pytest.raises(UnexpectedStatus) as caught:
        marketplace_provider_resources_list.sync(client=c, modified=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert json.loads(caught.value.content) == {"modified": ["Enter a valid date."]}
    plain = raw(fake7, "HEAD", "/api/marketplace-provider-resources/", params={"modified": "2020-01-01"})
    assert plain.headers["X-Result-Count"] == str(N + 5)
    future = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)  # ignored on providers and offerings
    assert len(marketplace_service_providers_list.sync(client=c, modified=future)) == 2
    assert len(marketplace_provider_offerings_list.sync(client=c, modified=future)) == 2
    bad = raw(fake7, "GET", "/api/marketplace-provider-resources/", params={"o": "state"})
    assert (bad.status_code, bad.json()) == (
        400,
        {"o": ["Select a valid choice. state is not one of the available choices."]},
    )


def test_707_set_usage_quirks(fake7: process.FakeWaldur) -> None:
    c = client(fake7)
    body = usage(r(5), cpu_hours="5")
    body.date = last_month()  # ignored: lands in the current month
    assert report(client=c, body=body) is None
    (row,) = [u for u in fake7.usages() if u["resource"] == uuid.UUID(r(5)).hex]
    assert row["billing_period"] == dt.date.today().replace(day=1).isoformat()
    current = raw(
        fake7, "GET", f"/api/marketplace-provider-resources/{r(5)}/", params={"field": "current_usages"}
    )
    assert current.json() == {"current_usages": {"cpu_hours": "5.00"}}
    status, content = rejected(fake7, usage(r(5), prepaid="1"))
    assert json.loads(content) == {"non_field_errors": ["These components are invalid: prepaid."]}
    status, content = rejected(fake7, usage(LIMITED, storage_tb="150"))
    assert (status, json.loads(content)) == (
        400,
        ["Total amount exceeds limit. Total amount: 150.00, limit: 100."],
    )
    assert report(client=c, body=usage(LIMITED, storage_tb="60")) is None  # a monthly limit: this row only
    assert report(client=c, body=usage(LIMITED, storage_tb="60")) is None
    long = usage(r(5), cpu_hours="1")
    long.usages[0].description = "x" * 2001
    for crash in (usage(NOPLAN, cpu_hours="1"), long, usage(r(5), cpu_hours="1000000000000")):
        try:
            report(client=c, body=crash)
        except UnexpectedStatus as exc:
            assert exc.status_code == 500 and exc.content.lstrip().startswith(b"<!doctype html>")
        else:
            raise AssertionError("expected a 500")


@pytest.mark.serial  # times a few seconds: alone, after the parallel part (make test)
def test_707_token_expires_when_idle(fake7: process.FakeWaldur) -> None:
    fake7.merge(
        {"users": [{"token": "idle-token", "username": "idle", "is_staff": True, "token_lifetime": 1}]}
    )
    for _ in range(3):  # every request refreshes a 7.x token
        users_me_retrieve.sync(client=client(fake7, "idle-token"))
        time.sleep(0.6)
    time.sleep(0.6)
    with pytest.raises(UnexpectedStatus) as caught:
        users_me_retrieve.sync(client=client(fake7, "idle-token"))
    assert (caught.value.status_code, json.loads(caught.value.content)) == (
        401,
        {"detail": "Token has expired."},
    )


@pytest.mark.serial  # times a few seconds: alone, after the parallel part (make test)
def test_generated_catalog_starts_fast_and_pages_cheaply() -> None:
    started = time.monotonic()
    with process.start(extra_args=["--generate", "100000"], port=0) as big:
        assert time.monotonic() - started < 15
        c = client(big)
        assert marketplace_provider_resources_count.sync(client=c) == 100_000
        paged = time.monotonic()
        last = raw(
            big, "GET", "/api/marketplace-provider-resources/", params={"page": 1000, "page_size": 100}
        )
        assert len(last.json()) == 100 and time.monotonic() - paged < 2


def test_405_404_and_links_sorted_like_drf(fake: process.FakeWaldur) -> None:
    wrong = raw(fake, "DELETE", "/api/marketplace-component-usages/set_usage/")
    assert (wrong.status_code, wrong.json()) == (405, {"detail": 'Method "DELETE" not allowed.'})
    nowhere = raw(fake, "GET", "/api/no-such-thing/")
    assert (nowhere.status_code, nowhere.json()) == (404, {"detail": "Not found."})
    page = raw(fake, "GET", "/api/marketplace-provider-resources/",
               params=[("state", "OK"), ("field", "uuid"), ("state", "Erred"), ("page", "2")])  # fmt: skip
    first = page.headers["Link"].split(", ")[0]
    query = "field=uuid&state=OK&state=Erred"
    assert first == f'<{fake.base_url}/api/marketplace-provider-resources/?{query}>; rel="first"'


def test_owner_permissions_parse(fake: process.FakeWaldur) -> None:
    me = users_me_retrieve.sync(client=client(fake, "owner"))
    assert me.is_staff is False and me.username == "owner"
    assert [(p.role_name, p.scope_uuid) for p in me.permissions] == [("CUSTOMER.OWNER", uuid.UUID(C1))]


def test_billing_period_in_the_server_time_zone(fake: process.FakeWaldur) -> None:
    """23:30 UTC on 30 November is already December in Tallinn (UTC+2)."""
    fake.configure(now="2026-11-30T23:30:00Z", time_zone="Europe/Tallinn")
    try:
        report(client=client(fake), body=usage(r(60), cpu_hours="1"))
        dated = usage(r(61), cpu_hours="1")
        dated.date = dt.datetime(2026, 11, 30, 21, 0, tzinfo=dt.UTC)  # 23:00 in Tallinn: November
        report(client=client(fake), body=dated)
    finally:
        fake.configure(now=None, time_zone="UTC")
    periods = {u["resource"]: u["billing_period"] for u in fake.usages()}
    assert periods[uuid.UUID(r(60)).hex] == "2026-12-01"
    assert periods[uuid.UUID(r(61)).hex] == "2026-11-01"


def test_707_token_in_the_query_string(fake7: process.FakeWaldur) -> None:
    reply = httpx.get(fake7.base_url + "/api/users/me/", params={"x-auth-token": fake7.token})
    assert reply.status_code == 200 and reply.json()["is_staff"] is True


@pytest.mark.serial  # times a few seconds: alone, after the parallel part (make test)
def test_cli_line_demo_token_lifetime_and_sigint(tmp_path: Any) -> None:
    args = [sys.executable, "-m", "ingest.dev.fake_waldur", "--port", "0", "--token", "T", "--demo"]
    proc = subprocess.Popen(
        [*args, "--mode", "7.0.7", "--token-lifetime", "1"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.fullmatch(r"fake Waldur \(mode 7\.0\.7\) listening on (http://127\.0\.0\.1:\d+/)\n", line)
        assert found, line
        me = httpx.get(found.group(1) + "api/users/me/", headers={"Authorization": "Token T"})
        assert me.json()["token_lifetime"] == 1
        resources = httpx.get(
            found.group(1) + "api/marketplace-provider-resources/", headers={"Authorization": "Token T"}
        )
        assert resources.headers["X-Result-Count"] == "2"  # ingest/dev/demo/catalog.json
        time.sleep(1.3)
        expired = httpx.get(found.group(1) + "api/users/me/", headers={"Authorization": "Token T"})
        assert (expired.status_code, expired.json()) == (401, {"detail": "Token has expired."})
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    bad = tmp_path / "bad.json"
    bad.write_text('{"resources": [{"uuid": "nope"}]}')
    failed = subprocess.run([*args[:-1], "--seed", str(bad)], capture_output=True, text=True, timeout=30)
    assert failed.returncode == 2 and "is not a UUID" in failed.stderr


def test_set_user_usages_under_a_component_usage(fake: process.FakeWaldur) -> None:
    report(client=client(fake), body=usage(r(70), cpu_hours="10"))
    (row,) = marketplace_component_usages_list.sync_all(client=client(fake), resource_uuid=uuid.UUID(r(70)))
    body = ComponentUserUsageBulkCreateRequest(
        usages=[ComponentUserUsageCreateRequest(username="alice", usage="6"),
                ComponentUserUsageCreateRequest(username="bob", usage="4.5")]
    )  # fmt: skip
    reply = marketplace_component_usages_set_user_usages.sync_detailed(
        row.uuid, client=client(fake, "manager"), body=body
    )
    assert (reply.status_code, reply.parsed) == (201, None)
    (stored,) = [u for u in fake.usages() if u["uuid"] == row.uuid.hex]
    assert stored["user_usages"] == {"alice": "6.00", "bob": "4.50"}
    with pytest.raises(UnexpectedStatus) as caught:
        marketplace_component_usages_set_user_usages.sync_detailed(
            row.uuid, client=client(fake, "stranger"), body=body
        )
    assert caught.value.status_code == 404  # a row the caller cannot see


def test_merge_changes_an_offering_in_place(fake: process.FakeWaldur) -> None:
    mark = dt.datetime.now(dt.UTC)
    beta = dict(SEED["offerings"][1])
    beta["components"] = [
        *beta["components"],
        {"type": "gpu_hours", "billing_type": "usage", "measured_unit": "h"},
    ]
    assert fake.merge({"offerings": [beta]})["offerings"] == 1
    (changed,) = marketplace_provider_offerings_list.sync(client=client(fake), modified=mark)
    assert changed.uuid == uuid.UUID(O2) and [c.type_ for c in changed.components] == [
        "cpu_hours",
        "gpu_hours",
    ]
    assert report(client=client(fake), body=usage(OTHER, cpu_hours="2", gpu_hours="1")) is None
