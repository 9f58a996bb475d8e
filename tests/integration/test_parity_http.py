"""HTTP-layer parity with a running Waldur 7.0.7 (DRF 3.15.2), byte for byte where we match it,
and the deliberate differences pinned so they stay deliberate.

Bytes are compared raw (``resp.content``): DRF renders compact JSON, non-ASCII as UTF-8.
"""

from __future__ import annotations

import json
import uuid
import warnings
from typing import Any
from urllib.parse import urlencode

import falcon.testing
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from ingest import bootstrap
from tests.helpers import Demo

CHECK = "/api/marketplace-public-api/check_signature/"
SET = "/api/marketplace-public-api/set_usage/"
SETS = "/api/marketplace-public-api/set_usages/"
SINGLE = [pytest.param(CHECK, id="check_signature"), pytest.param(SET, id="set_usage")]
ALL = [*SINGLE, pytest.param(SETS, id="set_usages")]
SUCCESS = {CHECK: 200, SET: 201, SETS: 207}
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
REQUIRED_BOTH = b'{"customer":["This field is required."],"data":["This field is required."]}'


def claims(d: Demo, **extra: Any) -> dict[str, Any]:
    return {"resource": d.resource, "usages": [{"type": "cpu_hours", "amount": "1"}], **extra}


def envelope(d: Demo, path: str, **extra: Any) -> dict[str, Any]:
    """A valid body for ``path``: the batch endpoint takes ``reports`` instead of ``data``."""
    token = d.sign(claims(d))
    if path == SETS:
        return {"customer": d.provider, "reports": [token], **extra}
    return {"customer": d.provider, "data": token, **extra}


def journal(rt: bootstrap.Runtime) -> tuple[int, bytes | None]:
    q = rt.queue
    return int(q.client.xlen(q.stream)), q.client.get(q.seq_key)


def post(
    client: falcon.testing.TestClient, path: str, raw: bytes, content_type: str | None = JSON, **headers: str
) -> falcon.testing.Result:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.simulate_post(path, body=raw, headers=headers)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]] | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, (filename, content) in (files or {}).items():
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + content
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def refused(resp: falcon.testing.Result, status: int, body: bytes) -> None:
    assert resp.status_code == status, resp.text
    assert resp.content == body
    assert resp.headers["content-type"] == JSON


# -- item 3: null, empty and whitespace-only bodies --------------------------------------------


@pytest.mark.parametrize("path", ALL)
def test_a_json_null_body_is_no_data_provided(client, runtime, path):
    before = journal(runtime)
    refused(post(client, path, b"null"), 400, b'{"non_field_errors":["No data provided"]}')
    assert journal(runtime) == before


@pytest.mark.parametrize("path", SINGLE)
@pytest.mark.parametrize("content_type", [None, JSON, FORM, "text/plain", "multipart/form-data"])
def test_an_empty_body_is_an_empty_form_whatever_the_content_type(client, runtime, path, content_type):
    """DRF's Request._parse answers {} for a body of zero bytes before it looks at the type."""
    refused(post(client, path, b"", content_type), 400, REQUIRED_BOTH)


def test_an_empty_batch_body_is_its_required_fields(client):
    resp = post(client, SETS, b"", None)
    assert resp.status_code == 400
    assert resp.json == {"customer": ["This field is required."], "reports": ["This field is required."]}


@pytest.mark.parametrize("path", ALL)
def test_a_whitespace_only_body_goes_to_its_parser(client, runtime, path):
    before = journal(runtime)
    refused(
        post(client, path, b"  "),
        400,
        b'{"detail":"JSON parse error - Expecting value: line 1 column 3 (char 2)"}',
    )
    refused(post(client, path, b"  ", None), 415, b'{"detail":"Unsupported media type \\"\\" in request."}')
    assert journal(runtime) == before


