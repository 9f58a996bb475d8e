"""schemathesis against the live stack (gunicorn + Celery worker + beat): the OpenAPI document
is loaded from the running app's /api/schema/, every operation gets a bounded number of
generated requests (schema-valid and schema-violating), and every answer must be no server
error, a documented status and a body that conforms to the documented schema. Explicit cases
then walk the success paths (201, 207, 200, 403, report status queued and committed) that random
data cannot reach, since it cannot sign a token. Zero server errors, zero schema violations,
and no traceback or ERROR line in any process log.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from ingest.domain import signing
from tests.e2e.conftest import CHECK_SIGNATURE, SET_USAGE, SET_USAGES, Stack

pytestmark = pytest.mark.e2e

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
MAX_EXAMPLES = 50  # per operation and generation mode
REPORT = "/api/usage-reports/{report_id}/"


def _claims(resource: str, **extra: Any) -> dict[str, Any]:
    return {"resource": resource, "usages": [{"type": "cpu_hours", "amount": "2.50"}], **extra}


def _fuzz(
    operation: Any,
    stack: Stack,
    session: requests.Session,
    mode: GenerationMode,
    headers: dict[str, str] | None,
    counts: dict[str, int],
) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        case.call_and_validate(
            base_url=stack.url, session=session, headers=headers, checks=CHECKS, timeout=30
        )
        counts[operation.label] = counts.get(operation.label, 0) + 1

    run()


def test_every_operation_conforms_to_the_served_document(stack: Stack) -> None:
    demo = stack.demo
    served = stack.http.get("/api/schema/")
    assert served.status_code == 200
    assert stack.http.get("/api/schema/", params={"format": "json"}).json() == yaml.safe_load(served.content)
    # from_dict, not from_url: from_url leaves out the operation that served the document,
    # and GET /api/schema/ is one of ours to test
    schema = schemathesis.openapi.from_dict(yaml.safe_load(served.content))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        f"POST {CHECK_SIGNATURE}",
        f"POST {SET_USAGE}",
        f"POST {SET_USAGES}",
        f"GET {REPORT}",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /api/schema/",
    }

    provider = {
        "Authorization": f"Bearer {signing.sign_status_token(demo.provider, demo.secret)}",
        "X-Customer": demo.provider,
    }
    counts: dict[str, int] = {}
    failures: dict[str, BaseException] = {}
    with requests.Session() as session:
        for op in operations:
            # the report status also with a provider's credentials, so ids are looked up
            for headers in [None, provider] if op.path == REPORT else [None]:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    try:
                        _fuzz(op, stack, session, mode, headers, counts)
                    except Unsatisfiable:
                        # nothing of this operation can violate the document (no body, no
                        # constrained parameter): there is no negative data to send
                        assert mode is GenerationMode.NEGATIVE, op.label
                    except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a
                        # FailureGroup (a BaseExceptionGroup): collect all, fail with every one
                        failures[f"{op.label} {mode.value} auth={headers is not None}"] = exc
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    # an operation without parameters or body has one possible request; the others get them all
    assert all(
        counts.get(op.label, 0) >= (MAX_EXAMPLES if op.path.startswith("/api/") else 1) for op in operations
    ), counts
    print(f"\nschemathesis requests per operation: {counts}")

    # the success paths, which generated data cannot reach without the provider's secret
    by_label = {op.label: op for op in operations}

    def call(label: str, status: int, **kwargs: Any) -> requests.Response:
        case = by_label[label].Case(**kwargs)
        response = case.call_and_validate(base_url=stack.url, checks=CHECKS, timeout=30)
        assert response.status_code == status, response.text
        return response

    good = demo.body(_claims(demo.resource))
    call(f"POST {CHECK_SIGNATURE}", 200, body=good, media_type="application/json")
    call(f"POST {CHECK_SIGNATURE}", 200, body=good, media_type="application/x-www-form-urlencoded")
    call(f"POST {SET_USAGE}", 201, body={**good, "dry_run": True}, media_type="application/json")
    call(
        f"POST {SET_USAGE}", 403, body=demo.body(_claims(demo.other_resource)), media_type="application/json"
    )
    receipt = call(f"POST {SET_USAGE}", 201, body=good, media_type="application/json").json()
    batch = call(
        f"POST {SET_USAGES}",
        207,
        media_type="application/json",
        body={
            "customer": demo.provider,
            "reports": [
                demo.sign(_claims(demo.resource2, jti=uuid.uuid4().hex)),
                "a.b.c",
                demo.sign(_claims(demo.other_resource)),
            ],
        },
    ).json()
    assert [r["status"] for r in batch["results"]] == [201, 400, 403]
    call(f"GET {REPORT}", 200, path_parameters={"report_id": receipt["id"]}, headers=provider)
    stack.wait_final([receipt["id"], batch["results"][0]["id"]])
    committed = call(
        f"GET {REPORT}", 200, path_parameters={"report_id": receipt["id"]}, headers=provider
    ).json()
    assert committed["state"] == "committed"
    other = {
        "Authorization": f"Bearer {signing.sign_status_token(demo.other_provider, demo.other_secret)}",
        "X-Customer": demo.other_provider,
    }
    call(f"GET {REPORT}", 404, path_parameters={"report_id": receipt["id"]}, headers=other)
    call("GET /readyz", 200)

    stack.assert_healthy()  # no traceback, no ERROR line, every process still up
