"""Property-based tests (hypothesis), no sockets: amounts, billing periods, envelopes, report
claims against a small catalog, and a bounded fuzz of the token verifier and body decoders.

Each decision is checked against a small reference model written from the contract
(shared/docs/waldur-contract.md) and Django REST framework's documented rules, not against the
code under test; and every function must fail only with our 4xx exceptions, never anything else.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import hmac
import json
import os
import re
import time
import uuid
import zlib
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from api.body import gunzip, parse_json
from ingest.domain import signing
from ingest.domain.envelope import parse_envelope
from ingest.domain.errors import Forbidden, Rejected
from ingest.domain.model import (
    AmountError,
    CatalogSnapshot,
    Offering,
    PlanPeriod,
    Provider,
    Resource,
    month_start,
    month_start_instant,
    parse_amount,
)
from ingest.domain.validation import ValidReport, validate_report

UTC = dt.UTC
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# JSON-like values: what json.loads can hand us (big integers, inf and NaN included).
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "true", "0", "1.5", "NaN", "-Infinity", "1e400"])
)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = json_like) -> st.SearchStrategy[Any]:
    """``good`` three times in four, so the accepting paths are walked as much as the others."""
    return st.integers(min_value=0, max_value=3).flatmap(lambda n: good if n else bad)


# -- amounts: DRF DecimalField(max_digits=20, decimal_places=2) ----------------------------

PLAIN = re.compile(r"\s*([+-]?)([0-9]*)(?:\.([0-9]*))?\s*\Z")


def reference_amount(text: str) -> Decimal | None:
    """DRF's decision for a plain decimal literal (ASCII digits, optional sign and point):
    decimal places are counted as written (1.500 has 3), whole digits are the written ones
    without leading zeros, and a 20-digit total follows from 18 + 2. None: refused."""
    m = PLAIN.match(text)
    assert m is not None and (m.group(2) or m.group(3)), text
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    if len(text.strip()) > 1000 or len(frac) > 2 or len(whole.lstrip("0")) > 18:
        return None
    value = Fraction(int(whole or "0")) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return (-exact if sign == "-" else exact).quantize(Decimal("0.01"))


def _literal(sign: str, whole: str, frac: str | None, pad: tuple[str, str]) -> str:
    body = whole + ("." + frac if frac is not None else "")
    return pad[0] + sign + body + pad[1]


DIGITS = "0123456789"
signs = st.sampled_from(["", "-", "+"])
pads = st.tuples(st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " ", "\n"]))
plain_literals = st.one_of(
    st.builds(
        _literal,
        signs,
        st.text(DIGITS, min_size=1, max_size=21),
        st.none() | st.text(DIGITS, max_size=4),
        pads,
    ),
    st.builds(_literal, signs, st.just(""), st.text(DIGITS, min_size=1, max_size=4), pads),
)


@FAST
@given(plain_literals)
@example("0.30000000000000004")
@example("999999999999999999.99")
@example("1000000000000000000")
@example("12.500")
@example("-0.01")
@example("000000000000000000000001.5")
def test_amount_matches_the_drf_reference_for_plain_literals(text: str) -> None:
    expected = reference_amount(text)
    try:
        got = parse_amount(text)
    except AmountError:
        assert expected is None, f"{text!r} refused, the reference accepts {expected}"
        event("refused")
        return
    event("accepted")
    assert expected is not None, f"{text!r} accepted as {got}, the reference refuses it"
    assert got == expected and got.as_tuple().exponent == -2


@FAST
@given(st.integers(min_value=-(10**22), max_value=10**22))
def test_integer_amounts_need_at_most_18_digits(value: int) -> None:
    if len(str(abs(value))) <= 18:
        assert parse_amount(value) == value
    else:
        with pytest.raises(AmountError):
            parse_amount(value)


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_amounts_are_judged_by_their_shortest_repr_and_never_rounded(value: float) -> None:
    text = repr(value)
    try:
        got = parse_amount(value)
    except AmountError:
        if PLAIN.match(text):
            assert reference_amount(text) is None
        return
    assert Decimal(text) == got  # exactly what was sent: float noise is refused, not rounded
    if PLAIN.match(text):
        assert reference_amount(text) == got


@FAST
@given(json_like | st.text(max_size=60) | st.decimals(allow_nan=True, allow_infinity=True))
@example(True)
@example(None)
@example("NaN")
@example("-inf")
@example("1" * 1001)
@example(Decimal("sNaN"))
def test_any_amount_is_a_two_place_decimal_or_an_amount_error(value: Any) -> None:
    try:
        got = parse_amount(value)
    except AmountError:
        return
    assert not isinstance(value, bool) and value is not None
    assert got.is_finite() and got.as_tuple().exponent == -2
    assert got == Decimal(str(value).strip())  # never rounded
    assert abs(got) < Decimal(10) ** 18


# -- billing periods -----------------------------------------------------------------------

fixed_offsets = st.builds(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
zones = st.timezones() | fixed_offsets
SYSTEM_ZONES = "/usr/share/zoneinfo"  # what libc reads; zoneinfo reads the same files first
libc_zones = fixed_offsets | (
    # "right/..." zones count leap seconds in libc and not in zoneinfo: no common reference
    st.timezones().filter(
        lambda z: not z.key.startswith("right/") and os.path.exists(os.path.join(SYSTEM_ZONES, z.key))
    )
    if os.path.isdir(SYSTEM_ZONES)
    else st.nothing()
)
moments = st.datetimes(
    min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2099, 12, 31), timezones=st.just(UTC)
)


@contextlib.contextmanager
def process_timezone(name: str) -> Iterator[None]:
    """The C library's reading of the tz database: an implementation independent of zoneinfo."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def reference_month(moment: dt.datetime, tz: dt.tzinfo) -> dt.date:
    """The month of the wall-clock date at ``moment`` in ``tz``, worked out without zoneinfo:
    plain arithmetic for fixed offsets, libc's localtime() for named zones."""
    if isinstance(tz, dt.timezone):
        wall = moment.astimezone(UTC).replace(tzinfo=None) + tz.utcoffset(None)
        return dt.date(wall.year, wall.month, 1)
    assert isinstance(tz, ZoneInfo)
    with process_timezone(tz.key):
        local = time.localtime(moment.timestamp())
    return dt.date(local.tm_year, local.tm_mon, 1)


