"""The official generated client (waldur-api-client) against the real gunicorn + Celery stack."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from waldur_api_client import AuthenticatedClient, Client
from waldur_api_client.api.marketplace_public_api import (
    marketplace_public_api_check_signature,
    marketplace_public_api_set_usage,
)
from waldur_api_client.errors import UnexpectedStatus
from waldur_api_client.models import ServiceProviderSignatureRequest

from tests.e2e.conftest import Stack, receipt_of

pytestmark = pytest.mark.e2e


TIMEOUT = httpx.Timeout(30)


def _request(
    stack: Stack, claims: dict[str, Any], secret: str | None = None, dry_run: bool = False
) -> ServiceProviderSignatureRequest:
    return ServiceProviderSignatureRequest(
        customer=uuid.UUID(stack.demo.provider),
        data=stack.demo.sign(claims, secret),
        dry_run=dry_run,
    )


def test_official_client_reports_usage_that_reaches_sql_and_the_cli(stack: Stack) -> None:
    demo = stack.demo
    claims = {
        "resource": demo.resource,
        "usages": [
            {"type": "cpu_hours", "amount": "12.50", "description": "e2e official client"},
            {"type": "ram_gb", "amount": 4},
        ],
    }
    # the public endpoints need no user: a plain Client (the generated hints ask for an
    # AuthenticatedClient, but the functions take either)
    with Client(base_url=stack.url, timeout=TIMEOUT) as client:
        checked = marketplace_public_api_check_signature.sync_detailed(
            client=client, body=_request(stack, claims)
        )  # type: ignore[arg-type]
        assert checked.status_code == 200

        # a wrong secret is the client's UnexpectedStatus with Waldur's exact 400 body
        with pytest.raises(UnexpectedStatus) as bad:
            marketplace_public_api_check_signature.sync_detailed(
                client=client,  # type: ignore[arg-type]
                body=_request(stack, claims, secret="not-the-secret-00"),
            )
        assert bad.value.status_code == 400
        assert json.loads(bad.value.content) == {"non_field_errors": ["Signature verification failed."]}

    # the client may send "Authorization: Token ..."; the public endpoint ignores it
    with AuthenticatedClient(base_url=stack.url, token="some-waldur-user-token", timeout=TIMEOUT) as auth:
        created = marketplace_public_api_set_usage.sync_detailed(client=auth, body=_request(stack, claims))
    assert created.status_code == 201
    receipt = receipt_of(created.content)
    assert receipt["status"] == "queued" and receipt["sequence"] >= 1

    states = stack.wait_final([receipt["id"]])
    assert states == {receipt["id"]: "committed"}
    rows = stack.usage(demo.resource)
    assert {c: r["amount"] for c, r in rows.items()} == {"cpu_hours": "12.50", "ram_gb": "4.00"}
    for row in rows.values():
        assert row["sequence"] == receipt["sequence"]
        assert row["report_id"] == receipt["id"]
        assert row["billing_period"] == receipt["billing_period"]
    assert rows["cpu_hours"]["description"] == "e2e official client"

    shown = stack.cli("usage", "show", "--resource", demo.resource, "--json")
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert {r["component"]: r["amount"] for r in listed} == {"cpu_hours": "12.50", "ram_gb": "4.00"}
    assert {r["sequence"] for r in listed} == {receipt["sequence"]}
    assert {r["report_id"] for r in listed} == {receipt["id"]}
    assert {r["resource"] for r in listed} == {demo.resource}
    stack.assert_healthy()


def test_dry_run_writes_nothing(stack: Stack) -> None:
    demo = stack.demo
    claims = {"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": "77"}]}
    with Client(base_url=stack.url, timeout=TIMEOUT) as client:
        created = marketplace_public_api_set_usage.sync_detailed(
            client=client, body=_request(stack, claims, dry_run=True)
        )  # type: ignore[arg-type]
    assert created.status_code == 201
    assert receipt_of(created.content).get("dry_run") is True
    # Waldur's boolean strings, sent raw
    raw = stack.http.post("/api/marketplace-public-api/set_usage/", json=stack.body(claims, dry_run="yes"))
    assert raw.status_code == 201, raw.text
    assert raw.json().get("dry_run") is True

    # a real report afterwards: once it is committed, anything journaled before it was too
    sentinel = stack.set_usage({"resource": demo.resource2, "usages": [{"type": "ram_gb", "amount": "1"}]})
    stack.wait_final([sentinel["id"]])
    stack.wait_idle()

    # the sequence is clock based, so count what the journal ever accepted instead
    assert int(stack.redis.get(stack.queue.accepted_key) or 0) == 1, "a dry run was journaled"
    assert stack.usage(demo.resource) == {}
    assert stack.queue.journal_length() == 1
    assert [r["id"] for r in stack.all_reports()] == [sentinel["id"]]
    stack.assert_healthy()
