"""The OpenAPI document (schemas/openapi.yaml, served at /api/schema/) against the real app.

It is valid OpenAPI 3.1, every route the app serves is in it and nothing else is, its examples
validate against their schemas (and the request examples, signed for the demo catalog, are
accepted), and what the app really answers -- status, media type, body and headers -- is what
it documents, for every documented status we can provoke in-process.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import falcon
import falcon.testing
import jsonschema_rs
import pytest
import schemathesis
import yaml

from api.app import create_app
from ingest import bootstrap
from ingest.adapters import prometheus
from ingest.domain import signing
from ingest.services import access, catalog_file, operations
from ingest.services.drain import drain

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILE = ROOT / "schemas" / "openapi.yaml"
DEMO_CATALOG = ROOT / "ingest" / "dev" / "demo" / "catalog.json"
PREFIX = "/api/marketplace-public-api"
CHECK, SET_USAGE, SET_USAGES = (f"{PREFIX}/check_signature/", f"{PREFIX}/set_usage/", f"{PREFIX}/set_usages/")
REPORT = "/api/usage-reports/{report_id}/"
OPERATOR = "operator-token-0123456789"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

SPEC: dict[str, Any] = yaml.safe_load(SPEC_FILE.read_bytes())


# -- helpers -------------------------------------------------------------------------------


def resolve(node: Any) -> Any:
    """Follow local $refs (components), as often as they chain."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A 2020-12 validator of ``schema`` whose '#/components/...' refs resolve in SPEC."""
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "components": SPEC["components"],
    }
    return jsonschema_rs.validator_for(root, validate_formats=True)


def errors(schema: dict[str, Any], value: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator(schema).iter_errors(value)
    ]


def operations_of(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def check_answer(path: str, method: str, result: falcon.testing.Result) -> None:
    """The answer is documented: its status, media type, body schema and required headers."""
    operation = SPEC["paths"][path][method]
    status = str(result.status_code)
    assert status in operation["responses"], (
        f"{method.upper()} {path} answered {status}, not documented: {result.text[:300]}"
    )
    response = resolve(operation["responses"][status])
    for name, header in response.get("headers", {}).items():
        header = resolve(header)
        value = result.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{status}: header {name} missing"
            continue
        schema = header["schema"]
        parsed = json.loads(value) if schema.get("type") in ("integer", "number") else value
        assert not errors(schema, parsed), f"{status}: header {name}={value!r}"
    content = response.get("content")
    if not content:
        assert result.content == b"", f"{status}: undocumented body {result.text[:200]}"
        return
    media = (result.headers.get("content-type") or "").split(";")[0].strip()
    assert media in content, f"{status}: media type {media!r} not in {sorted(content)}"
    if media == "application/json":
        problems = errors(content[media]["schema"], result.json)
        assert not problems, f"{method.upper()} {path} {status} {result.json}: {problems}"


@dataclasses.dataclass
class Api:
    """The app over a Runtime, wired like api/asgi.py, with the demo catalog loaded too."""

    rt: bootstrap.Runtime
    client: falcon.testing.TestClient

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        **headers: str,
    ) -> falcon.testing.Result:
        data = raw if raw is not None else json.dumps(body).encode()
        result = self.client.simulate_post(path, body=data, headers={"Content-Type": content_type, **headers})
        check_answer(path, "post", result)
        return result

    def get(self, template: str, path: str | None = None, **headers: str) -> falcon.testing.Result:
        result = self.client.simulate_get(path or template, headers=headers)
        check_answer(template, "get", result)
        return result

    def journal(self) -> int:
        return int(self.rt.queue.client.xlen(self.rt.queue.stream))


def wire(rt: bootstrap.Runtime, ready: dict[str, Callable[[], object]] | None = None) -> falcon.App:
    def report_status(
        report_id: str, authorization: str | None, customer: str | None
    ) -> dict[str, Any] | None:  # as api/asgi.py's _report_status
        who = access.authorize(rt.catalog, rt.settings.operator_token, authorization, customer)
        if len(report_id) > 64 or not report_id.isalnum():
            return None
        found = operations.report_status(rt, report_id)
        if found is None or (not isinstance(who, access.Operator) and found["customer"] != str(who)):
            return None
        return found

    return create_app(
        lambda: rt.intake,
        ready if ready is not None else {"redis": rt.queue.ping},
        rt.settings.max_body_bytes,
        report_status,
        batch_max_body=rt.settings.batch_max_bytes,
        metrics=prometheus,  # what bootstrap.metrics() is
        exposition=lambda: prometheus.render(bootstrap.journal_gauges(rt.queue), False),
    )