# -- item 4: NaN and the infinities -------------------------------------------------------------


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_out_of_range_floats_are_quoted_as_drf_quotes_them(client, path, constant):
    raw = b'{"customer": "x", "data": %s}' % constant.encode()
    expected = (
        f'{{"detail":"JSON parse error - Out of range float values are not JSON compliant: \'{constant}\'"}}'
    ).encode()
    refused(post(client, path, raw), 400, expected)


# -- item 5: media types, forms, multipart ------------------------------------------------------


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain; charset=utf-8", "application/vnd.api+json", "text/*", "application/xml"],
)
def test_unsupported_media_types_are_415_echoing_the_header(client, runtime, demo, path, content_type):
    before = journal(runtime)
    raw = json.dumps(envelope(demo, path)).encode()
    echoed = json.dumps(content_type or "")[1:-1]
    expected = ('{"detail":"Unsupported media type \\"' + echoed + '\\" in request."}').encode()
    refused(post(client, path, raw, content_type), 415, expected)
    assert journal(runtime) == before


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize(
    "content_type",
    ["*/*", "application/*", "*/json", "APPLICATION/JSON; charset=utf-8", "application/json;v=2"],
)
def test_json_and_wildcard_types_are_parsed_as_json(client, demo, path, content_type):
    resp = post(client, path, json.dumps(envelope(demo, path, dry_run=True)).encode(), content_type)
    assert resp.status_code == SUCCESS[path], resp.text


@pytest.mark.parametrize("path", SINGLE)
def test_a_signed_form_encoded_report_is_verified_and_journaled(client, runtime, demo, path):
    before, _seq = journal(runtime)
    raw = urlencode({"customer": uuid.UUID(demo.provider).hex, "data": demo.sign(claims(demo))}).encode()
    resp = post(client, path, raw, FORM)
    assert resp.status_code == SUCCESS[path], resp.text
    assert journal(runtime)[0] == before + (1 if path == SET else 0)
    if path == SET:
        assert resp.json["status"] == "queued"


def test_a_blank_form_dry_run_is_false_but_a_blank_json_one_is_invalid(client, runtime, demo):
    before, _seq = journal(runtime)
    raw = urlencode({"customer": demo.provider, "data": demo.sign(claims(demo)), "dry_run": ""}).encode()
    resp = post(client, SET, raw, FORM)
    assert resp.status_code == 201 and "id" in resp.json, resp.text
    assert journal(runtime)[0] == before + 1
    refused(
        post(client, SET, json.dumps({**envelope(demo, SET), "dry_run": ""}).encode()),
        400,
        b'{"dry_run":["Must be a valid boolean."]}',
    )


def test_form_bytes_that_are_not_utf8_are_read_as_latin1(client, demo):
    raw = b"customer=\xff&data=" + demo.sign(claims(demo)).encode()
    refused(post(client, SET, raw, FORM), 400, '{"customer":["Object with uuid=ÿ does not exist."]}'.encode())


@pytest.mark.parametrize("path", SINGLE)
def test_a_signed_multipart_report_is_verified_and_journaled(client, runtime, demo, path):
    before, _seq = journal(runtime)
    raw, content_type = multipart(
        {"customer": demo.provider, "data": demo.sign(claims(demo)), "dry_run": "false"}
    )
    resp = post(client, path, raw, content_type)
    assert resp.status_code == SUCCESS[path], resp.text
    assert journal(runtime)[0] == before + (1 if path == SET else 0)


def test_multipart_errors_are_drf_answers(client, runtime, demo):
    before = journal(runtime)
    raw, content_type = multipart({"customer": demo.provider}, {"data": ("token.txt", b"a.b.c")})
    refused(post(client, SET, raw, content_type), 400, b'{"data":["Not a valid string."]}')
    refused(
        post(client, SET, raw, "multipart/form-data"),
        400,
        b'{"detail":"Multipart form parse error - Invalid boundary in multipart: None"}',
    )
    garbage = post(client, SET, b"not multipart at all", content_type)
    assert garbage.status_code == 400 and garbage.json["detail"].startswith("Multipart form parse error - ")
    assert journal(runtime) == before


