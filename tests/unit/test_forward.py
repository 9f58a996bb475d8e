"""The forwarder (services/forward.py) with small fakes of its ports: the outbox, Waldur's
usage sink, the shared gate (bucket and hold) and a settable clock."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ingest.domain.model import CatalogSnapshot, Resource
from ingest.services import forward_policy as policy
from ingest.services.forward import Forwarder
from ingest.services.forward_ports import ComponentValue, OutboxEntry, SinkFailure, UsageCall

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOV = dt.date(2026, 11, 1)
OCT = dt.date(2026, 10, 1)


class Clock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class FakeOutbox:
    """The outbox's semantics (adapters/sql/outbox.py) in memory."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.rows: dict[tuple[uuid.UUID, dt.date], dict[str, Any]] = {}
        self.usages: dict[tuple[uuid.UUID, dt.date], dict[str, ComponentValue]] = {}
        self.failures: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.leases = 0

    def commit(
        self,
        resource: uuid.UUID,
        period: dt.date,
        values: dict[str, str],
        seq: int,
        reports: int = 1,
        plan_period: uuid.UUID | None = None,
        since: dt.datetime | None = None,
    ) -> None:
        """What a commit does: apply usage over lower sequences, mark the key dirty."""
        with self.lock:
            usage = self.usages.setdefault((resource, period), {})
            for c, a in values.items():
                if c not in usage or usage[c].seq < seq:
                    usage[c] = ComponentValue(c, f"{float(a):.2f}", plan_period, seq)
            row = self.rows.setdefault(
                (resource, period),
                dict(
                    dirty_seq=0,
                    dirty_since=None,
                    pending=0,
                    acked_seq=0,
                    acked_values=None,
                    acked_at=None,
                    owner=None,
                    until=None,
                    attempts=0,
                    next_at=None,
                    failed=False,
                    last_error=None,
                ),
            )
            row["dirty_seq"] = max(row["dirty_seq"], seq)
            row["dirty_since"] = row["dirty_since"] or since or self.clock()
            row["pending"] += reports
            if row["failed"]:
                row["attempts"], row["next_at"] = 0, None
            row["failed"] = False

    def dirty(self) -> list[tuple[uuid.UUID, dt.date]]:
        return [k for k, r in self.rows.items() if r["dirty_since"] is not None]

    def lease(self, owner: str, limit: int, now: dt.datetime, until: dt.datetime) -> list[OutboxEntry]:
        with self.lock:
            self.leases += 1

            def free(r: dict[str, Any]) -> bool:
                return r["until"] is None or r["until"] < now

            busy = {k[0] for k, r in self.rows.items() if not free(r)}
            out: list[OutboxEntry] = []
            for key, r in sorted(
                self.rows.items(), key=lambda kv: kv[1]["dirty_since"] or dt.datetime.max.replace(tzinfo=UTC)
            ):
                if len(out) == limit:
                    break
                if r["dirty_since"] is None or not free(r) or key[0] in busy:
                    continue
                if r["next_at"] is not None and r["next_at"] > now:
                    continue
                busy.add(key[0])
                r["owner"], r["until"] = owner, until
                out.append(
                    OutboxEntry(
                        key[0],
                        key[1],
                        r["dirty_seq"],
                        r["dirty_since"],
                        r["pending"],
                        r["acked_seq"],
                        r["acked_values"],
                        r["attempts"],
                        tuple(sorted(self.usages.get(key, {}).values())),
                    )
                )
            return out

    def _mine(self, entry: OutboxEntry, owner: str) -> dict[str, Any] | None:
        r = self.rows[(entry.resource, entry.billing_period)]
        return r if r["owner"] == owner else None

    def _free(self, r: dict[str, Any]) -> None:
        r["owner"] = r["until"] = None

    def settle(
        self, entry: OutboxEntry, owner: str, seq: int, values: dict[str, str] | None, now: dt.datetime
    ) -> bool:
        with self.lock:
            r = self._mine(entry, owner)
            if r is None:
                return False
            if values is not None and r["acked_seq"] <= seq:
                r["acked_values"], r["acked_at"] = dict(values), now
            r["acked_seq"] = max(r["acked_seq"], seq)
            if r["dirty_seq"] <= seq:
                r["dirty_since"] = None
            r["pending"] = max(0, r["pending"] - entry.pending_reports)
            r["attempts"], r["next_at"], r["last_error"] = 0, None, None
            self._free(r)
            return True

    def retry_later(self, entry: OutboxEntry, owner: str, attempts: int, at: dt.datetime, error: str) -> None:
        with self.lock:
            r = self._mine(entry, owner)
            if r is not None:
                r["attempts"], r["next_at"], r["last_error"] = attempts, at, error
                self._free(r)

    def release(self, entry: OutboxEntry, owner: str) -> None:
        with self.lock:
            r = self._mine(entry, owner)
            if r is not None:
                self._free(r)

    def quarantine(
        self,
        entry: OutboxEntry,
        owner: str,
        reason: str,
        status: int | None,
        body: str,
        request: dict[str, Any] | None,
        attempts: int,
        now: dt.datetime,
    ) -> None:
        with self.lock:
            r = self._mine(entry, owner)
            if r is None:
                return
            seq = max(entry.max_seq, entry.dirty_seq)
            r["failed"] = r["dirty_seq"] <= seq
            if r["failed"]:
                r["dirty_since"] = None
            r["attempts"], r["next_at"] = 0, None
            self._free(r)
            self.failures.append(
                dict(
                    key=(entry.resource, entry.billing_period),
                    reason=reason,
                    status=status,
                    body=body,
                    request=request,
                    attempts=attempts,
                )
            )

    def oldest_dirty(self) -> dt.datetime | None:
        found = [r["dirty_since"] for r in self.rows.values() if r["dirty_since"] is not None]
        return min(found) if found else None


