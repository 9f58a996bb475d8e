"""The batch endpoint: per-item results in order, valid items kept, gzip, limits."""

from __future__ import annotations

import gzip
import uuid

import orjson
import pytest

from ingest.adapters.sql.read_model import usage_rows
from ingest.services.drain import drain

URL = "/api/marketplace-public-api/set_usages/"
BAD_SIGNATURE = {"non_field_errors": ["Signature verification failed."]}


def journal(runtime):
    return runtime.queue.client.xlen(runtime.queue.stream)


def post(client, body, gz=False):
    raw = orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    if gz:
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    return client.simulate_post(URL, body=raw, headers=headers)


@pytest.mark.parametrize("gz", [False, True])
def test_mixed_batch_keeps_every_valid_item(client, runtime, demo, gz):
    def good(amount):
        return demo.sign({"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": amount}]})

    reports = [
        good("1"),
        demo.sign({"resource": demo.resource, "usages": []}, secret="wrong-secret-123"),
        demo.sign({"resource": str(uuid.uuid4()), "usages": []}),
        good("2"),  # same key as item 0: both accepted, the later wins
        demo.sign({"resource": demo.resource2, "usages": [{"type": "gpu", "amount": "1"}]}),
        "",
    ]
    resp = post(client, {"customer": demo.provider, "reports": reports}, gz)
    assert resp.status_code == 207, resp.text
    results = resp.json["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == [201, 400, 400, 201, 400, 400]
    assert results[1]["errors"] == BAD_SIGNATURE
    assert "resource" in results[2]["errors"]
    assert results[4]["errors"] == {"non_field_errors": ["These components are invalid: gpu."]}
    assert results[5]["errors"] == {"data": ["This field may not be blank."]}
    assert results[3]["sequence"] == results[0]["sequence"] + 1
    assert journal(runtime) == 2
    drain(runtime.queue, runtime.committer, "t", 100, 0.01, 5)
    rows = usage_rows(runtime.engine, uuid.UUID(demo.resource))
    assert [(r["component"], r["amount"], r["report_id"]) for r in rows] == [
        ("cpu_hours", "2.00", results[3]["id"])
    ]


def test_empty_batch_and_dry_run_write_nothing(client, runtime, demo):
    resp = post(client, {"customer": demo.provider, "reports": []})
    assert resp.status_code == 207 and resp.json == {"results": []}
    token = demo.sign({"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": 1}]})
    resp = post(client, {"customer": demo.provider, "reports": [token], "dry_run": True})
    assert resp.json["results"][0]["status"] == 201 and "id" not in resp.json["results"][0]
    assert journal(runtime) == 0


def test_batch_over_the_report_limit_is_413(client, runtime, demo):
    limit = runtime.settings.batch_max_reports
    resp = post(client, {"customer": demo.provider, "reports": ["x"] * (limit + 1)})
    assert resp.status_code == 413
    assert journal(runtime) == 0


@pytest.mark.parametrize(
    "body,status",
    [
        (b"\x1f\x8b\x08\x00garbage", 400),  # malformed gzip
        (gzip.compress(b"\x00" * (9 * 1024 * 1024)), 413),  # decompresses past the byte limit
    ],
)
def test_bad_gzip(client, runtime, body, status):
    resp = client.simulate_post(
        URL, body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )
    assert resp.status_code == status
    assert journal(runtime) == 0


def test_envelope_errors_match_set_usage(client, runtime, demo):
    resp = post(client, {"reports": "nope"})
    assert resp.status_code == 400
    assert resp.json == {
        "customer": ["This field is required."],
        "reports": ['Expected a list of items but got type "str".'],
    }


def test_gzip_on_the_single_endpoint(client, runtime, demo):
    body = demo.body({"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": 3}]})
    resp = client.simulate_post(
        "/api/marketplace-public-api/set_usage/",
        body=gzip.compress(orjson.dumps(body)),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert resp.status_code == 201, resp.text
    assert journal(runtime) == 1
