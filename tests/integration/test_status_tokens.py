"""Report status is read with a purpose-bound, short-lived token, never with a usage token.

Usage tokens are stored raw in SQL and the journal: whoever holds one must not be able to
read every report of its provider. A status token carries ``aud: usage-ingest:report-status``,
the provider's customer as ``sub``, and ``iat`` / ``exp`` at most STATUS_TOKEN_MAX_TTL apart."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import falcon.testing
import pytest

from api.app import create_app
from ingest import bootstrap
from ingest.cli.main import main as cli
from ingest.domain import signing
from ingest.services import access, catalog_file, operations

SET_USAGE = "/api/marketplace-public-api/set_usage/"
OPERATOR = "operator-token-0123456789"
INVALID = {"detail": "Invalid signature or token."}


@pytest.fixture
def api(settings, demo):
    rt = bootstrap.Runtime(
        dataclasses.replace(settings, operator_token=OPERATOR, status_token_max_ttl=3600.0)
    )
    rt.catalog_source.load(catalog_file.parse(demo.doc()))
    rt.kick = lambda: None

    def report_status(
        report_id: str, authorization: str | None, customer: str | None
    ) -> dict[str, Any] | None:
        # as api/asgi.py's _report_status
        who = access.authorize(
            rt.catalog, OPERATOR, authorization, customer, max_ttl=rt.settings.status_token_max_ttl
        )
        found = operations.report_status(rt, report_id)
        if found is None or (not isinstance(who, access.Operator) and found["customer"] != str(who)):
            return None
        return found

    client = falcon.testing.TestClient(create_app(lambda: rt.intake, {}, 65536, report_status))
    yield rt, client
    rt.engine.dispose()


def _report(client, demo) -> tuple[str, str]:
    claims = {"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": "1"}]}
    body = demo.body(claims)
    resp = client.simulate_post(SET_USAGE, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json["status_url"], body["data"]


def _get(client, path: str, token: str, customer: str) -> falcon.testing.Result:
    return client.simulate_get(path, headers={"Authorization": f"Bearer {token}", "X-Customer": customer})


def _claims(demo, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"aud": signing.STATUS_AUDIENCE, "sub": demo.provider, "iat": now, "exp": now + 600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_a_status_token_reads_the_providers_report(api, demo):
    _rt, client = api
    path, _ = _report(client, demo)
    token = signing.sign_status_token(demo.provider, demo.secret, ttl=300)
    resp = _get(client, path, token, demo.provider)
    assert resp.status_code == 200, resp.text
    assert resp.json["state"] == "queued"


def test_the_usage_token_itself_is_refused(api, demo):
    """The raw token stored with the report (and in the journal), correctly signed."""
    _rt, client = api
    path, usage_token = _report(client, demo)
    resp = _get(client, path, usage_token, demo.provider)
    assert (resp.status_code, resp.json) == (401, INVALID)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({}, id="any-jwt-signed-with-the-secret"),
        pytest.param({"purpose": "status"}, id="a-claim-of-our-own-choosing"),
        pytest.param({"exp": int(time.time()) + 60}, id="short-lived-but-no-audience"),
    ],
)
def test_other_tokens_signed_with_the_secret_are_refused(api, demo, claims):
    _rt, client = api
    path, _ = _report(client, demo)
    resp = _get(client, path, signing.sign(claims, demo.secret), demo.provider)
    assert (resp.status_code, resp.json) == (401, INVALID)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": int(time.time()) - 1, "iat": int(time.time()) - 60}, id="expired"),
        pytest.param({"aud": "usage-ingest:something-else"}, id="wrong-purpose"),
        pytest.param({"aud": [signing.STATUS_AUDIENCE]}, id="audience-as-a-list"),
        pytest.param({"exp": int(time.time()) + 7200}, id="exp-too-far-ahead"),
        pytest.param(
            {"iat": int(time.time()) - 7000, "exp": int(time.time()) + 60}, id="lives-longer-than-the-maximum"
        ),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"iat": None}, id="no-iat"),
        pytest.param(
            {"iat": int(time.time()) + 600, "exp": int(time.time()) + 900}, id="issued-in-the-future"
        ),
        pytest.param({"sub": None}, id="no-subject"),
        pytest.param({"exp": True}, id="exp-not-a-number"),
    ],
)
def test_bad_status_tokens_are_refused(api, demo, changes):
    _rt, client = api
    path, _ = _report(client, demo)
    resp = _get(client, path, signing.sign(_claims(demo, **changes), demo.secret), demo.provider)
    assert (resp.status_code, resp.json) == (401, INVALID)


def test_a_status_token_is_bound_to_its_customer_and_secret(api, demo):
    _rt, client = api
    path, _ = _report(client, demo)
    # the other provider's own valid token reads nothing of this provider's (404 as before)
    other = signing.sign_status_token(demo.other_provider, demo.other_secret)
    assert _get(client, path, other, demo.other_provider).status_code == 404
    # a token naming this provider but signed with another secret, or presented for another
    # customer, is refused
    assert (
        _get(client, path, signing.sign(_claims(demo), demo.other_secret), demo.provider).status_code == 401
    )
    assert _get(client, path, other, demo.provider).status_code == 401
    # a status token is no usage token either: intake refuses a token with an audience
    status_token = signing.sign_status_token(demo.provider, demo.secret)
    resp = client.simulate_post(SET_USAGE, json={"customer": demo.provider, "data": status_token})
    assert (resp.status_code, resp.json) == (400, {"non_field_errors": ["Signature verification failed."]})


def test_the_operator_token_still_reads_every_report(api, demo):
    _rt, client = api
    path, _ = _report(client, demo)
    assert client.simulate_get(path, headers={"Authorization": f"Token {OPERATOR}"}).status_code == 200
    assert client.simulate_get(path, headers={"Authorization": "Token wrong"}).status_code == 401
    assert client.simulate_get(path).status_code == 401


def test_the_cli_mints_a_status_token(api, demo, capsys):
    _rt, client = api
    path, _ = _report(client, demo)
    assert cli(["status-token", "--customer", demo.provider, "--secret", demo.secret, "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    claims = signing.verify_status_token(token, [demo.secret], demo.provider)
    assert claims["exp"] - claims["iat"] == 120
    assert _get(client, path, token, demo.provider).status_code == 200
    assert cli(["status-token", "--customer", demo.provider, "--secret", demo.secret, "--ttl", "7200"]) == 2


def test_the_subject_may_be_any_spelling_of_the_customer_uuid(api, demo):
    _rt, client = api
    path, _ = _report(client, demo)
    spelled = demo.provider.upper().replace("-", "")
    token = signing.sign(_claims(demo, sub=spelled), demo.secret)
    assert _get(client, path, token, demo.provider).status_code == 200
