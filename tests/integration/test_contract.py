"""Contract tests: every status and body of shared/docs/waldur-contract.md, through the real
Falcon app with a real Redis journal and a real SQL catalog (SQLite and PostgreSQL).

Speed: the conftest builds a database, a catalog and a Runtime per test; for ~750 table rows
that is most of the run time, so this module overrides ``database_url``, ``settings``, ``demo``,
``runtime`` and ``client`` with module-scoped equivalents (built the same way): one migrated
database, demo catalog, Redis prefix and app per backend. That is sound because no request
here changes the catalog, and every journal/SQL assertion is relative (before/after). The few
tests that commit to SQL or need other settings get their own Runtime and Redis prefix over
the same database (``fresh``).

Every rejection (400/403/405/413/415) is checked to leave the journal untouched (stream
length and the acceptance sequence counter).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import gzip
import hashlib
import hmac
import json
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import falcon.testing
import httpx
import jwt
import pytest
import sqlalchemy as sa
from jwt.warnings import InsecureKeyLengthWarning
from waldur_api_client import AuthenticatedClient
from waldur_api_client.api.marketplace_public_api import (
    marketplace_public_api_check_signature as official_check,
)
from waldur_api_client.api.marketplace_public_api import (
    marketplace_public_api_set_usage as official_set,
)
from waldur_api_client.models.service_provider_signature_request import (
    ServiceProviderSignatureRequest,
)

from api.app import create_app
from ingest import bootstrap
from ingest.adapters.sql import tables as t
from ingest.adapters.sql.read_model import usage_rows
from ingest.config import Settings
from ingest.services import catalog_file
from ingest.services.drain import drain
from tests.conftest import migrated_database
from tests.helpers import Demo, make_demo

CHECK = "/api/marketplace-public-api/check_signature/"
SET = "/api/marketplace-public-api/set_usage/"
ENDPOINTS = [pytest.param(CHECK, id="check_signature"), pytest.param(SET, id="set_usage")]
SUCCESS = {CHECK: 200, SET: 201}

REQUIRED = "This field is required."
BLANK = "This field may not be blank."
NULL = "This field may not be null."
NOT_STRING = "Not a valid string."
NOT_BOOLEAN = "Must be a valid boolean."
NOT_NUMBER = "A valid number is required."
PLACES = "Ensure that there are no more than 2 decimal places."
WHOLE = "Ensure that there are no more than 18 digits before the decimal point."
TOTAL = "Ensure that there are no more than 20 digits in total."
SIGNATURE_FAILED = {"non_field_errors": ["Signature verification failed."]}
SECRET_NOT_SET = {"non_field_errors": ["API secret code is not set."]}
FORBIDDEN = {"detail": "You do not have permission to perform this action."}
DATETIME_FORMAT = (
    "Datetime has wrong format. Use one of these formats instead: "
    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)
BACKFILL = (
    "Service providers can only specify date for limit-based or prepaid billing "
    "components when backfilling past billing periods."
)
UNKNOWN = "5b0e6c1e-8e63-4d3e-9d4f-1f3a2b4c5d6e"  # never in a demo catalog (those are uuid4)


def dne(value: object) -> str:
    return f"Object with uuid={value} does not exist."


# --------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database per backend for this module (see the module docstring)."""
    yield from migrated_database(request.param, tmp_path_factory.mktemp("contract"))


@pytest.fixture(scope="module")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=f"contract-{uuid.uuid4().hex[:10]}",
        catalog_refresh=0.01,
        flush_interval=0.05,
        drain_budget=2.0,
    )


@pytest.fixture(scope="module")
def demo() -> Demo:
    return make_demo()


def _runtime(settings: Settings) -> Iterator[bootstrap.Runtime]:
    rt = bootstrap.Runtime(settings)
    rt.kick = lambda: None  # type: ignore[method-assign]  # no worker: tests drain directly
    yield rt
    keys = list(rt.queue.client.scan_iter(f"{settings.redis_prefix}:*"))
    if keys:
        rt.queue.client.delete(*keys)
    rt.engine.dispose()


def _client(rt: bootstrap.Runtime) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(
        create_app(lambda: rt.intake, {"redis": rt.queue.ping}, rt.settings.max_body_bytes)
    )


@pytest.fixture(scope="module")
def runtime(settings: Settings, demo: Demo) -> Iterator[bootstrap.Runtime]:
    for rt in _runtime(settings):
        rt.catalog_source.load(catalog_file.parse(demo.doc()))
        yield rt


@pytest.fixture(scope="module")
def client(runtime: bootstrap.Runtime) -> falcon.testing.TestClient:
    return _client(runtime)


@pytest.fixture
def fresh(
    settings: Settings, runtime: bootstrap.Runtime
) -> Iterator[Callable[..., tuple[bootstrap.Runtime, falcon.testing.TestClient]]]:
    """Make (runtime, client) with its own Redis prefix and settings changes, over the
    module's database and catalog (``runtime`` is what loads that catalog)."""
    made: list[Iterator[bootstrap.Runtime]] = []

    def make(**changes: Any) -> tuple[bootstrap.Runtime, falcon.testing.TestClient]:
        gen = _runtime(
            dataclasses.replace(settings, redis_prefix=f"contract-{uuid.uuid4().hex[:10]}", **changes)
        )
        made.append(gen)
        rt = next(gen)
        return rt, _client(rt)

    yield make
    for gen in made:
        next(gen, None)


def journal_state(runtime: bootstrap.Runtime) -> tuple[int, bytes | None]:
    """(stream length, acceptance sequence counter): both unchanged means nothing was queued."""
    q = runtime.queue
    return int(q.client.xlen(q.stream)), q.client.get(q.seq_key)


def journal_length(runtime: bootstrap.Runtime) -> int:
    return int(runtime.queue.client.xlen(runtime.queue.stream))


def sql_counts(runtime: bootstrap.Runtime) -> tuple[int, int]:
    with runtime.engine.connect() as conn:
        reports = conn.scalar(sa.select(sa.func.count()).select_from(t.UsageReport))
        usages = conn.scalar(sa.select(sa.func.count()).select_from(t.ComponentUsage))
    return int(reports or 0), int(usages or 0)


def sequence_ahead_of_sql(runtime: bootstrap.Runtime) -> None:
    """This module shares a database while each test has a fresh Redis: start the acceptance
    sequence past the highest one already in SQL, as the reconciler does in production."""
    with runtime.engine.connect() as conn:
        top = conn.scalar(sa.select(sa.func.max(t.UsageReport.seq))) or 0
    runtime.queue.client.set(runtime.queue.seq_key, int(top))


def commit_all(runtime: bootstrap.Runtime) -> int:
    return drain(runtime.queue, runtime.committer, "contract", 100, 0.01, 5).committed


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def hand_token(payload: Any, secret: str, alg: str = "HS256", header: dict[str, Any] | None = None) -> str:
    """A compact JWS built by hand (no PyJWT, no key-length warning). ``payload`` may be raw
    bytes (to sign something that is not a JSON object) or any JSON value."""
    head = header if header is not None else {"alg": alg, "typ": "JWT"}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(body)}"
    digest = DIGESTS.get(alg)
    signature = hmac.new(secret.encode(), signing_input.encode(), digest).digest() if digest else b""
    return f"{signing_input}.{b64(signature)}"