class FakeSink:
    """Records every call; ``script`` decides the answer of each (None: 201)."""

    def __init__(self, version: str = "8.0.1") -> None:
        self.calls: list[UsageCall] = []
        self.script: Callable[[UsageCall], SinkFailure | None] = lambda call: None
        self.during: Callable[[UsageCall], None] = lambda call: None
        self.version = version
        self.version_reads = 0
        self.in_flight: dict[uuid.UUID, int] = {}
        self.max_in_flight_per_resource = 0
        self.max_in_flight = 0
        self.delay = 0.0
        self.lock = threading.Lock()

    def set_usage(self, call: UsageCall) -> None:
        with self.lock:
            self.calls.append(call)
            self.in_flight[call.resource] = self.in_flight.get(call.resource, 0) + 1
            self.max_in_flight_per_resource = max(
                self.max_in_flight_per_resource, self.in_flight[call.resource]
            )
            self.max_in_flight = max(self.max_in_flight, sum(self.in_flight.values()))
        try:
            if self.delay:
                time.sleep(self.delay)
            self.during(call)
            failure = self.script(call)
            if failure is not None:
                raise failure
        finally:
            with self.lock:
                self.in_flight[call.resource] -= 1

    def server_version(self) -> str:
        self.version_reads += 1
        return self.version


class FakeGate:
    def __init__(self) -> None:
        self.holds: list[tuple[float, str, str]] = []
        self.hold_until: float | None = None
        self.notes: dict[str, dict[str, Any]] = {}
        self.tokens = 0

    def take(self, rate: float) -> float:
        self.tokens += 1
        return 0.0

    def hold(self, seconds: float, kind: str, reason: str) -> None:
        self.holds.append((seconds, kind, reason))
        self.hold_until = time.time() + seconds

    def held(self) -> dict[str, Any] | None:
        if self.hold_until is not None and self.hold_until > time.time():
            return {"kind": self.holds[-1][1], "reason": self.holds[-1][2], "until": self.hold_until}
        return None

    def note(self, name: str, doc: dict[str, Any]) -> None:
        self.notes[name] = doc