@pytest.fixture
def make_api(settings, demo) -> Iterator[Callable[..., Api]]:
    made: list[bootstrap.Runtime] = []

    def make(ready: dict[str, Callable[[], object]] | None = None, **changes: Any) -> Api:
        rt = bootstrap.Runtime(dataclasses.replace(settings, operator_token=OPERATOR, **changes))
        rt.catalog_source.load(catalog_file.parse(demo.doc()))
        rt.catalog_source.load(catalog_file.read(DEMO_CATALOG))
        rt.catalog.invalidate()
        rt.kick = lambda: None  # type: ignore[method-assign]
        made.append(rt)
        return Api(rt, falcon.testing.TestClient(wire(rt, ready)))

    yield make
    for rt in made:
        rt.engine.dispose()


def claims(resource: str, **extra: Any) -> dict[str, Any]:
    return {"resource": resource, "usages": [{"type": "cpu_hours", "amount": "1.25"}], **extra}


# -- the document --------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1_and_every_ref_resolves():
    assert SPEC["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(SPEC).validate()  # the OpenAPI 3.1 meta-schema

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    refs = set(walk(SPEC))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        assert resolve({"$ref": ref}) is not None
    ids = [op["operationId"] for _p, _m, op in operations_of(SPEC)]
    assert len(ids) == len(set(ids))
    for path, method, op in operations_of(SPEC):
        assert all(code.isdigit() for code in op["responses"]), (path, method)


def test_served_document_is_the_file_as_yaml_and_as_json():
    client = falcon.testing.TestClient(create_app(lambda: None, {}, 1024))  # type: ignore[arg-type,return-value]
    as_yaml = client.simulate_get("/api/schema/")
    assert as_yaml.status_code == 200
    assert as_yaml.headers["content-type"] == "application/vnd.oai.openapi"
    assert as_yaml.content == SPEC_FILE.read_bytes()
    as_json = client.simulate_get("/api/schema/", params={"format": "json"})
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json == SPEC
    check_answer("/api/schema/", "get", as_yaml)
    check_answer("/api/schema/", "get", as_json)


def _served_routes(app: falcon.App) -> set[tuple[str, str]]:
    """(uri template, method) for every route of the app, from Falcon's router tree."""
    routes: set[tuple[str, str]] = set()
    pending = list(app._router._roots)  # no public listing of routes in Falcon 4
    while pending:
        node = pending.pop()
        pending.extend(node.children)
        if node.resource is not None:
            for method in falcon.routing.map_http_methods(node.resource):
                routes.add((node.uri_template, method.lower()))
    return routes


def test_every_served_route_is_documented_and_every_documented_route_is_served():
    app = create_app(lambda: None, {}, 1024, lambda *a: None, exposition=lambda: (b"", "text/plain"))  # type: ignore[arg-type,return-value]
    served = _served_routes(app)
    documented = {(path, method) for path, method, _op in operations_of(SPEC)}
    assert served == documented, (
        f"served, not documented: {sorted(served - documented)}; "
        f"documented, not served: {sorted(documented - served)}"
    )
    assert "report_status" in (ROOT / "api" / "asgi.py").read_text()  # the app serves the report route


# -- examples ------------------------------------------------------------------------------


def _examples() -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example value) for every example in the document."""

    def media_examples(where: str, media: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
        for kind, m in media.items():
            schema = m.get("schema")
            if schema is None:
                continue
            if "example" in m:
                yield f"{where} {kind}", schema, m["example"]
            for name, ex in m.get("examples", {}).items():
                yield f"{where} {kind} {name}", schema, resolve(ex)["value"]

    for path, method, op in operations_of(SPEC):
        where = f"{method.upper()} {path}"
        for p in op.get("parameters", []):
            p = resolve(p)
            if "example" in p:
                yield f"{where} parameter {p['name']}", p["schema"], p["example"]
        if "requestBody" in op:
            yield from media_examples(f"{where} request", resolve(op["requestBody"])["content"])
        for status, response in op["responses"].items():
            yield from media_examples(f"{where} {status}", resolve(response).get("content", {}))
    for name, schema in SPEC["components"]["schemas"].items():
        for i, ex in enumerate(schema.get("examples", [])):
            yield f"schema {name} example {i}", {"$ref": f"#/components/schemas/{name}"}, ex


EXAMPLES = list(_examples())


def test_the_document_has_examples_for_requests_and_answers():
    wheres = " | ".join(w for w, _s, _v in EXAMPLES)
    for needle in (
        "set_usage/ request application/json",
        "application/x-www-form-urlencoded",
        "set_usages/ request",
        "set_usage/ 201",
        "set_usages/ 207",
        " 400 ",
        "usage-reports/{report_id}/ 200",
    ):
        assert needle in wheres, needle


@pytest.mark.parametrize("where,schema,value", EXAMPLES, ids=[w for w, _s, _v in EXAMPLES])
def test_example_validates_against_its_schema(where, schema, value):
    assert not errors(schema, value), f"{where}: {errors(schema, value)}"


def test_request_examples_are_accepted_by_the_app(make_api):
    """The example tokens are real (demo catalog, secret demo-secret-0001): every request
    example gets the operation's success answer; they are dry runs, so nothing is queued."""
    api = make_api()
    tried = 0
    for path, _method, op in operations_of(SPEC):
        if "requestBody" not in op:
            continue
        success = next(code for code in op["responses"] if code.startswith("2"))
        for media, m in resolve(op["requestBody"])["content"].items():
            for name, ex in m.get("examples", {}).items():
                value = resolve(ex)["value"]
                raw = (
                    urlencode(value).encode() if media.endswith("urlencoded") else json.dumps(value).encode()
                )
                result = api.post(path, raw=raw, content_type=media)
                assert str(result.status_code) == success, (path, media, name, result.text)
                if result.status_code == 207:
                    assert {r["status"] for r in result.json["results"]} == {201}, result.json
                tried += 1
    assert tried >= 5
    assert api.journal() == 0