def test_multipart_is_bounded_like_any_body(client, runtime, demo):
    raw, content_type = multipart({"customer": demo.provider, "data": "x" * runtime.settings.max_body_bytes})
    resp = post(client, SET, raw, content_type)
    assert resp.status_code == 413, resp.text


# -- item 6: empty answers carry no Content-Type ------------------------------------------------


def test_check_signatures_empty_200_has_no_content_type(client, demo):
    resp = post(client, CHECK, json.dumps(envelope(demo, CHECK)).encode())
    assert resp.status_code == 200
    assert resp.content == b""
    assert "content-type" not in resp.headers
    assert resp.headers["content-length"] == "0"


def test_set_usages_201_carries_its_json_receipt(client, demo):
    """Deliberate difference: Waldur's 201 is empty; ours is a receipt (the client ignores it)."""
    resp = post(client, SET, json.dumps(envelope(demo, SET)).encode())
    assert resp.status_code == 201
    assert resp.headers["content-type"] == JSON
    assert set(resp.json) == {"id", "sequence", "billing_period", "status", "status_url"}


# -- item 7: Authorization: Token is ignored ----------------------------------------------------


@pytest.mark.parametrize("path", SINGLE)
@pytest.mark.parametrize("authorization", ["Token not-a-real-key", "Token", "Token a b", "token \xff"])
def test_a_user_token_header_is_ignored(client, runtime, demo, path, authorization):
    """Deliberate difference: Waldur answers 401 for an invalid user token, before it parses the
    body; we hold no user tokens, so the header changes nothing (nor does ?x-auth-token=)."""
    good = json.dumps(envelope(demo, path)).encode()
    resp = post(client, path, good, Authorization=authorization)
    assert resp.status_code == SUCCESS[path], resp.text
    broken = post(client, path, b"{nope", Authorization=authorization)
    assert broken.status_code == 400 and broken.json["detail"].startswith("JSON parse error - ")
    query = client.simulate_post(
        path, body=good, params={"x-auth-token": "not-a-real-key"}, headers={"Content-Type": JSON}
    )
    assert query.status_code == SUCCESS[path], query.text


# -- rendering: lone surrogates and U+2028 in echoed values -------------------------------------


@pytest.mark.parametrize("path", ALL)
def test_a_lone_surrogate_echoed_in_a_message_is_a_400_not_a_5xx(client, runtime, path):
    """Waldur answers 500 here (its renderer cannot encode the message); we answer the 400 with
    the value escaped to ASCII."""
    before = journal(runtime)
    body = {"customer": "\ud800", "data": "x", "reports": []}
    resp = post(client, path, json.dumps(body).encode())
    refused(resp, 400, b'{"customer":["Object with uuid=\\ud800 does not exist."]}')
    assert resp.json == {"customer": ["Object with uuid=\ud800 does not exist."]}
    assert journal(runtime) == before


def test_a_lone_surrogate_echoed_from_a_signed_payload_is_a_400(client, runtime, demo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        token = jwt.encode(claims(demo, resource="\udfff"), demo.secret, algorithm="HS256")
    resp = post(client, SET, json.dumps({"customer": demo.provider, "data": token}).encode())
    refused(resp, 400, b'{"resource":["Object with uuid=\\udfff does not exist."]}')


def test_line_and_paragraph_separators_are_escaped_as_drf_does(client):
    resp = post(
        client, SET, json.dumps({"customer": "a\u2028b\u2029c", "data": "x"}, ensure_ascii=False).encode()
    )
    refused(resp, 400, b'{"customer":["Object with uuid=a\\u2028b\\u2029c does not exist."]}')
    resp = post(client, SET, json.dumps({"customer": "\u00e9", "data": "x"}).encode())
    refused(resp, 400, '{"customer":["Object with uuid=é does not exist."]}'.encode())