class Metrics:
    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.absorbed_: list[int] = []
        self.lags: list[float] = []
        self.latencies: list[float] = []
        self.lock = threading.Lock()

    def forwarded(self, outcome: str) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def absorbed(self, reports: int) -> None:
        with self.lock:
            self.absorbed_.append(reports)

    def latency(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def lag(self, seconds: float) -> None:
        self.lags.append(seconds)


class World:
    def __init__(
        self, tz: str = "UTC", version: str = "8.0.1", concurrency: int = 4, resources: int = 8
    ) -> None:
        self.clock = Clock()
        self.outbox = FakeOutbox(self.clock)
        self.sink = FakeSink(version)
        self.gate = FakeGate()
        self.metrics = Metrics()
        self.resources = [uuid.uuid4() for _ in range(resources)]
        offering = uuid.uuid4()
        self.catalog = CatalogSnapshot(
            {}, {}, {r: Resource(r, offering, "OK", uuid.uuid4()) for r in self.resources}, {}
        )
        self.tz = ZoneInfo(tz)
        self.forwarder = Forwarder(
            self.outbox,
            self.sink,
            self.gate,
            lambda: self.catalog,
            "test-owner",
            rate=100.0,
            concurrency=concurrency,
            tz=self.tz,
            call_timeout=5.0,
            metrics=self.metrics,
            clock=self.clock,
            sleep=lambda s: None,
            rng=random.Random(7),
        )

    def run(self) -> dict[str, int]:
        return self.forwarder.run(5.0)

    def row(self, resource: uuid.UUID, period: dt.date = NOV) -> dict[str, Any]:
        return self.outbox.rows[(resource, period)]


def amounts(call: UsageCall) -> dict[str, str]:
    return dict(call.usages)


def test_many_reports_over_a_key_become_one_call_with_the_final_values() -> None:
    w = World()
    r = w.resources[0]
    for seq in range(1, 51):
        w.outbox.commit(r, NOV, {"cpu": str(seq)}, seq)
    done = w.run()
    assert done["acked"] == 1
    assert len(w.sink.calls) == 1
    assert amounts(w.sink.calls[0]) == {"cpu": "50.00"}
    assert w.metrics.absorbed_ == [50]
    assert w.row(r)["dirty_since"] is None and w.row(r)["acked_seq"] == 50
    assert w.row(r)["pending"] == 0
    assert w.run().get("acked", 0) == 0 and len(w.sink.calls) == 1  # clean: nothing more


def test_every_component_of_a_key_goes_in_one_call_by_resource() -> None:
    w = World()
    r = w.resources[0]
    w.outbox.commit(r, NOV, {"cpu": "1", "ram": "2"}, 1)
    w.outbox.commit(r, NOV, {"gpu": "3.456"}, 2)
    w.run()
    (call,) = w.sink.calls
    assert call.usages == (("cpu", "1.00"), ("gpu", "3.46"), ("ram", "2.00"))
    assert call.resource == r and call.plan_period is None
    assert call.as_json()["resource"] == str(r) and "plan_period" not in call.as_json()


def test_the_call_names_the_resource_even_when_the_rows_carry_a_plan_period() -> None:
    """Intake stores the plan period it resolved when the provider named none: a stored one
    is not the provider's choice, and Waldur resolves the period at ``date`` itself."""
    w = World()
    r, p = w.resources[0], uuid.uuid4()
    w.outbox.commit(r, NOV, {"cpu": "1", "ram": "2"}, 1, plan_period=p)
    w.run()
    (call,) = w.sink.calls
    assert call.plan_period is None and call.as_json()["resource"] == str(r)


def test_never_two_forwards_in_flight_for_one_resource_and_at_most_concurrency() -> None:
    w = World(concurrency=4)
    w.sink.delay = 0.1
    for i, r in enumerate(w.resources):
        w.outbox.commit(r, OCT, {"cpu": "1"}, 10 * i + 1)
        w.outbox.commit(r, NOV, {"cpu": "2"}, 10 * i + 2)
    done = w.run()
    assert done["acked"] == 16 and len(w.sink.calls) == 16
    assert w.sink.max_in_flight_per_resource == 1
    assert 1 < w.sink.max_in_flight <= 4


def test_a_commit_during_the_call_keeps_the_key_dirty_and_the_next_pass_sends_it() -> None:
    w = World()
    r = w.resources[0]
    w.outbox.commit(r, NOV, {"cpu": "1"}, 1)
    seen: list[tuple[int, bool, int]] = []

    def commit_meanwhile(call: UsageCall) -> None:
        row = w.row(r)
        seen.append((row["acked_seq"], row["dirty_since"] is not None, row["pending"]))
        if len(seen) == 1:
            w.outbox.commit(r, NOV, {"cpu": "2"}, 2)

    w.sink.during = commit_meanwhile
    w.run()
    # the second call found the first acknowledged and the key still dirty, one report to go
    assert seen == [(0, True, 1), (1, True, 1)]
    assert [amounts(c) for c in w.sink.calls] == [{"cpu": "1.00"}, {"cpu": "2.00"}]
    assert w.row(r)["dirty_since"] is None and w.row(r)["acked_seq"] == 2


def test_values_equal_to_the_last_acknowledged_forward_are_not_sent() -> None:
    w = World()
    r = w.resources[0]
    w.outbox.commit(r, NOV, {"cpu": "5", "ram": "1"}, 1)
    w.run()
    w.outbox.commit(r, NOV, {"cpu": "5.00"}, 2)  # the same amount again
    done = w.run()
    assert done == {"leased": 1, "skipped_unchanged": 1}
    assert len(w.sink.calls) == 1
    assert w.row(r)["dirty_since"] is None and w.row(r)["acked_seq"] == 2
    assert "skipped_unchanged" in w.metrics.outcomes


def test_an_older_value_never_overwrites_a_newer_acknowledged_one() -> None:
    w = World()
    r = w.resources[0]
    w.outbox.commit(r, NOV, {"cpu": "9"}, 9)
    w.run()
    row = w.row(r)
    # what a lost lease or a restored database could hand back: values older than acked
    w.outbox.usages[(r, NOV)] = {"cpu": ComponentValue("cpu", "1.00", None, 3)}
    row["dirty_since"], row["dirty_seq"] = NOW, 9
    w.run()
    assert [amounts(c) for c in w.sink.calls] == [{"cpu": "9.00"}]
    assert row["acked_seq"] == 9 and row["acked_values"] == {"cpu": "9.00"}
    assert row["dirty_since"] is None


def test_429_with_retry_after_backs_off_at_least_that_long_and_holds_everyone() -> None:
    w = World()
    r = w.resources[0]
    w.outbox.commit(r, NOV, {"cpu": "1"}, 1)
    w.sink.script = lambda call: SinkFailure("throttled", 429, "slow down", retry_after=7.0)
    done = w.run()
    assert done["retried"] == 1
    row = w.row(r)
    assert row["attempts"] == 1 and row["next_at"] >= NOW + dt.timedelta(seconds=7)
    assert row["dirty_since"] is not None and not w.outbox.failures
    assert w.gate.holds and w.gate.holds[0][0] == 7.0 and w.gate.holds[0][1] == "throttled"
    w.gate.hold_until = None
    w.sink.script = lambda call: None
    w.clock.now = NOW + dt.timedelta(seconds=6)
    assert w.run().get("leased", 0) == 0  # not due yet
    w.clock.now = row["next_at"]
    assert w.run()["acked"] == 1


def test_5xx_backs_off_exponentially_then_goes_to_the_forward_quarantine_with_its_body() -> None:
    w = World()
    r = w.resources[0]
    w.outbox.commit(r, NOV, {"cpu": "1"}, 1)
    html = "<!doctype html><title>Server Error (500)</title>"
    w.sink.script = lambda call: SinkFailure("server_error", 500, html)
    delays = []
    for _ in range(10):
        before = w.clock.now
        w.run()
        row = w.row(r)
        if w.outbox.failures:
            break
        delays.append((row["next_at"] - before).total_seconds())
        w.clock.now = row["next_at"]
    assert len(delays) == 5  # the 6th 500 in a row quarantines
    assert all(b > a for a, b in zip(delays, delays[1:], strict=False)), delays
    (failure,) = w.outbox.failures
    assert failure["reason"] == "server_error" and failure["status"] == 500 and failure["body"] == html
    assert failure["request"]["usages"] == [{"type": "cpu", "amount": "1.00"}]
    assert w.row(r)["failed"] and w.row(r)["dirty_since"] is None


def test_a_4xx_goes_to_the_forward_quarantine_and_a_later_commit_makes_it_dirty_again() -> None:
    w = World()
    r = w.resources[0]
    w.outbox.commit(r, NOV, {"cpu": "150"}, 1)
    body = '["Total amount exceeds limit. Total amount: 150.00, limit: 100."]'
    w.sink.script = lambda call: SinkFailure("rejected", 400, body)
    assert w.run()["quarantined"] == 1
    (failure,) = w.outbox.failures
    assert failure["reason"] == "over_limit" and failure["body"] == body and failure["status"] == 400
    assert failure["request"]["resource"] == str(r)
    assert w.row(r)["failed"] and w.row(r)["dirty_since"] is None
    assert w.run().get("leased", 0) == 0  # not retried by itself
    w.sink.script = lambda call: None
    w.outbox.commit(r, NOV, {"cpu": "90"}, 2)
    assert w.run()["acked"] == 1
    assert amounts(w.sink.calls[-1]) == {"cpu": "90.00"} and not w.row(r)["failed"]


def test_401_holds_all_forwarding_and_quarantines_nothing() -> None:
    w = World(concurrency=1)
    for i, r in enumerate(w.resources):
        w.outbox.commit(r, NOV, {"cpu": "1"}, i + 1)
    w.sink.script = lambda call: SinkFailure("unauthorized", 401, '{"detail":"Token has expired."}')
    done = w.run()
    assert done["unauthorized"] == 1 and len(w.sink.calls) == 1
    assert not w.outbox.failures
    assert len(w.outbox.dirty()) == len(w.resources)  # the backlog waits
    assert w.gate.holds[0][1] == "unauthorized" and w.gate.notes["last_error"]["status"] == 401
    assert w.run() == {"held": 1}  # held: the next pass takes nothing
    assert all(r["owner"] is None and r["attempts"] == 0 for r in w.outbox.rows.values())


def test_a_past_month_is_not_forwarded_to_a_7x_server() -> None:
    w = World(version="7.0.7")
    old, new = w.resources[0], w.resources[1]
    w.outbox.commit(old, OCT, {"cpu": "1"}, 1)
    w.outbox.commit(new, NOV, {"cpu": "2"}, 2)
    w.run()
    assert [c.resource for c in w.sink.calls] == [new]
    (failure,) = w.outbox.failures
    assert failure["reason"] == "past_month_on_7x" and "7.0.7" in failure["body"]
    assert w.row(old, OCT)["failed"]
    w.outbox.commit(w.resources[2], OCT, {"cpu": "1"}, 3)
    w.run()
    assert w.sink.version_reads == 1  # cached per process


def test_a_past_month_goes_to_an_8x_server_dated_inside_it() -> None:
    w = World(version="8.0.3")
    r = w.resources[0]
    w.outbox.commit(r, OCT, {"cpu": "1"}, 1)
    w.run()
    (call,) = w.sink.calls
    assert call.date.astimezone(UTC) == dt.datetime(2026, 10, 31, 23, 59, tzinfo=UTC)


def test_the_date_is_inside_the_period_and_never_in_the_future_across_a_month_boundary() -> None:
    tallinn = ZoneInfo("Europe/Tallinn")  # UTC+2 in winter: December starts at 22:00 UTC
    w = World(tz="Europe/Tallinn")
    nov, dec = w.resources[0], w.resources[1]
    w.clock.now = dt.datetime(2026, 11, 30, 22, 30, tzinfo=UTC)  # 00:30 on 1 December in Tallinn
    w.outbox.commit(nov, NOV, {"cpu": "1"}, 1)
    w.outbox.commit(dec, dt.date(2026, 12, 1), {"cpu": "1"}, 2)
    w.run()
    dates = {c.resource: c.date for c in w.sink.calls}
    assert dates[nov].astimezone(tallinn).month == 11 and dates[nov] < w.clock.now
    assert dates[dec].astimezone(tallinn).month == 12 and dates[dec] <= w.clock.now - policy.DATE_MARGIN
    # in UTC the November date would already be December's last... no: it is November there too
    assert dates[nov].astimezone(UTC) == dt.datetime(2026, 11, 30, 21, 59, tzinfo=UTC)


def test_in_the_first_minute_of_a_month_the_forward_waits() -> None:
    w = World(tz="Europe/Tallinn")
    r = w.resources[0]
    w.clock.now = dt.datetime(2026, 11, 30, 22, 0, 20, tzinfo=UTC)  # 00:00:20 on 1 December
    w.outbox.commit(r, dt.date(2026, 12, 1), {"cpu": "1"}, 1)
    assert w.run()["not_yet"] == 1 and not w.sink.calls
    assert w.row(r, dt.date(2026, 12, 1))["next_at"] == dt.datetime(2026, 11, 30, 22, 1, tzinfo=UTC)
    w.clock.now = dt.datetime(2026, 11, 30, 22, 1, tzinfo=UTC)
    w.run()
    (call,) = w.sink.calls
    assert call.date.astimezone(ZoneInfo("Europe/Tallinn")).month == 12


@pytest.mark.parametrize(
    "now,period,expected",
    [
        (dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC), NOV, dt.datetime(2026, 11, 20, 11, 59, tzinfo=UTC)),
        (dt.datetime(2026, 12, 5, tzinfo=UTC), NOV, dt.datetime(2026, 11, 30, 23, 59, tzinfo=UTC)),
        (dt.datetime(2026, 11, 1, 0, 0, 30, tzinfo=UTC), NOV, None),
    ],
)
def test_usage_date_rule(now: dt.datetime, period: dt.date, expected: dt.datetime | None) -> None:
    found = policy.usage_date(period, now, ZoneInfo("UTC"))
    assert found == expected


