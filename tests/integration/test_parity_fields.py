"""Byte-level field parity with DRF 3.15 as Waldur uses it (measured against a running Waldur;
see shared/docs/waldur-contract.md, "Facts from a running Waldur 7.0.7 server"), through the
real Falcon app, Redis journal and SQL catalog:

- CharField turns JSON numbers (not booleans) into ``str(value)``: ``data``, ``type``,
  ``description``; NUL and lone surrogates in ``data`` are field errors;
- related-object fields (``customer``, ``resource``, ``plan_period``) treat "" as null;
- BooleanField accepts its words in any casing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import falcon.testing
import pytest

from api.app import create_app
from ingest import bootstrap
from ingest.adapters.sql.read_model import usage_rows
from ingest.config import Settings
from ingest.services import catalog_file
from ingest.services.drain import drain
from tests.conftest import migrated_database
from tests.helpers import Demo, make_demo

CHECK = "/api/marketplace-public-api/check_signature/"
SET = "/api/marketplace-public-api/set_usage/"
NULL = "This field may not be null."
NOT_STRING = "Not a valid string."
SIGNATURE_FAILED = {"non_field_errors": ["Signature verification failed."]}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database per backend for this module, as test_contract.py does: no test
    here changes the catalog, and every journal/SQL assertion is relative."""
    yield from migrated_database(request.param, tmp_path_factory.mktemp("parity"))


@pytest.fixture(scope="module")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, redis_prefix=f"parity-{uuid.uuid4().hex[:10]}"
    )


@pytest.fixture(scope="module")
def demo() -> Demo:
    return make_demo()


@pytest.fixture(scope="module")
def runtime(settings: Settings, demo: Demo) -> Iterator[bootstrap.Runtime]:
    rt = bootstrap.Runtime(settings)
    rt.catalog_source.load(catalog_file.parse(demo.doc()))
    rt.kick = lambda: None  # type: ignore[method-assign]  # no worker: tests drain directly
    yield rt
    keys = list(rt.queue.client.scan_iter(f"{settings.redis_prefix}:*"))
    if keys:
        rt.queue.client.delete(*keys)
    rt.engine.dispose()


@pytest.fixture(scope="module")
def client(runtime: bootstrap.Runtime) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(
        create_app(lambda: runtime.intake, {"redis": runtime.queue.ping}, runtime.settings.max_body_bytes)
    )


def post(client: falcon.testing.TestClient, path: str, body: Any) -> falcon.testing.Result:
    # json.dumps escapes a lone surrogate as \ud800, as a client's JSON encoder would
    return client.simulate_post(path, body=json.dumps(body), headers={"Content-Type": "application/json"})


def journal_length(runtime: bootstrap.Runtime) -> int:
    return int(runtime.queue.client.xlen(runtime.queue.stream))


def report(d: Demo, *usages: dict[str, Any], **claims: Any) -> dict[str, Any]:
    return {
        "resource": d.resource,
        "usages": list(usages) or [{"type": "cpu_hours", "amount": "1"}],
        **claims,
    }


@pytest.mark.parametrize("path", [CHECK, SET])
@pytest.mark.parametrize("data", [123, 1.5, 10**30, 1e20])
def test_a_number_as_data_is_verified_as_its_string(client, runtime, demo, path, data):
    before = journal_length(runtime)
    resp = post(client, path, {"customer": demo.provider, "data": data})
    assert (resp.status_code, resp.json) == (400, SIGNATURE_FAILED)
    assert journal_length(runtime) == before


@pytest.mark.parametrize("path", [CHECK, SET])
@pytest.mark.parametrize(
    ("data", "messages"),
    [
        ("ab\x00c", ["Null characters are not allowed."]),
        ("ab\ud800", ["Surrogate characters are not allowed: U+D800."]),
        (
            "a\x00b\udfff",
            ["Null characters are not allowed.", "Surrogate characters are not allowed: U+DFFF."],
        ),
    ],
)
def test_nul_and_surrogates_in_data_are_field_errors(client, demo, path, data, messages):
    resp = post(client, path, {"customer": demo.provider, "data": data})
    assert (resp.status_code, resp.json) == (400, {"data": messages})
    # reported together with the other field errors, before the signature step
    resp = post(client, path, {"customer": "nope", "data": data, "dry_run": "maybe"})
    assert resp.json == {
        "customer": ["Object with uuid=nope does not exist."],
        "data": messages,
        "dry_run": ["Must be a valid boolean."],
    }