@FAST
@given(moments, libc_zones)
def test_billing_period_is_the_local_month_of_the_moment(moment: dt.datetime, tz: dt.tzinfo) -> None:
    assert month_start(moment, tz) == reference_month(moment, tz)  # type: ignore[arg-type]


month_ends = st.builds(
    lambda year, month, seconds: (
        dt.datetime(year + month // 12, month % 12 + 1, 1) - dt.timedelta(seconds=seconds)
    ),
    st.integers(min_value=1971, max_value=2098),
    st.integers(min_value=0, max_value=11),
    st.sampled_from([1, 0.000001, 60, 3600]).map(float),
)


@FAST
@given(month_ends, zones)
def test_the_last_instant_of_a_month_belongs_to_it_and_the_next_to_the_next(
    wall: dt.datetime, tz: dt.tzinfo
) -> None:
    """A report accepted at 23:59:59.999999 on the last day of a month (local time) belongs to
    that month; one microsecond after midnight, to the next (zones without a transition
    around that midnight)."""
    before = wall.replace(tzinfo=tz)
    after = (wall + dt.timedelta(seconds=3600 * 2)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=1, tzinfo=tz
    )
    for local in (before, after):  # skip wall times that do not exist or exist twice
        utc = local.astimezone(UTC)
        assume(utc.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None))
        assume(local.replace(fold=1).astimezone(UTC) == utc)
    assert month_start(before.astimezone(UTC), tz) == dt.date(wall.year, wall.month, 1)  # type: ignore[arg-type]
    assert month_start(after.astimezone(UTC), tz) == dt.date(after.year, after.month, 1)  # type: ignore[arg-type]