def pyjwt_token(claims: dict[str, Any], secret: str, alg: str = "HS256") -> str:
    """What Waldur's own clients do: jwt.encode with a 16-character secret (PyJWT warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=alg)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def previous_month() -> dt.datetime:
    """Noon on the last day of the previous month (UTC): always in the past."""
    first = now_utc().replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    return first - dt.timedelta(days=1)


def period_of(moment: dt.datetime) -> str:
    return moment.date().replace(day=1).isoformat()


def usage(type_: Any = "cpu_hours", amount: Any = "1", **extra: Any) -> dict[str, Any]:
    return {"type": type_, "amount": amount, **extra}


def report(d: Demo, *usages: dict[str, Any], **claims: Any) -> dict[str, Any]:
    return {"resource": d.resource, "usages": list(usages) or [usage()], **claims}


def send(
    client: falcon.testing.TestClient, path: str, body: Any, headers: dict[str, str] | None = None
) -> falcon.testing.Result:
    return client.simulate_post(path, json=body, headers=headers)


def assert_rejected(
    client: falcon.testing.TestClient,
    runtime: bootstrap.Runtime,
    path: str,
    body: Any,
    status: int,
    expected: dict[str, Any],
) -> None:
    before = journal_state(runtime)
    resp = send(client, path, body)
    assert resp.status_code == status, resp.text
    assert resp.json == expected
    assert journal_state(runtime) == before, "a rejected request queued something"


def assert_accepted(
    client: falcon.testing.TestClient,
    runtime: bootstrap.Runtime,
    body: Any,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    before = journal_length(runtime)
    resp = send(client, SET, body, headers)
    assert resp.status_code == 201, resp.text
    receipt = resp.json
    assert re.fullmatch(r"[0-9a-f]{32}", receipt["id"]), receipt
    assert isinstance(receipt["sequence"], int) and receipt["sequence"] >= 1
    assert receipt["status"] == "queued"
    assert journal_length(runtime) == before + 1
    return receipt


# --------------------------------------------------------------------------------------------
# request envelope (both endpoints)

Factory = Callable[[Demo], tuple[dict[str, Any], dict[str, Any]]]


def _token(d: Demo) -> str:
    return d.sign(report(d))


ENVELOPE_REJECTIONS: list[Any] = [
    pytest.param(lambda d: ({"data": _token(d)}, {"customer": [REQUIRED]}), id="customer-missing"),
    pytest.param(
        lambda d: ({"customer": UNKNOWN, "data": _token(d)}, {"customer": [dne(UNKNOWN)]}),
        id="customer-unknown",
    ),
    pytest.param(
        lambda d: (
            {"customer": uuid.UUID(UNKNOWN).hex, "data": _token(d)},
            {"customer": [dne(uuid.UUID(UNKNOWN).hex)]},
        ),
        id="customer-unknown-32-hex",
    ),
    pytest.param(
        lambda d: ({"customer": "not-a-uuid", "data": _token(d)}, {"customer": [dne("not-a-uuid")]}),
        id="customer-not-a-uuid",
    ),
    pytest.param(
        lambda d: ({"customer": d.provider + "0", "data": _token(d)}, {"customer": [dne(d.provider + "0")]}),
        id="customer-uuid-too-long",
    ),
    pytest.param(
        lambda d: ({"customer": 42, "data": _token(d)}, {"customer": [dne(42)]}), id="customer-number"
    ),
    pytest.param(
        lambda d: ({"customer": 10**30, "data": _token(d)}, {"customer": [dne(10**30)]}),
        id="customer-huge-integer",
    ),  # the body parser must not turn it into 1e+30
    pytest.param(lambda d: ({"customer": d.provider}, {"data": [REQUIRED]}), id="data-missing"),
    pytest.param(lambda d: ({"customer": d.provider, "data": ""}, {"data": [BLANK]}), id="data-empty"),
    pytest.param(
        lambda d: ({"customer": d.provider, "data": " \t\n "}, {"data": [BLANK]}), id="data-whitespace-only"
    ),
    pytest.param(lambda d: ({"customer": d.provider, "data": 123}, SIGNATURE_FAILED), id="data-number"),
    pytest.param(
        lambda d: ({"customer": d.provider, "data": True}, {"data": [NOT_STRING]}), id="data-boolean"
    ),
    pytest.param(
        lambda d: ({"customer": d.provider, "data": [_token(d)]}, {"data": [NOT_STRING]}), id="data-list"
    ),
    pytest.param(
        lambda d: ({"customer": d.provider, "data": {"jwt": _token(d)}}, {"data": [NOT_STRING]}),
        id="data-object",
    ),
    *[
        pytest.param(
            lambda d, v=value: (
                {"customer": d.provider, "data": _token(d), "dry_run": v},
                {"dry_run": [NOT_BOOLEAN]},
            ),
            id=f"dry_run-{name}",
        )
        for name, value in [
            ("maybe", "maybe"),
            ("empty", ""),
            ("two-string", "2"),
            ("two", 2),
            ("half", 0.5),
            ("list", []),
            ("object", {}),
        ]
    ],
    pytest.param(lambda d: ({}, {"customer": [REQUIRED], "data": [REQUIRED]}), id="empty-object"),
    pytest.param(
        lambda d: (
            {"customer": "nope", "data": "", "dry_run": "maybe"},
            {"customer": [dne("nope")], "data": [BLANK], "dry_run": [NOT_BOOLEAN]},
        ),
        id="all-field-errors-together",
    ),
    pytest.param(
        lambda d: ({"customer": d.no_secret_provider, "data": _token(d)}, SECRET_NOT_SET),
        id="customer-without-secret",
    ),
    pytest.param(
        lambda d: ({"customer": d.no_secret_provider, "data": "garbage"}, SECRET_NOT_SET),
        id="no-secret-decided-before-signature",
    ),
    pytest.param(
        lambda d: (
            {"customer": d.provider, "data": d.sign(report(d), d.other_secret), "dry_run": "maybe"},
            {"dry_run": [NOT_BOOLEAN]},
        ),
        id="bad-signature-not-checked-while-a-field-is-invalid",
    ),
    pytest.param(
        lambda d: (
            {"customer": d.no_secret_provider, "data": _token(d), "dry_run": "maybe"},
            {"dry_run": [NOT_BOOLEAN]},
        ),
        id="secret-not-checked-while-a-field-is-invalid",
    ),
    pytest.param(
        lambda d: (
            {"customer": "nope", "data": d.sign(report(d), d.other_secret)},
            {"customer": [dne("nope")]},
        ),
        id="unknown-customer-before-signature",
    ),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("case", ENVELOPE_REJECTIONS)
def test_envelope_rejections(client, runtime, demo, path, case: Factory):
    body, expected = case(demo)
    assert_rejected(client, runtime, path, body, 400, expected)


def test_field_errors_come_in_field_order(client, runtime, demo):
    resp = send(client, SET, {"dry_run": "maybe", "data": " ", "customer": "nope"})
    assert resp.status_code == 400
    assert list(resp.json) == ["customer", "data", "dry_run"]


ENVELOPE_ACCEPTED: list[Any] = [
    pytest.param(lambda d: {"customer": d.provider, "data": _token(d)}, id="hyphenated"),
    pytest.param(lambda d: {"customer": uuid.UUID(d.provider).hex, "data": _token(d)}, id="customer-32-hex"),
    pytest.param(lambda d: {"customer": d.provider.upper(), "data": _token(d)}, id="customer-upper-case"),
    pytest.param(lambda d: {"customer": d.provider, "data": f"  {_token(d)}\n"}, id="data-trimmed"),
    pytest.param(
        lambda d: {"customer": d.provider, "data": _token(d), "extra": [1, {"x": None}]},
        id="unknown-fields-ignored",
    ),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("make", ENVELOPE_ACCEPTED)
def test_envelope_accepted(client, runtime, demo, path, make):
    before = journal_length(runtime)
    resp = send(client, path, make(demo))
    assert resp.status_code == SUCCESS[path], resp.text
    assert journal_length(runtime) == before + (1 if path == SET else 0)


TRUE_LIKE = [True, "true", "1", "yes", "on", 1, 1.0, "True", "TRUE"]
FALSE_LIKE = [False, "false", "0", "no", "off", 0, 0.0, "False", "FALSE"]


@pytest.mark.parametrize("value", TRUE_LIKE + FALSE_LIKE, ids=repr)
def test_dry_run_boolean_like_values_on_set_usage(client, runtime, demo, value):
    before = journal_length(runtime)
    resp = send(client, SET, demo.body(report(demo), dry_run=value))
    assert resp.status_code == 201, resp.text
    if value in TRUE_LIKE:
        assert resp.json == {"dry_run": True, "billing_period": period_of(now_utc())}
        assert journal_length(runtime) == before
    else:
        assert resp.json["sequence"] >= 1
        assert journal_length(runtime) == before + 1


@pytest.mark.parametrize("value", TRUE_LIKE + FALSE_LIKE, ids=repr)
def test_dry_run_boolean_like_values_on_check_signature(client, runtime, demo, value):
    before = journal_state(runtime)
    resp = send(client, CHECK, demo.body(report(demo), dry_run=value))
    assert resp.status_code == 200, resp.text
    assert journal_state(runtime) == before


# --------------------------------------------------------------------------------------------
# the signature decision (both endpoints)


def _tamper_payload(d: Demo) -> str:
    head, _payload, sig = d.sign(report(d)).split(".")
    forged = b64(json.dumps(report(d, usage(amount="999999"))).encode())
    return f"{head}.{forged}.{sig}"


def _tamper_header(d: Demo) -> str:
    _head, payload, sig = d.sign(report(d)).split(".")
    return f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': 'x'}).encode())}.{payload}.{sig}"


def _truncate_signature(d: Demo) -> str:
    return d.sign(report(d))[:-3]


def _with_header(d: Demo, header: bytes) -> str:
    """A raw header, signed correctly over the rest."""
    payload = b64(json.dumps(report(d)).encode())
    signing_input = f"{b64(header)}.{payload}"
    signature = hmac.new(d.secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _raw_claim(d: Demo, claim: str, json_value: str) -> str:
    """A correctly signed token whose registered claim is raw JSON text (NaN, Infinity, 1e400:
    Python's json, like PyJWT's, reads them as floats; PyJWT then refuses them)."""
    raw = (
        f'{{"resource": "{d.resource}", "usages": [{{"type": "cpu_hours", "amount": "1"}}], '
        f'"{claim}": {json_value}}}'
    )
    return hand_token(raw.encode(), d.secret)


def _claims(d: Demo, **registered: Any) -> dict[str, Any]:
    return {**report(d), **registered}


# Python's json (and PyJWT's) reads NaN, Infinity and 1e400 as floats; PyJWT then refuses such
# exp/nbf/iat ("must be an integer"; int(inf) even raises OverflowError, a 500 in Waldur).
SIGNATURE_FAILURES: list[Any] = [
    pytest.param(lambda d: "not-a-token", id="garbage"),
    pytest.param(lambda d: "abc.def", id="two-segments"),
    pytest.param(lambda d: "a.b.c", id="segments-not-base64-json"),
    pytest.param(lambda d: "..", id="empty-segments"),
    pytest.param(lambda d: d.sign(report(d)) + ".extra", id="four-segments"),
    pytest.param(lambda d: "é." + d.sign(report(d)), id="non-ascii"),
    pytest.param(lambda d: d.sign(report(d), d.other_secret), id="other-providers-secret"),
    pytest.param(lambda d: d.sign(report(d), d.secret + "x"), id="wrong-secret"),
    pytest.param(_tamper_payload, id="tampered-payload"),
    pytest.param(_tamper_header, id="tampered-header"),
    pytest.param(_truncate_signature, id="truncated-signature"),
    pytest.param(lambda d: hand_token([report(d)], d.secret), id="payload-list"),
    pytest.param(lambda d: hand_token("text", d.secret), id="payload-string"),
    pytest.param(lambda d: hand_token(5, d.secret), id="payload-number"),
    pytest.param(lambda d: hand_token(None, d.secret), id="payload-null"),
    pytest.param(lambda d: hand_token(b"not json", d.secret), id="payload-not-json"),
    pytest.param(lambda d: hand_token(b'{"usages": "\xff"}', d.secret), id="payload-invalid-utf8"),
    pytest.param(lambda d: d.sign(_claims(d, exp=int(now_utc().timestamp()) - 60)), id="expired"),
    pytest.param(lambda d: d.sign(_claims(d, exp="tomorrow")), id="exp-not-a-number"),
    pytest.param(lambda d: d.sign(_claims(d, exp=True)), id="exp-boolean"),
    pytest.param(lambda d: d.sign(_claims(d, nbf=int(now_utc().timestamp()) + 3600)), id="nbf-in-future"),
    pytest.param(lambda d: d.sign(_claims(d, iat=int(now_utc().timestamp()) + 3600)), id="iat-in-future"),
    *[
        pytest.param(lambda d, c=claim, v=value: _raw_claim(d, c, v), id=f"{claim}-{value}")
        for claim in ("exp", "nbf", "iat")
        for value in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400")
    ],
    pytest.param(lambda d: d.sign(_claims(d, aud="waldur")), id="aud-present"),
    pytest.param(lambda d: d.sign(_claims(d, aud=[])), id="aud-empty-list"),
    pytest.param(lambda d: hand_token(report(d), d.secret, alg="none"), id="alg-none"),
    pytest.param(
        lambda d: hand_token(report(d), d.secret, header={"alg": "none"}) + "sig",
        id="alg-none-with-signature",
    ),
    pytest.param(lambda d: hand_token(report(d), d.secret, alg="HS384"), id="HS384"),
    pytest.param(lambda d: hand_token(report(d), d.secret, alg="HS512"), id="HS512"),
    pytest.param(lambda d: pyjwt_token(report(d), d.secret, alg="HS512"), id="HS512-by-pyjwt"),
    pytest.param(lambda d: hand_token(report(d), d.secret, header={"alg": "hs256"}), id="alg-lower-case"),
    pytest.param(lambda d: hand_token(report(d), d.secret, header={"typ": "JWT"}), id="alg-missing"),
    pytest.param(lambda d: _with_header(d, b"[]"), id="header-not-an-object"),
    pytest.param(lambda d: _with_header(d, b'{"alg": "HS256", "x": "\xff"}'), id="header-invalid-utf8"),
    pytest.param(
        lambda d: hand_token(report(d), d.secret, header={"alg": "HS256", "crit": ["exp"]}), id="crit-header"
    ),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("make", SIGNATURE_FAILURES)
def test_signature_failures(client, runtime, demo, path, make):
    body = {"customer": demo.provider, "data": make(demo)}
    assert_rejected(client, runtime, path, body, 400, SIGNATURE_FAILED)


SIGNATURE_ACCEPTED: list[Any] = [
    pytest.param(lambda d: d.sign(report(d)), id="project-signer"),
    pytest.param(lambda d: hand_token(report(d), d.secret), id="hmac-of-utf8-secret"),
    pytest.param(lambda d: pyjwt_token(report(d), d.secret), id="pyjwt-encode"),
    pytest.param(lambda d: hand_token(report(d), d.secret, header={"alg": "HS256"}), id="no-typ-header"),
    pytest.param(lambda d: d.sign(_claims(d, exp=int(now_utc().timestamp()) + 3600)), id="exp-in-future"),
    pytest.param(
        lambda d: d.sign(
            _claims(d, nbf=int(now_utc().timestamp()) - 60, iat=int(now_utc().timestamp()) - 60)
        ),
        id="nbf-and-iat-in-past",
    ),
    pytest.param(lambda d: d.sign(_claims(d, iss="hpc", sub="usage", jti="1")), id="other-registered-claims"),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("make", SIGNATURE_ACCEPTED)
def test_signature_accepted(client, runtime, demo, path, make):
    resp = send(client, path, {"customer": demo.provider, "data": make(demo)})
    assert resp.status_code == SUCCESS[path], resp.text


@pytest.mark.parametrize(
    ("iat", "status"),
    [
        pytest.param(lambda: str(int(now_utc().timestamp())), 201, id="fresh-iat"),
        pytest.param(lambda: str(int(now_utc().timestamp()) - 3600), 400, id="old-iat"),
        pytest.param(lambda: "NaN", 400, id="NaN-iat"),
    ],
)
def test_max_token_age_holds_for_every_iat(fresh, demo, iat, status):
    """With REQUIRE_IAT and MAX_TOKEN_AGE set, an old token must stay refused."""
    runtime, client = fresh(require_iat=True, max_token_age=300.0)
    before = journal_length(runtime)
    resp = send(client, SET, {"customer": demo.provider, "data": _raw_claim(demo, "iat", iat())})
    assert resp.status_code == status, resp.text
    if status == 400:
        assert resp.json == SIGNATURE_FAILED
    assert journal_length(runtime) == before + (status == 201)


def test_other_provider_signs_with_its_own_secret(client, runtime, demo):
    body = {
        "customer": demo.other_provider,
        "data": demo.sign(report(demo, resource=demo.other_resource), demo.other_secret),
    }
    assert send(client, CHECK, body).status_code == 200
    assert_accepted(client, runtime, body)


CHECK_SIGNATURE_IGNORES_PAYLOAD: list[Any] = [
    pytest.param({}, id="empty-object"),
    pytest.param({"usages": "garbage", "resource": "nope", "date": "never"}, id="garbage-claims"),
    pytest.param({"resource": UNKNOWN, "usages": [{"type": "", "amount": "NaN"}]}, id="invalid-rules"),
    pytest.param({"date": "2999-01-01T00:00:00Z", "usages": [{"type": "x", "amount": 1}]}, id="future-date"),
]


@pytest.mark.parametrize("claims", CHECK_SIGNATURE_IGNORES_PAYLOAD)
def test_check_signature_never_inspects_the_payload(client, runtime, demo, claims):
    before = journal_state(runtime)
    resp = send(client, CHECK, demo.body(claims))
    assert resp.status_code == 200, resp.text
    assert journal_state(runtime) == before
    # the same token is refused by set_usage, which does inspect it
    assert send(client, SET, demo.body(claims)).status_code == 400


def test_check_signature_ignores_ownership(client, runtime, demo):
    resp = send(client, CHECK, demo.body(report(demo, resource=demo.other_resource)))
    assert resp.status_code == 200, resp.text


# --------------------------------------------------------------------------------------------
# the signed payload (set_usage only): rules a..n


def _just_now() -> dt.datetime:
    """A second ago, but never before this month began (a usage component may not backfill)."""
    now = now_utc()
    return max(now - dt.timedelta(seconds=1), now.replace(day=1, hour=0, minute=0, second=0))


def _future() -> str:
    return iso(now_utc() + dt.timedelta(days=1))


PAYLOAD_REJECTIONS: list[Any] = [
    # a
    pytest.param(lambda d: {"resource": d.resource}, {"usages": [REQUIRED]}, id="a-usages-missing"),
    pytest.param(lambda d: {"resource": d.resource, "usages": None}, {"usages": [NULL]}, id="a-usages-null"),
    pytest.param(
        lambda d: {"resource": d.resource, "usages": "cpu_hours"},
        {"usages": {"non_field_errors": ['Expected a list of items but got type "str".']}},
        id="a-usages-string",
    ),
    pytest.param(
        lambda d: {"resource": d.resource, "usages": usage()},
        {"usages": {"non_field_errors": ['Expected a list of items but got type "dict".']}},
        id="a-usages-object",
    ),
    # b
    pytest.param(
        lambda d: report(d, usage(), usage("")), {"usages": [{}, {"type": [BLANK]}]}, id="b-type-blank"
    ),
    pytest.param(lambda d: report(d, usage(" \t")), {"usages": [{"type": [BLANK]}]}, id="b-type-whitespace"),
    pytest.param(
        lambda d: report(d, {"amount": "1"}), {"usages": [{"type": [REQUIRED]}]}, id="b-type-missing"
    ),
    pytest.param(lambda d: report(d, usage(None)), {"usages": [{"type": [NULL]}]}, id="b-type-null"),
    pytest.param(
        lambda d: report(d, usage(["cpu_hours"])), {"usages": [{"type": [NOT_STRING]}]}, id="b-type-list"
    ),
    pytest.param(
        lambda d: report(d, usage(), "cpu_hours"),
        {"usages": [{}, {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}]},
        id="b-item-not-an-object",
    ),
    # c (the amount grammar has its own table below)
    pytest.param(
        lambda d: report(d, {"type": "cpu_hours"}),
        {"usages": [{"amount": [REQUIRED]}]},
        id="c-amount-missing",
    ),
    pytest.param(
        lambda d: report(d, usage(amount="1"), usage(amount="1.234"), usage(amount="x")),
        {"usages": [{}, {"amount": [PLACES]}, {"amount": [NOT_NUMBER]}]},
        id="c-one-dict-per-item",
    ),
    # d
    pytest.param(
        lambda d: report(d, usage(description="x" * 2001)),
        {"usages": [{"description": ["Ensure this field has no more than 2000 characters."]}]},
        id="d-description-too-long",
    ),
    # e
    pytest.param(
        lambda d: report(d, usage(recurring="maybe")),
        {"usages": [{"recurring": [NOT_BOOLEAN]}]},
        id="e-recurring-not-boolean",
    ),
    pytest.param(
        lambda d: report(d, usage(missing_usage_policy="x")),
        {"usages": [{"missing_usage_policy": ['"x" is not a valid choice.']}]},
        id="e-policy-invalid",
    ),
    pytest.param(
        lambda d: report(d, usage(missing_usage_policy="NONE")),
        {"usages": [{"missing_usage_policy": ['"NONE" is not a valid choice.']}]},
        id="e-policy-case-sensitive",
    ),
    pytest.param(
        lambda d: report(d, usage("", "abc", recurring="maybe")),
        {"usages": [{"type": [BLANK], "amount": [NOT_NUMBER], "recurring": [NOT_BOOLEAN]}]},
        id="item-field-errors-together",
    ),
    # f, g
    pytest.param(
        lambda d: {"plan_period": UNKNOWN, "usages": [usage()]},
        {"plan_period": [dne(UNKNOWN)]},
        id="f-plan-period-unknown",
    ),
    pytest.param(
        lambda d: {"plan_period": "nope", "usages": [usage()]},
        {"plan_period": [dne("nope")]},
        id="f-plan-period-not-a-uuid",
    ),
    pytest.param(
        lambda d: {"plan_period": d.closed_plan_period, "usages": [usage()]},
        {"plan_period": ["Billing period is closed."]},
        id="g-plan-period-closed",
    ),
    # h, i
    pytest.param(
        lambda d: report(d, resource=UNKNOWN), {"resource": [dne(UNKNOWN)]}, id="h-resource-unknown"
    ),
    pytest.param(
        lambda d: report(d, resource="nope"), {"resource": [dne("nope")]}, id="h-resource-not-a-uuid"
    ),
    pytest.param(
        lambda d: {"usages": [usage()]},
        {"non_field_errors": ["Either plan_period or resource should be provided."]},
        id="i-neither-resource-nor-plan-period",
    ),
    # j
    pytest.param(
        lambda d: report(d, resource=d.erred_resource),
        {"resource": ["Resource is not in valid state."]},
        id="j-erred-resource",
    ),
    # k
    pytest.param(
        lambda d: report(d, usage("b"), usage("cpu_hours"), usage("a")),
        {"non_field_errors": ["These components are invalid: a, b."]},
        id="k-unknown-components-sorted",
    ),
    pytest.param(
        lambda d: report(d, usage("support")),
        {"non_field_errors": ["These components are invalid: support."]},
        id="k-fixed-billing-component",
    ),
    pytest.param(
        lambda d: report(d, usage("zz"), usage("zz"), usage("support")),
        {"non_field_errors": ["These components are invalid: support, zz."]},
        id="k-each-type-once",
    ),
    pytest.param(
        lambda d: report(d, usage("CPU_HOURS")),
        {"non_field_errors": ["These components are invalid: CPU_HOURS."]},
        id="k-case-sensitive",
    ),
    # l
    pytest.param(
        lambda d: report(d, resource=d.planless_resource),
        {"non_field_errors": ["Resource must have a plan to report usage"]},
        id="l-planless-resource",
    ),
    # m
    pytest.param(
        lambda d: report(d, date=_future()),
        {"date": ["Cannot submit usage for future dates"]},
        id="m-future-date",
    ),
    pytest.param(
        lambda d: report(d, usage("storage_tb"), date=_future()),
        {"date": ["Cannot submit usage for future dates"]},
        id="m-future-date-limit",
    ),
    # n
    pytest.param(
        lambda d: report(d, usage("cpu_hours"), date=iso(previous_month())),
        {"date": [BACKFILL]},
        id="n-backfill-usage-component",
    ),
    pytest.param(
        lambda d: report(d, usage("storage_tb"), usage("ram_gb"), date=iso(previous_month())),
        {"date": [BACKFILL]},
        id="n-backfill-mixed-components",
    ),
    # date format
    pytest.param(lambda d: report(d, date="yesterday"), {"date": [DATETIME_FORMAT]}, id="date-wrong-format"),
    pytest.param(lambda d: report(d, date=12345), {"date": [DATETIME_FORMAT]}, id="date-number"),
    pytest.param(lambda d: report(d, date=None), {"date": [NULL]}, id="date-null"),
    # field errors together; object rules only after every field is valid
    pytest.param(
        lambda d: {"usages": [usage("")], "resource": UNKNOWN, "plan_period": "nope", "date": "yesterday"},
        {
            "usages": [{"type": [BLANK]}],
            "resource": [dne(UNKNOWN)],
            "plan_period": [dne("nope")],
            "date": [DATETIME_FORMAT],
        },
        id="payload-field-errors-together",
    ),
    pytest.param(
        lambda d: report(d, usage("nope", "x"), resource=d.erred_resource),
        {"usages": [{"amount": [NOT_NUMBER]}]},
        id="field-errors-before-object-rules",
    ),
]


@pytest.mark.parametrize(("make", "expected"), PAYLOAD_REJECTIONS)
def test_payload_rejections(client, runtime, demo, make, expected):
    assert_rejected(client, runtime, SET, demo.body(make(demo)), 400, expected)


DRY_RUN_SUBSET = {
    "a-usages-missing",
    "b-type-blank",
    "c-one-dict-per-item",
    "g-plan-period-closed",
    "j-erred-resource",
    "k-unknown-components-sorted",
    "l-planless-resource",
    "m-future-date",
    "n-backfill-usage-component",
}


@pytest.mark.parametrize(("make", "expected"), [p for p in PAYLOAD_REJECTIONS if p.id in DRY_RUN_SUBSET])
def test_payload_rejections_also_under_dry_run(client, runtime, demo, make, expected):
    """dry_run runs every check."""
    assert_rejected(client, runtime, SET, demo.body(make(demo), dry_run=True), 400, expected)


# amounts (rule c) ---------------------------------------------------------------------------

AMOUNTS_ACCEPTED: list[Any] = [
    pytest.param("12.50", id="string-2-places"),
    pytest.param(12.5, id="float"),
    pytest.param("-3", id="negative-string"),
    pytest.param(-3, id="negative-int"),
    pytest.param(0, id="zero"),
    pytest.param(100, id="int"),
    pytest.param(150.0, id="float-integral"),
    pytest.param(" 7.1 ", id="padded-string"),
    pytest.param("999999999999999999.99", id="18-whole-2-places"),
    pytest.param(123456789012345678, id="18-digit-int"),
    pytest.param("1e2", id="exponent-string"),
]


@pytest.mark.parametrize("amount", AMOUNTS_ACCEPTED)
def test_amount_accepted(client, runtime, demo, amount):
    assert_accepted(client, runtime, demo.body(report(demo, usage(amount=amount))))


class RawJson(str):
    """JSON text to put into the payload verbatim."""


AMOUNTS_REJECTED: list[Any] = [
    pytest.param("1.234", PLACES, id="3-places"),
    pytest.param("1.230", PLACES, id="trailing-zero-3-places"),
    pytest.param(0.1 + 0.2, PLACES, id="float-noise"),
    pytest.param(1e-7, PLACES, id="tiny-float"),
    pytest.param("NaN", NOT_NUMBER, id="NaN"),
    pytest.param("nan", NOT_NUMBER, id="nan"),
    pytest.param("Infinity", NOT_NUMBER, id="Infinity"),
    pytest.param("-Infinity", NOT_NUMBER, id="minus-Infinity"),
    pytest.param("inf", NOT_NUMBER, id="inf"),
    pytest.param(True, NOT_NUMBER, id="true"),
    pytest.param(False, NOT_NUMBER, id="false"),
    pytest.param("abc", NOT_NUMBER, id="abc"),
    pytest.param("", NOT_NUMBER, id="empty-string"),
    pytest.param("1,5", NOT_NUMBER, id="decimal-comma"),
    pytest.param([1], NOT_NUMBER, id="list"),
    pytest.param({"value": 1}, NOT_NUMBER, id="object"),
    # null: the contract lists no message; DRF's DecimalField answers the null message
    pytest.param(None, NULL, id="null"),
    pytest.param("1234567890123456789", WHOLE, id="19-whole-digits"),
    pytest.param(1234567890123456789, WHOLE, id="19-digit-int"),
    pytest.param("1234567890123456789.5", WHOLE, id="19-whole-1-place"),
    pytest.param("123456789012345678901", TOTAL, id="21-digits"),
    pytest.param("1e20", TOTAL, id="exponent-21-digits"),
    pytest.param("1" * 1001, "String value too large.", id="longer-than-1000"),
    pytest.param(
        # valid JSON that overflows a double: Python's json (PyJWT, Waldur) reads inf
        RawJson("1e400"),
        NOT_NUMBER,
        id="json-number-overflowing-double",
    ),
    pytest.param(
        # read exactly, not as the float 1e+20 (which has 21 digits in total)
        99999999999999999999,
        WHOLE,
        id="20-digit-int-above-2**64",
    ),
]


def _raw_amount_token(d: Demo, amount: Any) -> str:
    """Sign the payload text itself: 1e400 and integers >= 2**64 cannot be produced by the
    project's orjson signer, and Python's json would turn 1e400 into Infinity."""
    text = amount if isinstance(amount, RawJson) else json.dumps(amount)
    raw = f'{{"resource": "{d.resource}", "usages": [{{"type": "cpu_hours", "amount": {text}}}]}}'
    return hand_token(raw.encode(), d.secret)


@pytest.mark.parametrize(("amount", "message"), AMOUNTS_REJECTED)
def test_amount_rejected(client, runtime, demo, amount, message):
    body = {"customer": demo.provider, "data": _raw_amount_token(demo, amount)}
    assert_rejected(client, runtime, SET, body, 400, {"usages": [{"amount": [message]}]})


# ownership ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True])
def test_ownership_is_enforced(client, runtime, demo, dry_run):
    body = demo.body(report(demo, resource=demo.other_resource), dry_run=dry_run)
    assert_rejected(client, runtime, SET, body, 403, FORBIDDEN)


def test_ownership_can_be_switched_off_for_waldur_parity(fresh, demo):
    runtime, client = fresh(enforce_ownership=False)
    assert_accepted(client, runtime, demo.body(report(demo, resource=demo.other_resource)))


# reports that are accepted ----------------------------------------------------------------------

PAYLOAD_ACCEPTED: list[Any] = [
    pytest.param(lambda d: report(d), None, id="one-usage"),
    pytest.param(lambda d: {"resource": d.resource, "usages": []}, None, id="a-empty-usages"),
    pytest.param(
        lambda d: report(d, usage(), usage("ram_gb", 4), usage("storage_tb", "2"), usage("licence", 1)),
        None,
        id="k-every-reportable-billing-type",
    ),
    pytest.param(lambda d: report(d, usage(description="x" * 2000)), None, id="d-description-2000"),
    pytest.param(lambda d: report(d, usage(description="")), None, id="d-description-empty"),
    pytest.param(lambda d: report(d, usage(recurring=True)), None, id="e-recurring-true"),
    pytest.param(lambda d: report(d, usage(recurring="false")), None, id="e-recurring-string"),
    *[
        pytest.param(
            lambda d, p=policy: report(d, usage(missing_usage_policy=p)), None, id=f"e-policy-{policy}"
        )
        for policy in ("none", "reuse", "zero")
    ],
    pytest.param(
        lambda d: {"plan_period": d.plan_period, "usages": [usage()]},
        None,
        id="f-plan-period-instead-of-resource",
    ),
    pytest.param(
        lambda d: {"plan_period": uuid.UUID(d.plan_period).hex, "usages": [usage()]},
        None,
        id="f-plan-period-32-hex",
    ),
    pytest.param(
        lambda d: report(d, resource=uuid.UUID(d.resource).hex.upper()), None, id="h-resource-32-hex-upper"
    ),
    pytest.param(lambda d: report(d, resource=d.resource2), None, id="resource-without-periods"),
    pytest.param(lambda d: report(d, date=iso(_just_now())), None, id="m-date-now"),
    pytest.param(
        lambda d: report(d, usage("storage_tb"), date=iso(previous_month())),
        "previous",
        id="n-backfill-limit",
    ),
    pytest.param(
        lambda d: report(d, usage("licence"), date=iso(previous_month())), "previous", id="n-backfill-one"
    ),
    pytest.param(
        lambda d: report(d, usage("storage_tb"), usage("licence", 2), date=iso(previous_month())),
        "previous",
        id="n-backfill-limit-and-one",
    ),
    pytest.param(
        lambda d: report(d, usage("storage_tb"), date=previous_month().strftime("%Y-%m-%dT%H:%M:%S")),
        "previous",
        id="n-backfill-naive-date",
    ),
    pytest.param(lambda d: report(d, foo="bar", resource_name="x"), None, id="unknown-claims-ignored"),
]


@pytest.mark.parametrize(("make", "period"), PAYLOAD_ACCEPTED)
def test_payload_accepted(client, runtime, demo, make, period):
    receipt = assert_accepted(client, runtime, demo.body(make(demo)))
    moment = previous_month() if period == "previous" else now_utc()
    assert receipt["billing_period"] == period_of(moment)


def test_accepted_reports_get_increasing_sequences(client, runtime, demo):
    receipts = [
        assert_accepted(client, runtime, demo.body(report(demo, usage(amount=n)))) for n in range(1, 5)
    ]
    sequences = [r["sequence"] for r in receipts]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert len({r["id"] for r in receipts}) == len(receipts)
    assert {r["status_url"] for r in receipts} == {f"/api/usage-reports/{r['id']}/" for r in receipts}


def test_same_token_twice_is_accepted_twice(client, runtime, demo):
    """TOKEN_REPLAY_WINDOW defaults to 0: Waldur parity, usage is absolute."""
    body = demo.body(report(demo))
    first, second = (assert_accepted(client, runtime, body) for _ in range(2))
    assert second["sequence"] > first["sequence"] and second["id"] != first["id"]


def test_correctly_signed_report_within_the_body_limit_is_accepted(client, runtime, demo):
    """A token over 32 KiB is neither malformed nor wrongly signed: the body limit bounds it."""
    claims = report(demo, *[usage(amount=i, description="d" * 1800) for i in range(14)])
    body = demo.body(claims)
    size = len(json.dumps(body))
    assert len(body["data"]) > 32 * 1024 and size < runtime.settings.max_body_bytes
    assert_accepted(client, runtime, body)


def test_dry_run_queues_and_writes_nothing(fresh, demo):
    runtime, client = fresh()
    sequence_ahead_of_sql(runtime)
    journal_before, sql_before = journal_state(runtime), sql_counts(runtime)
    resp = send(client, SET, demo.body(report(demo, usage(amount="7")), dry_run=True))
    assert resp.status_code == 201, resp.text
    assert resp.json == {"dry_run": True, "billing_period": period_of(now_utc())}
    assert journal_state(runtime) == journal_before
    assert commit_all(runtime) == 0
    assert sql_counts(runtime) == sql_before
    # the same report without dry_run is queued and committed: the drain above had nothing
    assert_accepted(client, runtime, demo.body(report(demo, usage(amount="7"))))
    assert commit_all(runtime) == 1
    assert sql_counts(runtime) == (sql_before[0] + 1, sql_before[1] + 1)


def test_backfilled_report_is_committed_to_its_month(fresh, demo):
    runtime, client = fresh()
    sequence_ahead_of_sql(runtime)
    moment = previous_month()
    receipt = assert_accepted(
        client,
        runtime,
        demo.body(report(demo, usage("storage_tb", "3.5"), resource=demo.resource2, date=iso(moment))),
    )
    assert receipt["billing_period"] == period_of(moment)
    assert commit_all(runtime) == 1
    rows = usage_rows(runtime.engine, uuid.UUID(demo.resource2), moment.date().replace(day=1))
    assert [(r["component"], r["amount"], r["billing_period"]) for r in rows] == [
        ("storage_tb", "3.50", period_of(moment))
    ]


# --------------------------------------------------------------------------------------------
# the official client, Authorization headers


def _official(client: falcon.testing.TestClient) -> AuthenticatedClient:
    return AuthenticatedClient(
        base_url="http://testserver", token="some-user-token", httpx_args={"transport": _Through(client)}
    )


class _Through(httpx.BaseTransport):
    """httpx's sync client into Falcon's test client: the ASGI app in this process."""

    def __init__(self, client: falcon.testing.TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        result = self.client.simulate_request(
            request.method,
            request.url.path,
            query_string=request.url.query.decode() or None,
            headers=dict(request.headers),
            body=request.read(),
        )
        return httpx.Response(
            result.status_code, headers=list(result.headers.items()), content=result.content, request=request
        )


def test_official_client_set_usage_and_check_signature(client, runtime, demo):
    request = ServiceProviderSignatureRequest(customer=uuid.UUID(demo.provider), data=demo.sign(report(demo)))
    with _official(client) as official:
        before = journal_length(runtime)
        assert official_set.sync_detailed(client=official, body=request).status_code == 201
        assert journal_length(runtime) == before + 1
        assert official_check.sync_detailed(client=official, body=request).status_code == 200


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("authorization", ["Token x", "Token " + "0" * 40, "Bearer abc", "Basic !!"])
def test_authorization_header_is_ignored(client, runtime, demo, path, authorization):
    resp = send(client, path, demo.body(report(demo)), headers={"Authorization": authorization})
    assert resp.status_code == SUCCESS[path], resp.text


# --------------------------------------------------------------------------------------------
# hostile and odd bodies (both endpoints): never a 5xx


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def _too_big(d: Demo, limit: int) -> bytes:
    return json.dumps({"customer": d.provider, "data": "x" * (limit + 1)}).encode()


HOSTILE: list[Any] = [
    pytest.param(lambda d, n: _too_big(d, n), JSON, 413, None, id="json-over-max-body"),
    pytest.param(lambda d, n: b"data=" + b"x" * (n + 1), FORM, 413, None, id="form-over-max-body"),
    pytest.param(lambda d, n: b"x" * (n + 1), "text/plain", 413, None, id="text-over-max-body"),
    pytest.param(
        lambda d, n: b'{"customer": "\xff\xfe", "data": "x"}',
        JSON,
        400,
        "JSON parse error - ",
        id="invalid-utf8",
    ),
    pytest.param(lambda d, n: b'{"customer": ', JSON, 400, "JSON parse error - ", id="truncated-json"),
    pytest.param(lambda d, n: b"{'customer': 1}", JSON, 400, "JSON parse error - ", id="single-quotes"),
    pytest.param(lambda d, n: b'{"customer": NaN}', JSON, 400, "JSON parse error - ", id="NaN"),
    pytest.param(lambda d, n: b"\xef\xbb\xbf{}", JSON, 400, "JSON parse error - ", id="utf8-bom"),
    pytest.param(
        lambda d, n: b"[" * 20000 + b"]" * 20000, JSON, 400, "JSON parse error - ", id="deeply-nested-arrays"
    ),
    pytest.param(
        lambda d, n: b'{"a":' * 8000 + b"1" + b"}" * 8000,
        JSON,
        400,
        "JSON parse error - ",
        id="deeply-nested-objects",
    ),
    pytest.param(
        lambda d, n: (
            b'{"customer": "%s", "data": "x", "dry_run": ' % d.provider.encode()
            + b"[" * 500
            + b"]" * 500
            + b"}"
        ),
        JSON,
        400,
        {"dry_run": [NOT_BOOLEAN]},
        id="nested-but-parseable",
    ),
    pytest.param(
        lambda d, n: b"[]",
        JSON,
        400,
        {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]},
        id="json-array",
    ),
    pytest.param(
        lambda d, n: json.dumps([{"customer": d.provider, "data": _token(d)}]).encode(),
        JSON,
        400,
        {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]},
        id="json-array-of-valid-envelope",
    ),
    pytest.param(
        lambda d, n: b'"text"',
        JSON,
        400,
        {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]},
        id="json-string",
    ),
    pytest.param(
        lambda d, n: b"42",
        JSON,
        400,
        {"non_field_errors": ["Invalid data. Expected a dictionary, but got int."]},
        id="json-number",
    ),
    pytest.param(lambda d, n: b"null", JSON, 400, {"non_field_errors": ["No data provided"]}, id="json-null"),
    pytest.param(lambda d, n: b"", JSON, 400, {"customer": [REQUIRED], "data": [REQUIRED]}, id="empty-body"),
    pytest.param(
        lambda d, n: b"data=x&customer=" + d.provider.encode() + b"&dry_run=maybe",
        FORM,
        400,
        {"dry_run": [NOT_BOOLEAN]},
        id="form-field-error",
    ),
    # Django reads a form that is not UTF-8 as latin-1
    pytest.param(
        lambda d, n: b"customer=\xff&data=x", FORM, 400, {"customer": [dne("\u00ff")]}, id="form-invalid-utf8"
    ),
    pytest.param(
        lambda d, n: b"<xml/>",
        "application/xml",
        415,
        {"detail": 'Unsupported media type "application/xml" in request.'},
        id="xml-415",
    ),
    pytest.param(
        lambda d, n: b"customer=x",
        "text/plain",
        415,
        {"detail": 'Unsupported media type "text/plain" in request.'},
        id="text-415",
    ),
]


ENCODED: list[Any] = [
    pytest.param(lambda d, n: gzip.compress(b" " * (n * 50)), "gzip", 413, None, id="gzip-bomb"),
    pytest.param(lambda d, n: b"\x1f\x8b not really gzip", "gzip", 400, "detail", id="gzip-malformed"),
    pytest.param(lambda d, n: gzip.compress(b"[]")[:-6], "gzip", 400, "detail", id="gzip-truncated"),
    pytest.param(lambda d, n: b"{}", "br", 415, "detail", id="brotli-415"),
]


def assert_refused(resp: falcon.testing.Result, status: int, expected: Any) -> None:
    """``expected``: the exact body, a "... - " detail prefix, the one key, or None (detail)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert "Traceback" not in resp.text
    if isinstance(expected, dict):
        assert resp.json == expected
    elif expected and expected.endswith(" - "):
        assert resp.json["detail"].startswith(expected), resp.json
    elif expected:
        assert list(resp.json) == [expected], resp.json
    else:
        assert isinstance(resp.json["detail"], str)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(("make", "content_type", "status", "expected"), HOSTILE)
