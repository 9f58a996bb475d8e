"""ingest.domain.validation and ingest.domain.model.parse_amount against a hand-built CatalogSnapshot, with a
fixed clock: the contract's rules with exact bodies, the calendar edges, no I/O."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.domain.envelope import parse_boolean, parse_envelope
from ingest.domain.errors import Forbidden, Rejected
from ingest.domain.model import (
    AmountError,
    CatalogSnapshot,
    Offering,
    PlanPeriod,
    Provider,
    Resource,
    parse_amount,
)
from ingest.domain.validation import validate_report

UTC = ZoneInfo("UTC")
TALLINN = ZoneInfo("Europe/Tallinn")  # UTC+2 in November
NOW = dt.datetime(2026, 11, 15, 12, 0, tzinfo=dt.UTC)
MONTH_START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

PROVIDER, OTHER = uuid.uuid4(), uuid.uuid4()
OFFERING, OTHER_OFFERING = uuid.uuid4(), uuid.uuid4()
PLAN = uuid.uuid4()
COMPONENTS = {"cpu": "usage", "ram": "usage", "storage": "limit", "licence": "one", "support": "fixed"}


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


R, R_UPDATING, R_TERMINATING, R_ERRED, R_CREATING = (_uuid() for _ in range(5))
R_PLANLESS, R_CLOSED, R_OTHER, R_BOUNDARY, R_ORPHAN_PERIOD = (_uuid() for _ in range(5))
R_PLANLESS_CREATING = _uuid()
PP_OLD = PlanPeriod(
    _uuid(), R, dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 10, 20, tzinfo=dt.UTC)
)
PP_NEW = PlanPeriod(_uuid(), R, dt.datetime(2026, 10, 20, tzinfo=dt.UTC), None)
PP_CLOSED = PlanPeriod(
    _uuid(), R_CLOSED, dt.datetime(2020, 1, 1, tzinfo=dt.UTC), MONTH_START - dt.timedelta(microseconds=1)
)
PP_AT_MONTH_START = PlanPeriod(_uuid(), R_BOUNDARY, dt.datetime(2020, 1, 1, tzinfo=dt.UTC), MONTH_START)
PP_ORPHAN = PlanPeriod(_uuid(), R_ORPHAN_PERIOD, None, None)  # its resource is not in the catalog


def _catalog() -> CatalogSnapshot:
    resources = [
        Resource(R, OFFERING, "OK", PLAN, (PP_OLD, PP_NEW)),
        Resource(R_UPDATING, OFFERING, "Updating", PLAN),
        Resource(R_TERMINATING, OFFERING, "TERMINATING", PLAN),
        Resource(R_ERRED, OFFERING, "Erred", PLAN),
        Resource(R_CREATING, OFFERING, "Creating", PLAN),
        Resource(R_PLANLESS, OFFERING, "OK", None),
        Resource(R_PLANLESS_CREATING, OFFERING, "Creating", None),
        Resource(R_CLOSED, OFFERING, "OK", PLAN, (PP_CLOSED,)),
        Resource(R_OTHER, OTHER_OFFERING, "OK", PLAN),
        Resource(R_BOUNDARY, OFFERING, "OK", PLAN, (PP_AT_MONTH_START,)),
    ]
    periods = [PP_OLD, PP_NEW, PP_CLOSED, PP_AT_MONTH_START, PP_ORPHAN]
    return CatalogSnapshot(
        {PROVIDER: Provider(PROVIDER, "p", "secret-1234567890"), OTHER: Provider(OTHER, "o", None)},
        {
            OFFERING: Offering(OFFERING, PROVIDER, COMPONENTS),
            OTHER_OFFERING: Offering(OTHER_OFFERING, OTHER, COMPONENTS),
        },
        {r.uuid: r for r in resources},
        {p.uuid: p for p in periods},
        1,
    )


CATALOG = _catalog()


def use(type_: Any = "cpu", amount: Any = "1", **extra: Any) -> dict[str, Any]:
    return {"type": type_, "amount": amount, **extra}


def claims(*usages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resource": str(R), "usages": list(usages) or [use()], **extra}


def validate(c: dict[str, Any], tz: ZoneInfo = UTC, now: dt.datetime = NOW, enforce_ownership: bool = True):
    return validate_report(c, CATALOG, PROVIDER, now, tz, enforce_ownership)


def rejected(c: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(Rejected) as info:
        validate(c, **kwargs)
    assert info.value.status == 400
    return info.value.body


# ----------------------------------------------------------------------------- parse_amount


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12.50", "12.50"),
        (12.5, "12.50"),
        ("-3", "-3.00"),
        (-3, "-3.00"),
        (0, "0.00"),
        (Decimal("1.1"), "1.10"),
        ("1e2", "100.00"),
        (" 7 ", "7.00"),
        (150.0, "150.00"),
        ("999999999999999999.99", "999999999999999999.99"),
        ("-0.01", "-0.01"),
    ],
)
def test_parse_amount_accepts_exactly(value, expected):
    parsed = parse_amount(value)
    assert str(parsed) == expected
    assert parsed.as_tuple().exponent == -2


PLACES = "Ensure that there are no more than 2 decimal places."
WHOLE = "Ensure that there are no more than 18 digits before the decimal point."
TOTAL = "Ensure that there are no more than 20 digits in total."
NUMBER = "A valid number is required."


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1.234", PLACES),
        ("1.230", PLACES),
        (0.1 + 0.2, PLACES),
        (1e-7, PLACES),
        ("0e-5", PLACES),
        (Decimal("0.001"), PLACES),
        ("NaN", NUMBER),
        ("sNaN", NUMBER),
        ("Infinity", NUMBER),
        ("-inf", NUMBER),
        (float("nan"), NUMBER),
        (float("inf"), NUMBER),
        (Decimal("NaN"), NUMBER),
        (True, NUMBER),
        (False, NUMBER),
        (None, NUMBER),
        ("abc", NUMBER),
        ("", NUMBER),
        ("1,5", NUMBER),
        (b"1", NUMBER),
        ([1], NUMBER),
        ({"a": 1}, NUMBER),
        ("1234567890123456789", WHOLE),
        (1234567890123456789, WHOLE),
        ("-1234567890123456789", WHOLE),
        ("123456789012345678901", TOTAL),
        ("1e20", TOTAL),
        ("0e999", TOTAL),
        ("1" * 1001, "String value too large."),
    ],
)
def test_parse_amount_rejects_with_drf_messages(value, message):
    with pytest.raises(AmountError) as info:
        parse_amount(value)
    assert str(info.value) == message


@given(
    whole=st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1),
    cents=st.integers(min_value=0, max_value=99),
)
def test_parse_amount_is_exact_for_every_two_place_decimal(whole, cents):
    text = f"{whole}.{cents:02d}" if whole >= 0 else f"-{-whole}.{cents:02d}"
    assert parse_amount(text) == Decimal(text)


@given(
    st.decimals(min_value=Decimal(-(10**16)) + 1, max_value=Decimal(10**16) - 1, places=3).filter(
        lambda d: d.as_tuple().digits[-1] != 0
    )
)
def test_parse_amount_never_rounds(value):
    for form in (str(value), value):
        with pytest.raises(AmountError) as info:
            parse_amount(form)
        assert str(info.value) == PLACES


# ----------------------------------------------------------------------------- parse_boolean


@pytest.mark.parametrize(
    "value", [True, "true", "True", "TRUE", "TrUe", "1", 1, 1.0, "yes", "yEs", "on", "oN", "t", "T", "y", "Y"]
)
def test_parse_boolean_true(value):
    assert parse_boolean(value) is True


@pytest.mark.parametrize(
    "value",
    [False, "false", "False", "FALSE", "fAlSe", "0", 0, 0.0, -0.0, "no", "nO", "off", "oFf", "f", "F", "n"],
)
def test_parse_boolean_false(value):
    assert parse_boolean(value) is False


@pytest.mark.parametrize(
    "value", ["maybe", "", " true", "true ", "truee", "01", 2, -1, 0.5, 2.0, float("nan"), None, [], {}, b"1"]
)
def test_parse_boolean_refuses(value):
    assert parse_boolean(value) is None


# ----------------------------------------------------------------------------- parse_envelope


def envelope_errors(body: Any, known: Any = CATALOG.providers) -> dict[str, Any]:
    with pytest.raises(Rejected) as info:
        parse_envelope(body, known)
    assert info.value.status == 400
    return info.value.body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}),
        ("x", {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}),
        ({}, {"customer": ["This field is required."], "data": ["This field is required."]}),
        (
            {"customer": str(OTHER_OFFERING), "data": "t"},
            {"customer": [f"Object with uuid={OTHER_OFFERING} does not exist."]},
        ),
        (
            {"customer": "x", "data": [1], "dry_run": "maybe"},
            {
                "customer": ["Object with uuid=x does not exist."],
                "data": ["Not a valid string."],
                "dry_run": ["Must be a valid boolean."],
            },
        ),
        ({"customer": str(PROVIDER), "data": "  "}, {"data": ["This field may not be blank."]}),
    ],
)
def test_parse_envelope_rejections(body, expected):
    errors = envelope_errors(body)
    assert errors == expected
    assert list(errors) == list(expected)  # field order


def test_parse_envelope_accepts_32_hex_and_trims_data():
    env = parse_envelope({"customer": PROVIDER.hex, "data": " tok \n"}, CATALOG.providers)
    assert (env.customer, env.data, env.dry_run) == (PROVIDER, "tok", False)


def test_parse_envelope_without_a_customer_set_checks_only_the_form():
    env = parse_envelope({"customer": str(OFFERING), "data": "t", "dry_run": "on"}, None)
    assert (env.customer, env.dry_run) == (OFFERING, True)


# ----------------------------------------------------------------------------- validate_report

BACKFILL = (
    "Service providers can only specify date for limit-based or prepaid billing "
    "components when backfilling past billing periods."
)


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        pytest.param({"resource": str(R)}, {"usages": ["This field is required."]}, id="a"),
        pytest.param(
            claims(use(), use("")), {"usages": [{}, {"type": ["This field may not be blank."]}]}, id="b"
        ),
        pytest.param(
            claims(use(amount="1.234"), use(amount=True)),
            {"usages": [{"amount": [PLACES]}, {"amount": [NUMBER]}]},
            id="c",
        ),
        pytest.param(
            claims(use(description="x" * 2001)),
            {"usages": [{"description": ["Ensure this field has no more than 2000 characters."]}]},
            id="d",
        ),
        pytest.param(
            claims(use(recurring="x", missing_usage_policy="always")),
            {
                "usages": [
                    {
                        "recurring": ["Must be a valid boolean."],
                        "missing_usage_policy": ['"always" is not a valid choice.'],
                    }
                ]
            },
            id="e",
        ),
        pytest.param(
            {"plan_period": str(R), "usages": [use()]},
            {"plan_period": [f"Object with uuid={R} does not exist."]},
            id="f",
        ),
        pytest.param(
            {"plan_period": str(PP_ORPHAN.uuid), "usages": [use()]},
            {"plan_period": [f"Object with uuid={PP_ORPHAN.uuid} does not exist."]},
            id="f-period-of-a-missing-resource",
        ),
        pytest.param(
            {"plan_period": str(PP_CLOSED.uuid), "usages": [use()]},
            {"plan_period": ["Billing period is closed."]},
            id="g",
        ),
        pytest.param(
            claims(resource=str(PLAN)), {"resource": [f"Object with uuid={PLAN} does not exist."]}, id="h"
        ),
        pytest.param(
            {"usages": [use()]},
            {"non_field_errors": ["Either plan_period or resource should be provided."]},
            id="i",
        ),
        pytest.param(
            claims(resource=str(R_ERRED)), {"resource": ["Resource is not in valid state."]}, id="j-erred"
        ),
        pytest.param(
            claims(resource=str(R_CREATING)),
            {"resource": ["Resource is not in valid state."]},
            id="j-creating",
        ),
        pytest.param(
            claims(use("zeta"), use("cpu"), use("alpha"), use("support")),
            {"non_field_errors": ["These components are invalid: alpha, support, zeta."]},
            id="k",
        ),
        pytest.param(
            claims(resource=str(R_PLANLESS)),
            {"non_field_errors": ["Resource must have a plan to report usage"]},
            id="l",
        ),
        pytest.param(
            claims(date="2026-11-15T12:00:01Z"), {"date": ["Cannot submit usage for future dates"]}, id="m"
        ),
        pytest.param(claims(use("cpu"), date="2026-10-31T23:59:59Z"), {"date": [BACKFILL]}, id="n"),
        pytest.param(
            claims(use("storage"), use("cpu"), date="2026-10-01T00:00:00Z"),
            {"date": [BACKFILL]},
            id="n-mixed",
        ),
    ],
)
def test_rules_a_to_n(c, expected):
    assert rejected(c) == expected


PLAN_MESSAGE = {"non_field_errors": ["Resource must have a plan to report usage"]}
STATE_MESSAGE = {"resource": ["Resource is not in valid state."]}


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        pytest.param(claims(resource=str(R_PLANLESS_CREATING)), PLAN_MESSAGE, id="plan-before-state"),
        pytest.param(claims(use("gpu"), resource=str(R_PLANLESS)), PLAN_MESSAGE, id="plan-before-components"),
        pytest.param(claims(use("gpu"), resource=str(R_ERRED)), STATE_MESSAGE, id="state-before-components"),
        pytest.param(
            claims(use("gpu"), date="2026-11-15T12:00:01Z"),
            {"non_field_errors": ["These components are invalid: gpu."]},
            id="components-before-future-date",
        ),
        pytest.param(
            claims(use("cpu"), date="2026-12-01T00:00:00Z"),
            {"date": ["Cannot submit usage for future dates"]},
            id="future-date-before-backfill",
        ),
    ],
)
def test_object_rules_in_waldur_8_order(c, expected):
    """either/or -> ownership -> plan -> state -> components -> future date -> backfill."""
    assert rejected(c) == expected


def test_ownership_comes_before_the_plan():
    with pytest.raises(Forbidden):
        validate_report(claims(resource=str(R_PLANLESS_CREATING)), CATALOG, OTHER, NOW, UTC)


def test_plan_period_is_resolved_by_overlap_in_the_billing_timezone():
    """Usage dated at the start of a month links to a period starting later that month (8.x),
    and the month is the billing zone's: Nov 1 00:30 Tallinn is still October in UTC."""
    mid = PlanPeriod(_uuid(), R, dt.datetime(2026, 11, 10, tzinfo=dt.UTC), None)
    res = Resource(R, OFFERING, "OK", PLAN, (mid,))
    catalog = dataclasses.replace(CATALOG, resources={R: res}, plan_periods={mid.uuid: mid})
    c = claims(use("storage"), date="2026-10-31T22:30:00Z")
    in_tallinn = validate_report(c, catalog, PROVIDER, NOW, TALLINN)
    assert (in_tallinn.billing_period, in_tallinn.plan_period) == (dt.date(2026, 11, 1), mid)
    in_utc = validate_report(c, catalog, PROVIDER, NOW, UTC)
    assert (in_utc.billing_period, in_utc.plan_period) == (dt.date(2026, 10, 1), None)