@FAST
@given(moments, zones)
def test_month_start_instant_opens_the_same_month(moment: dt.datetime, tz: dt.tzinfo) -> None:
    start = month_start_instant(moment, tz)  # type: ignore[arg-type]
    assert start.astimezone(UTC) <= moment
    assert month_start(start, tz) == month_start(moment, tz)  # type: ignore[arg-type]


# -- envelopes -----------------------------------------------------------------------------

KNOWN = uuid.UUID("7f3e2a10-0000-4000-8000-000000000001")
TRUE = {"t", "T", "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "1"}
FALSE = {"f", "F", "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "0"}


def reference_boolean(value: Any) -> bool | None:
    """DRF BooleanField (to_internal_value): set membership, so 1.0 and 0.0 count as 1 and 0."""
    if value is True or value is False:
        return value
    if isinstance(value, str):  # DRF 3.15 lower-cases strings first
        low = value.lower()
        return True if low in TRUE else False if low in FALSE else None
    if type(value) in (int, float) and value in (0, 1):
        return bool(value)
    return None


def reference_envelope(body: Any) -> tuple[str, set[str]] | tuple[str, tuple[uuid.UUID, str, bool]]:
    """("reject", fields in error) or ("accept", (customer, data, dry_run))."""
    if not isinstance(body, dict):
        return "reject", {"non_field_errors"}
    bad: set[str] = set()
    customer = body.get("customer")
    try:
        parsed = uuid.UUID(customer) if isinstance(customer, str) and len(customer) <= 64 else None
    except ValueError:
        parsed = None
    if parsed != KNOWN:
        bad.add("customer")
    data = body.get("data")
    if type(data) in (int, float):  # DRF CharField: numbers become str(), booleans do not
        data = str(data)
    if not isinstance(data, str) or not data.strip() or "\x00" in data or re.search("[\ud800-\udfff]", data):
        bad.add("data")
    dry_run = reference_boolean(body.get("dry_run", False))
    if dry_run is None:
        bad.add("dry_run")
    if bad:
        return "reject", bad
    return "accept", (KNOWN, data.strip(), bool(dry_run))  # type: ignore[union-attr]


envelopes = mostly(
    st.fixed_dictionaries(
        {
            "customer": mostly(
                st.sampled_from(
                    [str(KNOWN), KNOWN.hex, str(KNOWN).upper(), f"{{{KNOWN}}}", f"urn:uuid:{KNOWN}"]
                ),
                st.sampled_from([str(uuid.UUID(int=1)), "not-a-uuid", "", None]) | json_like,
            ),
            "data": mostly(
                st.text(min_size=1, max_size=20), st.sampled_from(["", "   ", "\n", None]) | json_like
            ),
        },
        optional={
            "dry_run": mostly(
                st.sampled_from(sorted(TRUE | FALSE) + ["TrUe", "oFf", "yEs", 0, 1, True, False]),
                st.sampled_from([2, 1.0, 0.0, "maybe", None, "", [True]]) | json_like,
            ),
            "extra": json_like,
        },
    )
)


@FAST
@given(envelopes)
@example({"customer": str(KNOWN), "data": " x ", "dry_run": "on"})
@example({"customer": KNOWN.hex, "data": "x", "dry_run": 1.0})
@example({"customer": str(KNOWN), "data": "x", "dry_run": None})
def test_parse_envelope_matches_the_reference_and_raises_only_rejected(body: Any) -> None:
    kind, detail = reference_envelope(body)
    try:
        envelope = parse_envelope(body, {KNOWN})
    except Rejected as exc:
        assert exc.status == 400
        assert kind == "reject", f"refused {body!r}: {exc.body}, the reference accepts it"
        assert set(exc.body) == detail
        event("rejected")
        return
    event("accepted")
    assert kind == "accept", f"accepted {body!r}, the reference refuses {detail}"
    assert (envelope.customer, envelope.data, envelope.dry_run) == detail


# -- report claims against a small catalog -------------------------------------------------

OWNER = KNOWN
OTHER = uuid.UUID(int=2)


def _u(n: int) -> uuid.UUID:
    return uuid.UUID(int=0x1000 + n)


OFFERING, OTHER_OFFERING, PLAN = _u(1), _u(2), _u(3)
COMPONENTS = {"cpu_hours": "usage", "storage_tb": "limit", "licence": "one", "support": "fixed"}
OPEN_PERIOD = PlanPeriod(_u(10), _u(20), dt.datetime(2020, 1, 1, tzinfo=UTC), None)
CLOSED_PERIOD = PlanPeriod(
    _u(11), _u(21), dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2021, 1, 1, tzinfo=UTC)
)
ORPHAN_PERIOD = PlanPeriod(_u(12), _u(99), None, None)  # its resource is gone
RESOURCES = [
    Resource(_u(20), OFFERING, "OK", PLAN, (OPEN_PERIOD,)),
    Resource(_u(21), OFFERING, "updating", PLAN, (CLOSED_PERIOD,)),
    Resource(_u(22), OFFERING, "Erred", PLAN),
    Resource(_u(23), OFFERING, "OK", None),
    Resource(_u(24), OTHER_OFFERING, "OK", PLAN),
    Resource(_u(25), _u(98), "TERMINATING", PLAN),  # an offering missing from the catalog
]
CATALOG = CatalogSnapshot(
    providers={OWNER: Provider(OWNER, "owner", "s" * 16), OTHER: Provider(OTHER, "other", "o" * 16)},
    offerings={
        OFFERING: Offering(OFFERING, OWNER, COMPONENTS),
        OTHER_OFFERING: Offering(OTHER_OFFERING, OTHER, COMPONENTS),
    },
    resources={r.uuid: r for r in RESOURCES},
    plan_periods={p.uuid: p for p in (OPEN_PERIOD, CLOSED_PERIOD, ORPHAN_PERIOD)},
)
NOW = dt.datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

resource_refs = st.sampled_from([str(r.uuid) for r in RESOURCES] + [_u(20).hex])
period_refs = st.sampled_from([str(p.uuid) for p in CATALOG.plan_periods.values()])
unknown_refs = st.sampled_from([str(_u(77)), "x", "", _u(20).hex + "0"]) | json_like
dates = mostly(
    st.datetimes(
        min_value=dt.datetime(2020, 1, 1),
        max_value=dt.datetime(2035, 1, 1),
        timezones=st.one_of(st.none(), zones),
    ).map(dt.datetime.isoformat),
    st.sampled_from(
        [
            "2026-11-26",
            "2026-10-31T23:59:59+00:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "2026-13-01",
            " 2026-11-01T00:00Z",
            None,
        ]
    )
    | json_like,
)
amounts = mostly(
    st.decimals(min_value=-(10**6), max_value=10**6, places=2).map(str) | st.integers(-99, 99),
    plain_literals | st.floats() | st.sampled_from(["1e2", "NaN", "0E+19", None]) | json_like,
)
lines = mostly(
    st.fixed_dictionaries(
        {
            "type": mostly(
                st.sampled_from([*COMPONENTS, " cpu_hours "]), st.sampled_from(["", "gpu", None]) | json_like
            ),
            "amount": amounts,
        },
        optional={
            "description": mostly(st.text(max_size=5), st.just("x" * 2001) | json_like),
            "recurring": mostly(st.booleans(), st.sampled_from(["yes", 1, None, "x"]) | json_like),
            "missing_usage_policy": mostly(
                st.sampled_from(["none", "reuse", "zero"]), st.sampled_from(["bad", None]) | json_like
            ),
        },
    )
)
messy_claims = st.fixed_dictionaries(
    {"usages": mostly(st.lists(lines, max_size=3))},
    optional={
        "resource": mostly(resource_refs, unknown_refs),
        "plan_period": st.one_of(period_refs, unknown_refs),
        "date": dates,
        "iat": json_like,
    },
)
reportable_lines = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["cpu_hours", "storage_tb", "licence"]),
        "amount": st.decimals(min_value=-(10**6), max_value=10**6, places=2).map(str),
    },
    optional={
        "description": st.text(max_size=5),
        "recurring": st.booleans(),
        "missing_usage_policy": st.sampled_from(["none", "reuse", "zero"]),
    },
)


