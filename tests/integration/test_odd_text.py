"""Text that PostgreSQL or orjson cannot take, inside a validly signed report: a clear 400
where DRF gives one, else accepted and committed; never a 503 or a commit that fails."""

from __future__ import annotations

import pytest

from tests.integration.test_contract import (
    SET,
    assert_accepted,
    assert_rejected,
    commit_all,
    hand_token,
)

NUL = "Null characters are not allowed."


def _raw(d, text: str) -> dict:
    """Sign the payload text itself (the JSON escapes reach our json.loads as written)."""
    return {"customer": d.provider, "data": hand_token(text.encode(), d.secret)}


def _payload(d, usage: str, extra: str = "") -> str:
    return f'{{"resource": "{d.resource}", "usages": [{usage}]{extra}}}'


@pytest.mark.parametrize(
    ("usage", "errors"),
    [
        pytest.param(
            '{"type": "cpu_hours", "amount": "1", "description": "a\\u0000b"}',
            {"description": [NUL]},
            id="nul-in-description",
        ),
        pytest.param(
            '{"type": "cpu_hours", "amount": "1", "description": "x\\ud800"}',
            {"description": ["Surrogate characters are not allowed: U+D800."]},
            id="surrogate-in-description",
        ),
        pytest.param('{"type": "cpu\\u0000hours", "amount": "1"}', {"type": [NUL]}, id="nul-in-type"),
    ],
)
def test_text_postgresql_cannot_hold_is_refused_as_drf_does(client, runtime, demo, usage, errors):
    assert_rejected(client, runtime, SET, _raw(demo, _payload(demo, usage)), 400, {"usages": [errors]})


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(', "note": 100000000000000000000000000000', id="integer-past-64-bits"),
        pytest.param(', "note": "\\ud800"', id="lone-surrogate-in-an-unknown-claim"),
        pytest.param(', "\\udfff": 1', id="lone-surrogate-in-a-key"),
    ],
)
def test_unknown_claims_orjson_refuses_are_accepted_and_committed(client, runtime, demo, extra):
    usage = '{"type": "cpu_hours", "amount": "4.5"}'
    assert_accepted(client, runtime, _raw(demo, _payload(demo, usage, extra)))
    assert commit_all(runtime) == 1