def test_oldest_dirty_keys_go_first() -> None:
    w = World(concurrency=1)
    order = list(reversed(w.resources))
    for i, r in enumerate(order):
        w.outbox.commit(r, NOV, {"cpu": "1"}, i + 1, since=NOW - dt.timedelta(minutes=60 - i))
    w.run()
    assert [c.resource for c in w.sink.calls] == order
    assert w.metrics.lags[-1] == 0.0


def test_a_resource_not_in_our_catalog_is_never_forwarded() -> None:
    w = World()
    stranger = uuid.uuid4()
    w.outbox.commit(stranger, NOV, {"cpu": "1"}, 1)
    assert w.run()["quarantined"] == 1
    assert not w.sink.calls and w.outbox.failures[0]["reason"] == "not_in_catalog"


def test_a_transport_error_is_retried_and_never_quarantined() -> None:
    w = World()
    r = w.resources[0]
    w.outbox.commit(r, NOV, {"cpu": "1"}, 1)
    w.sink.script = lambda call: SinkFailure("transport", None, "ConnectError: refused")
    for _ in range(12):
        w.run()
        w.clock.now = w.row(r)["next_at"]
    assert not w.outbox.failures and w.row(r)["attempts"] == 12
    gaps = policy.backoff(12, None, random.Random(1))
    assert policy.BACKOFF_CAP / 2 <= gaps <= policy.BACKOFF_CAP