def test_field_errors_are_collected_before_any_object_rule():
    c = {"usages": [use("")], "plan_period": "x", "resource": str(R_ERRED), "date": "soon"}
    assert rejected(c) == {
        "usages": [{"type": ["This field may not be blank."]}],
        "plan_period": ["Object with uuid=x does not exist."],
        "date": [
            "Datetime has wrong format. Use one of these formats instead: "
            "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
        ],
    }


def test_ownership_is_forbidden_unless_switched_off():
    with pytest.raises(Forbidden) as info:
        validate(claims(resource=str(R_OTHER)))
    assert (info.value.status, info.value.body) == (
        403,
        {"detail": "You do not have permission to perform this action."},
    )
    assert validate(claims(resource=str(R_OTHER)), enforce_ownership=False).resource.uuid == R_OTHER


@pytest.mark.parametrize("resource", [R, R_UPDATING, R_TERMINATING])
def test_valid_states(resource):
    assert validate(claims(resource=str(resource))).resource.uuid == resource


def test_plan_period_names_the_resource_and_wins_over_resource():
    report = validate({"plan_period": str(PP_NEW.uuid), "resource": str(R_UPDATING), "usages": [use()]})
    assert (report.resource.uuid, report.plan_period) == (R, PP_NEW)


def test_plan_period_ending_exactly_at_month_start_is_open():
    report = validate({"plan_period": str(PP_AT_MONTH_START.uuid), "usages": [use()]})
    assert report.resource.uuid == R_BOUNDARY