# -- what the app answers is what the document says ----------------------------------------


def test_public_endpoints_answer_as_documented(make_api, demo):
    api = make_api()
    good = demo.body(claims(demo.resource))
    assert api.post(CHECK, good).status_code == 200
    form = urlencode(good).encode()
    assert api.post(CHECK, raw=form, content_type="application/x-www-form-urlencoded").status_code == 200
    assert (
        api.post(
            CHECK, raw=gzip.compress(json.dumps(good).encode()), **{"Content-Encoding": "gzip"}
        ).status_code
        == 200
    )
    for path in (CHECK, SET_USAGE):
        assert api.post(path, {}).status_code == 400
        assert api.post(path, raw=b"{nope").status_code == 400
        assert api.post(path, {**good, "data": "a.b.c"}).status_code == 400
        assert api.post(path, raw=b"\x1f\x8b garbage", **{"Content-Encoding": "gzip"}).status_code == 400
        assert api.post(path, raw=b"x" * (api.rt.settings.max_body_bytes + 1)).status_code == 413
        assert api.post(path, raw=b"x", content_type="text/plain").status_code == 415
        assert api.post(path, good, **{"Content-Encoding": "br"}).status_code == 415
    assert api.post(SET_USAGE, good).status_code == 201
    assert api.post(SET_USAGE, {**good, "dry_run": True}).json["dry_run"] is True
    assert api.post(SET_USAGE, raw=form, content_type="application/x-www-form-urlencoded").status_code == 201
    bad_line = demo.body(
        {
            "resource": demo.resource,
            "usages": [{"type": "cpu_hours", "amount": "1"}, {"type": "cpu_hours", "amount": "0.001"}],
        }
    )
    assert api.post(SET_USAGE, bad_line).json == {
        "usages": [{}, {"amount": ["Ensure that there are no more than 2 decimal places."]}]
    }
    too_many = demo.body({"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": "1"}] * 101})
    assert api.post(SET_USAGE, too_many).json == {
        "usages": {"non_field_errors": ["Ensure this field has no more than 100 elements."]}
    }
    assert api.post(SET_USAGE, demo.body(claims(demo.other_resource))).status_code == 403
    no_secret = {"customer": demo.no_secret_provider, "data": good["data"]}
    assert api.post(SET_USAGE, no_secret).status_code == 400
    assert api.journal() == 2


def test_batch_answers_as_documented(make_api, demo):
    api = make_api(batch_max_reports=3)
    token = demo.sign(claims(demo.resource))
    mixed = api.post(
        SET_USAGES,
        {
            "customer": demo.provider,
            "reports": [token, "a.b.c", 7, "", demo.sign(claims(demo.other_resource))],
        },
    )
    # 5 reports > BATCH_MAX_REPORTS=3: a 413 before anything else
    assert mixed.status_code == 413
    mixed = api.post(
        SET_USAGES,
        {"customer": demo.provider, "reports": [token, "a.b.c", demo.sign(claims(demo.other_resource))]},
    )
    assert mixed.status_code == 207
    assert [r["status"] for r in mixed.json["results"]] == [201, 400, 403]
    dry = api.post(SET_USAGES, {"customer": demo.provider, "reports": [token, 7, ""], "dry_run": "yes"})
    assert [r["status"] for r in dry.json["results"]] == [201, 400, 400]
    assert "id" not in dry.json["results"][0]
    assert api.post(SET_USAGES, {"customer": demo.provider, "reports": "x"}).status_code == 400
    assert api.post(SET_USAGES, {"reports": []}).status_code == 400
    assert api.post(SET_USAGES, raw=b"x", content_type="text/plain").status_code == 415
    assert (
        api.post(
            SET_USAGES,
            raw=urlencode({"customer": demo.provider, "reports": token}).encode(),
            content_type="application/x-www-form-urlencoded",
        ).status_code
        == 400
    )
    assert api.journal() == 1