@st.composite
def claims_and_now(draw: st.DrawFn) -> tuple[dict[str, Any], dt.datetime]:
    """Claims, mostly plausible (an owned resource, reportable lines, a recent date), and the
    moment of acceptance they are judged at."""
    now = draw(
        st.datetimes(
            min_value=dt.datetime(2021, 1, 1), max_value=dt.datetime(2035, 1, 1), timezones=st.just(UTC)
        )
    )
    recent = st.builds(
        lambda back, tz: (now - back).astimezone(tz).isoformat(),
        st.timedeltas(min_value=dt.timedelta(hours=-1), max_value=dt.timedelta(days=120)),
        zones,
    )
    plausible = st.fixed_dictionaries(
        {"resource": resource_refs, "usages": st.lists(reportable_lines, max_size=3)},
        optional={"date": recent, "plan_period": period_refs},
    )
    return draw(mostly(plausible, messy_claims)), now


@FAST
@given(claims_and_now(), st.sampled_from([OWNER, OTHER]), zones, st.booleans())
@example(
    ({"resource": str(_u(20)), "usages": [{"type": "cpu_hours", "amount": "1.5"}]}, NOW), OWNER, UTC, True
)
@example(({"plan_period": str(_u(12)), "usages": []}, NOW), OWNER, UTC, True)
@example(({"resource": str(_u(25)), "usages": [{"type": "cpu_hours", "amount": 1}]}, NOW), OWNER, UTC, False)
def test_validate_report_raises_only_rejected_and_keeps_its_invariants(
    claims_now: tuple[dict[str, Any], dt.datetime], customer: uuid.UUID, tz: dt.tzinfo, enforce: bool
) -> None:
    claims, now = claims_now
    try:
        report = validate_report(claims, CATALOG, customer, now, tz, enforce)  # type: ignore[arg-type]
    except Forbidden as exc:
        assert exc.status == 403 and enforce
        event("403")
        return
    except Rejected as exc:
        assert exc.status == 400 and exc.body
        event(f"400 {sorted(exc.body)}")
        return
    event("valid")
    assert isinstance(report, ValidReport)
    resource = report.resource
    assert resource.state.upper() in {"OK", "UPDATING", "TERMINATING"} and resource.plan
    if enforce:
        assert CATALOG.owner_of(resource) == customer
    components = CATALOG.components_of(resource)
    assert all(components.get(line.type) in {"usage", "limit", "one"} for line in report.lines)
    assert report.date <= now
    assert report.billing_period == month_start(report.date, tz)  # type: ignore[arg-type]
    if report.billing_period < month_start(now, tz):  # type: ignore[arg-type]
        assert all(components[line.type] in {"limit", "one"} for line in report.lines)
    for line in report.lines:
        assert line.amount.as_tuple().exponent == -2 and line.type == line.type.strip()
        assert line.missing_usage_policy in {"none", "reuse", "zero"}