@pytest.mark.parametrize(
    ("date", "period"),
    [
        (None, PP_NEW),
        ("2026-10-19T23:59:59Z", PP_OLD),
        ("2026-10-20T00:00:00Z", PP_NEW),
    ],
)
def test_plan_period_is_picked_by_date(date, period):
    c = claims(use("storage"), **({"date": date} if date else {}))
    assert validate(c).plan_period == period


def test_empty_usages_are_valid():
    report = validate(claims(usages=[]))
    assert report.lines == () and report.billing_period == dt.date(2026, 11, 1)


def test_lines_are_normalised():
    report = validate(
        claims(
            use(amount=12.5, description="  hi  "),
            use("ram", "2", recurring=True),
            use("licence", 1, missing_usage_policy="zero"),
        )
    )
    assert [
        (line.type, str(line.amount), line.description, line.recurring, line.missing_usage_policy)
        for line in report.lines
    ] == [
        ("cpu", "12.50", "hi", False, "none"),
        ("ram", "2.00", "", True, "reuse"),
        ("licence", "1.00", "", False, "zero"),
    ]


@pytest.mark.parametrize(
    ("components", "date", "period"),
    [
        (["storage"], "2026-10-31T23:59:59Z", dt.date(2026, 10, 1)),
        (["licence"], "2025-01-15T00:00:00Z", dt.date(2025, 1, 1)),
        (["storage", "licence"], "2026-10-01T00:00:00Z", dt.date(2026, 10, 1)),
        (["cpu"], "2026-11-01T00:00:00Z", dt.date(2026, 11, 1)),
        (["cpu"], "2026-11-15T12:00:00Z", dt.date(2026, 11, 1)),
        (["cpu"], None, dt.date(2026, 11, 1)),
    ],
)
def test_billing_period_is_the_month_of_date(components, date, period):
    c = claims(*[use(t) for t in components], **({"date": date} if date else {}))
    assert validate(c).billing_period == period