@pytest.mark.parametrize(
    ("type_", "shown"), [(5, "5"), (1.5, "1.5"), (1e20, "1e+20"), (1e16, "1e+16"), (1e-05, "1e-05")]
)
def test_a_number_as_type_is_its_string(client, demo, type_, shown):
    resp = post(client, SET, demo.body(report(demo, {"type": type_, "amount": "1"})))
    assert (resp.status_code, resp.json) == (
        400,
        {"non_field_errors": [f"These components are invalid: {shown}."]},
    )


@pytest.mark.parametrize("value", [True, False, [], {}, ["cpu_hours"]])
def test_type_that_is_no_string_or_number_is_refused(client, demo, value):
    resp = post(client, SET, demo.body(report(demo, {"type": value, "amount": "1"})))
    assert (resp.status_code, resp.json) == (400, {"usages": [{"type": [NOT_STRING]}]})


@pytest.mark.parametrize("value", [True, [], {"a": 1}])
def test_description_that_is_no_string_or_number_is_refused(client, demo, value):
    resp = post(
        client, SET, demo.body(report(demo, {"type": "cpu_hours", "amount": "1", "description": value}))
    )
    assert (resp.status_code, resp.json) == (400, {"usages": [{"description": [NOT_STRING]}]})


def test_a_number_as_description_is_stored_as_its_string(client, runtime, demo):
    lines = [
        {"type": "cpu_hours", "amount": "1", "description": 123},
        {"type": "ram_gb", "amount": "2", "description": 2.5},
    ]
    resp = post(client, SET, demo.body(report(demo, *lines, resource=demo.resource2)))
    assert resp.status_code == 201, resp.text
    assert drain(runtime.queue, runtime.committer, "parity", 100, 0.01, 5).committed >= 1
    rows = usage_rows(runtime.engine, uuid.UUID(demo.resource2))
    assert {r["component"]: r["description"] for r in rows} == {"cpu_hours": "123", "ram_gb": "2.5"}


@pytest.mark.parametrize("path", [CHECK, SET])
def test_empty_customer_is_null(client, demo, path):
    resp = post(client, path, {"customer": "", "data": demo.sign(report(demo))})
    assert (resp.status_code, resp.json) == (400, {"customer": [NULL]})


@pytest.mark.parametrize("path", [CHECK, SET])
def test_blank_customer_is_not_found_with_its_space_kept(client, demo, path):
    resp = post(client, path, {"customer": " ", "data": demo.sign(report(demo))})
    assert (resp.status_code, resp.json) == (400, {"customer": ["Object with uuid=  does not exist."]})


@pytest.mark.parametrize("name", ["resource", "plan_period"])
def test_empty_resource_or_plan_period_is_null(client, demo, name):
    claims = {name: "", "usages": [{"type": "cpu_hours", "amount": "1"}]}
    resp = post(client, SET, demo.body(claims))
    assert (resp.status_code, resp.json) == (400, {name: [NULL]})


CASINGS = [("TrUe", True), ("yEs", True), ("oN", True), ("T", True)] + [
    ("fAlSe", False),
    ("nO", False),
    ("oFf", False),
    ("F", False),
]


@pytest.mark.parametrize(("value", "dry_run"), CASINGS)
def test_dry_run_words_in_any_casing(client, runtime, demo, value, dry_run):
    before = journal_length(runtime)
    resp = post(client, SET, demo.body(report(demo), dry_run=value))
    assert resp.status_code == 201, resp.text
    assert resp.json.get("dry_run", False) is dry_run
    assert journal_length(runtime) == before + (not dry_run)
    assert post(client, CHECK, demo.body(report(demo), dry_run=value)).status_code == 200


@pytest.mark.parametrize("value", [" true", "true ", "truee", "", "01"])
def test_dry_run_words_are_not_trimmed(client, demo, value):
    resp = post(client, SET, demo.body(report(demo), dry_run=value))
    assert (resp.status_code, resp.json) == (400, {"dry_run": ["Must be a valid boolean."]})


def test_recurring_in_any_casing(client, runtime, demo):
    lines = [{"type": "cpu_hours", "amount": "1", "recurring": "TRuE"}]
    resp = post(client, SET, demo.body(report(demo, *lines, resource=demo.closed_resource)))
    assert resp.status_code == 201, resp.text
    assert drain(runtime.queue, runtime.committer, "parity", 100, 0.01, 5).committed >= 1
    [row] = usage_rows(runtime.engine, uuid.UUID(demo.closed_resource))
    assert (row["recurring"], row["missing_usage_policy"]) == (True, "reuse")