def test_hostile_bodies(client, runtime, demo, path, make, content_type, status, expected):
    before = journal_state(runtime)
    raw = make(demo, runtime.settings.max_body_bytes)
    resp = client.simulate_post(path, body=raw, headers={"Content-Type": content_type})
    assert_refused(resp, status, expected)
    assert journal_state(runtime) == before


ENCODED: list[Any] = [
    pytest.param(lambda d, n: gzip.compress(b" " * (n * 50)), "gzip", 413, None, id="gzip-bomb"),
    pytest.param(lambda d, n: b"\x1f\x8b not really gzip", "gzip", 400, "detail", id="gzip-malformed"),
    pytest.param(lambda d, n: gzip.compress(b"[]")[:-6], "gzip", 400, "detail", id="gzip-truncated"),
    pytest.param(lambda d, n: b"{}", "br", 415, "detail", id="unsupported-encoding"),
    pytest.param(
        lambda d, n: gzip.compress(json.dumps(demo_body(d)).encode()), "gzip", None, None, id="gzip-valid"
    ),
]


def demo_body(d: Demo) -> dict[str, Any]:
    return d.body(report(d))


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(("make", "encoding", "status", "expected"), ENCODED)
def test_content_encodings(client, runtime, demo, path, make, encoding, status, expected):
    before = journal_length(runtime)
    raw = make(demo, runtime.settings.max_body_bytes)
    resp = client.simulate_post(path, body=raw, headers={"Content-Type": JSON, "Content-Encoding": encoding})
    if status is None:
        assert resp.status_code == SUCCESS[path], resp.text
        assert journal_length(runtime) == before + (1 if path == SET else 0)
    else:
        assert_refused(resp, status, expected)
        assert journal_length(runtime) == before


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("dry_run", ["false", "true"])
def test_form_encoded_body_is_accepted(client, runtime, demo, path, dry_run):
    """Waldur also takes form-encoded bodies."""
    before = journal_length(runtime)
    raw = urlencode({"customer": demo.provider, "data": demo.sign(report(demo)), "dry_run": dry_run})
    resp = client.simulate_post(path, body=raw, headers={"Content-Type": FORM})
    assert resp.status_code == SUCCESS[path], resp.text
    queued = path == SET and dry_run == "false"
    assert journal_length(runtime) == before + (1 if queued else 0)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "content_type",
    # "+json" types and a missing Content-Type are DRF's 415s (tests/integration/test_parity_http.py)
    ["application/json; charset=utf-8", "APPLICATION/JSON", "*/*", "application/*"],
)
def test_json_content_type_variants(client, runtime, demo, path, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    raw = json.dumps(demo.body(report(demo))).encode()
    resp = client.simulate_post(path, body=raw, headers=headers)
    assert resp.status_code == SUCCESS[path], resp.text


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_methods_are_405(client, runtime, demo, path, method):
    before = journal_state(runtime)
    resp = client.simulate_request(method, path, json=demo.body(report(demo)))
    assert resp.status_code == 405, resp.text
    assert "POST" in resp.headers.get("allow", "")
    assert isinstance(resp.json["detail"], str)
    assert journal_state(runtime) == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/marketplace-public-api/set_usage",
        "/api/marketplace-public-api/check_signature",
        "/api/marketplace-public-api/",
        "/api/marketplace-public-api/x/",
        "/nope",
    ],
)
def test_unknown_paths_are_404(client, runtime, demo, path):
    before = journal_state(runtime)
    resp = client.simulate_post(path, json=demo.body(report(demo)))
    assert resp.status_code == 404, resp.text
    assert isinstance(resp.json["detail"], str)
    assert journal_state(runtime) == before


# --------------------------------------------------------------------------------------------
# dates the calendar cannot hold: a 4xx, never a 5xx


@pytest.mark.parametrize(
    "date",
    [
        pytest.param("0001-01-01T00:00:00+01:00", id="year-1-east-of-utc"),  # before year 1 in UTC
        pytest.param("0001-01-01T00:00:00+00:00", id="year-1-utc"),
        pytest.param("9999-12-31T23:59:59-01:00", id="year-9999-west-of-utc"),
    ],
)
def test_extreme_dates_are_not_5xx(client, runtime, demo, date):
    before = journal_state(runtime)
    resp = send(client, SET, demo.body(report(demo, usage("storage_tb"), date=date)))
    assert resp.status_code < 500, resp.text
    if resp.status_code != 201:
        assert resp.status_code == 400 and list(resp.json) == ["date"], resp.text
        assert journal_state(runtime) == before