def test_billing_timezone_decides_the_month():
    # 23:30 UTC on Oct 31 is 01:30 on Nov 1 in Tallinn: current month, usage allowed
    assert validate(claims(date="2026-10-31T23:30:00Z"), tz=TALLINN).billing_period == dt.date(2026, 11, 1)
    # a naive date is read in the billing time zone
    assert validate(claims(use("storage"), date="2026-11-01T00:30:00"), tz=TALLINN).date == dt.datetime(
        2026, 11, 1, 0, 30, tzinfo=TALLINN
    )
    assert validate(claims(use("storage"), date="2026-11-01T00:30:00"), tz=TALLINN).billing_period == dt.date(
        2026, 11, 1
    )
    # at 23:30 UTC on Nov 30 it is already December in Tallinn: Nov 30 21:00 UTC is backfill
    late = dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.UTC)
    assert rejected(claims(date="2026-11-30T21:00:00Z"), tz=TALLINN, now=late) == {"date": [BACKFILL]}
    assert validate(
        claims(use("storage"), date="2026-11-30T21:00:00Z"), tz=TALLINN, now=late
    ).billing_period == dt.date(2026, 11, 1)


def test_closed_plan_period_is_judged_in_the_billing_timezone():
    # PP_CLOSED ended just before Nov 1 00:00 UTC, i.e. after Nov 1 00:00 Tallinn (22:00 UTC)
    report = validate(
        {"plan_period": str(PP_CLOSED.uuid), "usages": [use("storage")]},
        tz=TALLINN,
        now=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
    )
    assert report.resource.uuid == R_CLOSED


@pytest.mark.parametrize(
    "date",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC: must not raise OverflowError
        "0001-01-01T00:00:00+00:00",
        "2026-11-15T12:00:00+25:00",
        "9999-12-31T23:59:59-23:59",
    ],
)
def test_extreme_dates_are_a_date_error_or_valid(date):
    try:
        report = validate(claims(use("storage"), date=date))
    except Rejected as exc:
        assert list(exc.body) == ["date"]
    else:
        assert report.billing_period <= dt.date(2026, 11, 1)