@pytest.mark.parametrize(
    "body,reason",
    [
        ('{"plan_period":["Billing period is closed."]}', "period_closed"),
        ('{"resource":["Object with uuid=abc does not exist."]}', "unknown_resource"),
        ('{"non_field_errors":["These components are invalid: gpu."]}', "invalid_components"),
        (
            '{"date":["Service providers can only specify date for limit-based or prepaid billing '
            'components when backfilling past billing periods."]}',
            "backfill_refused",
        ),
        ('["something else"]', "rejected_list"),
        ("<html>Bad Request</html>", "rejected"),
    ],
)
def test_rejection_reasons(body: str, reason: str) -> None:
    assert policy.rejection_reason(body) == reason


def test_server_lines() -> None:
    assert policy.honours_date("8.1.3") and policy.honours_date("v9.0")
    assert not policy.honours_date("7.0.7") and not policy.honours_date(None)
    assert not policy.honours_date("unknown")


def test_the_request_json_is_what_the_client_sends() -> None:
    call = UsageCall(uuid.UUID(int=1), None, NOW, (("cpu", "1.00"),))
    assert json.loads(json.dumps(call.as_json())) == {
        "usages": [{"type": "cpu", "amount": "1.00"}],
        "resource": str(uuid.UUID(int=1)),
        "date": NOW.isoformat(),
    }


def test_a_503_with_retry_after_backs_off_that_key_only() -> None:
    w = World(concurrency=1)
    sick, well = w.resources[:2]
    w.outbox.commit(sick, NOV, {"cpu": "1"}, 1, since=NOW - dt.timedelta(minutes=2))
    w.outbox.commit(well, NOV, {"cpu": "1"}, 2, since=NOW - dt.timedelta(minutes=1))
    w.sink.script = lambda call: (
        SinkFailure("server_error", 503, "busy", 30.0) if call.resource == sick else None
    )
    done = w.run()
    assert done["retried"] == 1 and done["acked"] == 1  # the other resource went on
    assert not w.gate.holds
    assert w.row(sick)["next_at"] >= NOW + dt.timedelta(seconds=30)