def test_rate_limit_and_back_pressure_answer_as_documented(make_api, demo):
    limited = make_api(rate_limit=1.0, rate_burst=1.0)
    first = limited.post(SET_USAGE, demo.body(claims(demo.resource)))
    assert first.status_code == 201 and first.headers["X-RateLimit-Limit"] == "1"
    assert limited.post(SET_USAGE, demo.body(claims(demo.resource))).status_code == 429
    batch = {"customer": demo.provider, "reports": [demo.sign(claims(demo.resource))]}
    assert limited.post(SET_USAGES, batch).status_code == 429

    down = make_api(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    for path, body in ((SET_USAGE, demo.body(claims(demo.resource))), (SET_USAGES, batch)):
        refused = down.post(path, body)
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1


def test_operations_endpoints_answer_as_documented(make_api, demo):
    api = make_api()
    assert api.get("/healthz").json == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and b"ingest_reports_accepted_total" in metrics.content

    def broken() -> None:
        raise ConnectionError("down")

    assert make_api(ready={"redis": broken}).get("/readyz").status_code == 503


def test_report_status_answers_as_documented(make_api, demo):
    api = make_api()
    receipt = api.post(SET_USAGE, demo.body(claims(demo.resource))).json
    path = receipt["status_url"]
    bearer = f"Bearer {signing.sign_status_token(demo.provider, demo.secret)}"
    assert api.get(REPORT, path).status_code == 401
    assert api.get(REPORT, path, Authorization="Token wrong").status_code == 401
    assert api.get(REPORT, path, Authorization=bearer).status_code == 401  # no X-Customer
    queued = api.get(REPORT, path, Authorization=f"Token {OPERATOR}")
    assert queued.json["state"] == "queued"
    assert (
        api.get(REPORT, path, Authorization=bearer, **{"X-Customer": demo.provider}).json["id"]
        == receipt["id"]
    )
    other = f"Bearer {signing.sign_status_token(demo.other_provider, demo.other_secret)}"
    assert (
        api.get(REPORT, path, Authorization=other, **{"X-Customer": demo.other_provider}).status_code == 404
    )
    for missing in ("0" * 32, "not-hex!", "x" * 65):
        assert (
            api.get(REPORT, f"/api/usage-reports/{missing}/", Authorization=f"Token {OPERATOR}").status_code
            == 404
        )
    drain(api.rt.queue, api.rt.committer, "t", 100, 0.01, 5)
    committed = api.get(REPORT, path, Authorization=f"Token {OPERATOR}").json
    assert committed["state"] == "committed" and committed["values"]


def test_unknown_paths_and_methods_answer_json_details(make_api):
    client = make_api().client
    missing = client.simulate_get("/nope")
    assert missing.status_code == 404 and missing.json == {"detail": "404 Not Found"}
    wrong = client.simulate_get(SET_USAGE)
    assert wrong.status_code == 405 and wrong.json == {"detail": "405 Method Not Allowed"}
    assert "POST" in wrong.headers["Allow"]


# -- batch answers under the rate limit and the replay guard (two defects these found) ----


def test_a_batch_larger_than_the_bucket_succeeds_after_retry_after(make_api, demo):
    api = make_api(rate_limit=10.0, rate_burst=2.0)
    batch = {
        "customer": demo.provider,
        "reports": [demo.sign(claims(demo.resource, jti=str(i))) for i in range(3)],
    }
    assert api.post(SET_USAGES, batch).status_code == 207  # a full bucket admits it, in debt
    batch["reports"] = [demo.sign(claims(demo.resource, jti=f"b{i}")) for i in range(3)]
    limited = api.post(SET_USAGES, batch)
    assert limited.status_code == 429
    time.sleep(int(limited.headers["Retry-After"]) + 0.2)
    assert api.post(SET_USAGES, batch).status_code == 207  # Retry-After told the truth


def test_a_replayed_token_in_a_batch_fails_only_its_own_item(make_api, demo):
    api = make_api(token_replay_window=60.0)
    token = demo.sign(claims(demo.resource))
    fresh = demo.sign(claims(demo.resource, jti=uuid.uuid4().hex))
    answer = api.post(SET_USAGES, {"customer": demo.provider, "reports": [token, fresh, token]})
    assert answer.status_code == 207
    assert [r["status"] for r in answer.json["results"]] == [201, 201, 400]