# -- tokens and bodies: bounded fuzz -------------------------------------------------------

SECRET = "s3cr3t-0123456789"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(header: bytes, payload: bytes, secret: str = SECRET) -> str:
    """A token correctly signed HS256 over arbitrary header and payload bytes."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity are written as such


headers = mostly(
    st.fixed_dictionaries(
        {"alg": mostly(st.just("HS256"), st.sampled_from(["none", "HS512", "RS256", "hs256"]))},
        optional={"typ": st.sampled_from(["JWT", "jwt"]) | json_like, "kid": json_like, "jku": json_like},
    )
    | st.fixed_dictionaries({"alg": st.just("HS256")}, optional={"crit": json_like, "b64": json_like}),
    json_like,
).map(_json_bytes) | st.binary(max_size=40)
around_now = st.floats(min_value=-3600, max_value=3600).map(lambda d: time.time() + d)
registered = mostly(around_now | around_now.map(int), json_like)
payloads = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "exp": registered,
            "nbf": registered,
            "iat": registered,
            "aud": json_like,
            "usages": json_like,
        },
    ),
    json_like,
).map(_json_bytes) | st.binary(max_size=60)
segment = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.", max_size=30
)
raw_tokens = st.one_of(
    st.text(max_size=80),
    st.lists(segment, min_size=1, max_size=5).map(".".join),
    st.binary(max_size=80),
    st.binary(max_size=80).map(bytearray),
)


def _verify_only_rejects(token: Any, require_iat: bool, max_age: float) -> None:
    try:
        claims = signing.verify(token, [SECRET, "previous-secret-0"], time.time(), require_iat, max_age)
    except Rejected as exc:
        assert exc.status == 400 and exc.body == {"non_field_errors": [signing.SIGNATURE_FAILED]}
        event("rejected")
        return
    event("verified")
    assert isinstance(claims, dict) and "aud" not in claims


@FUZZ
@given(raw_tokens, st.booleans(), st.sampled_from([0.0, 300.0]))
@example("..", False, 0.0)
@example("a" * (signing.MAX_TOKEN_BYTES + 1), False, 0.0)
@example("é.é.é", False, 0.0)
def test_verify_fuzz_raw_tokens_only_rejected(token: Any, require_iat: bool, max_age: float) -> None:
    _verify_only_rejects(token, require_iat, max_age)


@FUZZ
@given(headers, payloads, st.booleans(), st.sampled_from([0.0, 300.0]))
@example(b'{"alg":"HS256"}', b'{"exp": NaN}', False, 0.0)
@example(b'{"alg":"HS256"}', b'{"iat": -Infinity}', True, 300.0)
@example(b'{"alg":"HS256","b64":false}', b"{}", False, 0.0)
@example(b'{"alg":"HS256","crit":["exp"]}', b"{}", False, 0.0)
@example(b'["HS256"]', b"{}", False, 0.0)
@example(b'{"alg":"HS256"}', b'{"a": ' * 5000 + b"1" + b"}" * 5000, False, 0.0)
@example(b'{"alg":"HS256"}', b'{"exp": 1' + b"0" * 5000 + b"}", False, 0.0)
def test_verify_fuzz_signed_headers_and_payloads_only_rejected(
    header: bytes, payload: bytes, require_iat: bool, max_age: float
) -> None:
    """Correctly signed, so the fuzz reaches header checks and the payload decoder."""
    token = forge(header, payload)
    _verify_only_rejects(token, require_iat, max_age)
    with contextlib.suppress(Rejected):
        claims = signing.verify(token, SECRET, time.time(), require_iat, max_age)
        for name in ("exp", "nbf", "iat"):  # a registered claim that passed is a real number
            if name in claims:
                value = claims[name]
                assert type(value) in (int, float) and value == value and abs(value) != float("inf")


@FUZZ
@given(
    st.binary(max_size=200)
    | json_like.map(_json_bytes)
    | st.sampled_from([b'"\xff"', b"\xef\xbb\xbf{}", b"NaN", b"1e400", b"1" * 5000])
)
@example(b"[" * 100_000)
def test_parse_json_only_rejected(raw: bytes) -> None:
    try:
        parse_json(raw)
    except Rejected as exc:
        assert exc.status == 400 and exc.body["detail"].startswith("JSON parse error - ")


@FUZZ
@given(
    st.binary(max_size=200)
    | st.binary(max_size=5000).map(gzip.compress)
    | st.binary(max_size=300).map(lambda b: gzip.compress(b)[: len(b) // 2 + 10]),
    st.integers(min_value=0, max_value=4000),
)
@example(gzip.compress(b"\0" * 1_000_000), 65536)
@example(gzip.compress(b"{}") + b"trailing", 100)
def test_gunzip_only_rejected_and_bounded(raw: bytes, limit: int) -> None:
    try:
        out = gunzip(raw, limit)
    except Rejected as exc:
        assert exc.status in (400, 413)
        return
    assert len(out) <= limit
    assert out == zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw)
