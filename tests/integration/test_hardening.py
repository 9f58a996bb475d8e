"""Abuse controls: rate limits, secret rotation, token replay, iat policy, sealed secrets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid

import falcon.testing
import pytest
import sqlalchemy as sa

from api.app import create_app
from ingest import bootstrap
from ingest.services import catalog_file

URL = "/api/marketplace-public-api/set_usage/"
FAILED = {"non_field_errors": ["Signature verification failed."]}


def make_client(settings, demo, **changes):
    rt = bootstrap.Runtime(dataclasses.replace(settings, **changes))
    rt.catalog_source.load(catalog_file.parse(demo.doc()))
    rt.kick = lambda: None
    app = create_app(lambda: rt.intake, {}, rt.settings.max_body_bytes)
    return rt, falcon.testing.TestClient(app)


def claims(demo, **extra):
    return {"resource": demo.resource, "usages": [{"type": "cpu_hours", "amount": "1"}], **extra}


def journal(rt):
    return rt.queue.client.xlen(rt.queue.stream)


def test_rate_limit_answers_429_with_headers_and_queues_nothing_more(settings, demo):
    rt, client = make_client(settings, demo, rate_limit=2.0, rate_burst=3.0)
    answers = [client.simulate_post(URL, json=demo.body(claims(demo))) for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "2"
    assert answers[2].headers["X-RateLimit-Remaining"] == "0"
    limited = answers[3]
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.json["detail"].startswith("Request was throttled.")
    assert journal(rt) == 3


def test_rotated_secret_keeps_working_during_grace_only(settings, demo):
    rt, client = make_client(settings, demo)
    old = demo.secret
    rt.catalog_source.rotate_secret(uuid.UUID(demo.provider), "new-secret-0123456789", dt.timedelta(hours=1))
    rt.catalog.invalidate()
    body_old = {"customer": demo.provider, "data": demo.sign(claims(demo), old)}
    body_new = {"customer": demo.provider, "data": demo.sign(claims(demo), "new-secret-0123456789")}
    assert client.simulate_post(URL, json=body_old).status_code == 201
    assert client.simulate_post(URL, json=body_new).status_code == 201
    rt.catalog_source.rotate_secret(
        uuid.UUID(demo.provider), "newer-secret-0123456789", dt.timedelta(seconds=-1)
    )  # grace already over
    rt.catalog.invalidate()
    resp = client.simulate_post(URL, json=body_old)
    assert resp.status_code == 400 and resp.json == FAILED


def test_token_replay_window_refuses_a_token_twice(settings, demo):
    rt, client = make_client(settings, demo, token_replay_window=60.0)
    body = demo.body(claims(demo))
    assert client.simulate_post(URL, json=body).status_code == 201
    again = client.simulate_post(URL, json=body)
    assert again.status_code == 400
    assert again.json == {"non_field_errors": ["This token has already been used."]}
    with_jti = lambda: demo.body(claims(demo, jti="abc-1"))  # noqa: E731
    assert client.simulate_post(URL, json=with_jti()).status_code == 201
    assert client.simulate_post(URL, json=with_jti()).status_code == 400
    assert journal(rt) == 2


def test_token_replay_is_off_by_default(client, demo):
    body = demo.body(claims(demo))
    assert [client.simulate_post(URL, json=body).status_code for _ in range(2)] == [201, 201]


@pytest.mark.parametrize(
    "age,status",
    [
        (None, 400),  # no iat
        (10, 201),
        (3600, 400),  # older than MAX_TOKEN_AGE
    ],
)
def test_iat_policy(settings, demo, age, status):
    _rt, client = make_client(settings, demo, require_iat=True, max_token_age=300.0)
    extra = {} if age is None else {"iat": int(time.time()) - age}
    resp = client.simulate_post(URL, json=demo.body(claims(demo, **extra)))
    assert resp.status_code == status
    if status == 400:
        assert resp.json == FAILED


def test_secrets_are_sealed_at_rest(settings, demo):
    from cryptography.fernet import Fernet

    rt, client = make_client(settings, demo, secret_encryption_key=Fernet.generate_key().decode())
    with rt.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT api_secret_code FROM service_providers")).scalars()
        stored = [s for s in stored if s]
    assert stored and all(s.startswith("fernet:") for s in stored)
    assert demo.secret not in stored
    assert client.simulate_post(URL, json=demo.body(claims(demo))).status_code == 201


def test_backpressure_answers_503_with_retry_after_and_keeps_nothing(settings, demo):
    rt, client = make_client(settings, demo, max_backlog=2)
    codes = [client.simulate_post(URL, json=demo.body(claims(demo))).status_code for _ in range(3)]
    # exact, not sampled: the accept script refuses once MAX_BACKLOG reports are pending
    assert codes == [201, 201, 503]
    time.sleep(0.6)
    refused = client.simulate_post(URL, json=demo.body(claims(demo)))
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert journal(rt) == 2
    from ingest.services.drain import drain

    drain(rt.queue, rt.committer, "t", 100, 0.01, 5)
    time.sleep(0.6)
    assert client.simulate_post(URL, json=demo.body(claims(demo))).status_code == 201


def test_too_many_usage_lines_is_a_400_and_queues_nothing(settings, demo):
    rt, client = make_client(settings, demo, max_usage_lines=3)
    lines = [{"type": "cpu_hours", "amount": str(i)} for i in range(4)]
    resp = client.simulate_post(URL, json=demo.body({"resource": demo.resource, "usages": lines}))
    assert resp.status_code == 400
    assert resp.json == {"usages": {"non_field_errors": ["Ensure this field has no more than 3 elements."]}}
    assert journal(rt) == 0
    ok = client.simulate_post(URL, json=demo.body({"resource": demo.resource, "usages": lines[:3]}))
    assert ok.status_code == 201
