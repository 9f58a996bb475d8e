"""The forwarder end to end: the set_usage sink through the official client against a real
HTTP server (a scripted stub here; the fake Waldur process below), the outbox in SQL, the
global bucket in Redis, and ``ingest waldur status`` / ``failures``."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ingest.adapters.waldur.client import make_client
from ingest.adapters.waldur.sink import WaldurSink
from ingest.services.forward_ports import SinkFailure, UsageCall


class Stub(http.server.ThreadingHTTPServer):
    """Answers each request with the next scripted (status, headers, body); records them."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.seen: list[dict[str, Any]] = []
        self.version = "8.1.3"  # GET /api/version/

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Stub

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "json": json.loads(body) if body else None,
            }
        )
        if self.path == "/api/version/":
            status, headers, out = (
                200,
                {"Content-Type": "application/json"},
                b'{"version": "%s"}' % (self.server.version.encode()),
            )
        else:
            status, headers, out = self.server.script.pop(0) if self.server.script else (201, {}, b"")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


CALL = UsageCall(
    uuid.UUID("7f3e2a10-0000-4000-8000-0000000000a1"),
    None,
    dt.datetime(2026, 11, 20, 11, 59, tzinfo=dt.UTC),
    (("cpu_hours", "12.50"), ("ram_gb", "3.00")),
)


def test_the_sink_sends_one_set_usage_with_every_component_through_the_official_client(stub: Stub) -> None:
    sink = WaldurSink(make_client(stub.url, "tok", 5.0))
    sink.set_usage(CALL)
    (seen,) = stub.seen
    assert seen["method"] == "POST" and seen["path"] == "/api/marketplace-component-usages/set_usage/"
    assert seen["auth"] == "Token tok"
    assert seen["json"] == {
        "usages": [{"type": "cpu_hours", "amount": "12.50"}, {"type": "ram_gb", "amount": "3.00"}],
        "resource": str(CALL.resource),
        "date": "2026-11-20T11:59:00+00:00",
    }
    assert seen["json"] == CALL.as_json()  # what the forward quarantine records is what went out


def test_the_sink_names_a_plan_period_instead_of_the_resource(stub: Stub) -> None:
    period = uuid.uuid4()
    WaldurSink(make_client(stub.url, "tok", 5.0)).set_usage(
        UsageCall(CALL.resource, period, CALL.date, CALL.usages)
    )
    body = stub.seen[0]["json"]
    assert body["plan_period"] == str(period) and "resource" not in body


@pytest.mark.parametrize(
    "status,headers,body,kind,retry_after",
    [
        (400, {"Content-Type": "application/json"}, b'["Total amount exceeds limit."]', "rejected", None),
        (
            500,
            {"Content-Type": "text/html"},
            b"<!doctype html><h1>Server Error (500)</h1>",
            "server_error",
            None,
        ),
        (503, {"Retry-After": "3"}, b"busy", "server_error", 3.0),
        (429, {"Retry-After": "7"}, b'{"detail":"slow down"}', "throttled", 7.0),
        (401, {}, b'{"detail":"Token has expired."}', "unauthorized", None),
        (403, {}, b'{"detail":"You do not have permission to perform this action."}', "forbidden", None),
    ],
)
def test_the_sink_reads_every_failure_into_the_port(
    stub: Stub, status: int, headers: dict[str, str], body: bytes, kind: str, retry_after: float | None
) -> None:
    stub.script.append((status, headers, body))
    with pytest.raises(SinkFailure) as caught:
        WaldurSink(make_client(stub.url, "tok", 5.0)).set_usage(CALL)
    failure = caught.value
    assert (failure.kind, failure.status, failure.body) == (kind, status, body.decode())
    assert failure.retry_after == retry_after


def test_the_sink_reports_a_refused_connection_as_transport() -> None:
    with pytest.raises(SinkFailure) as caught:
        WaldurSink(make_client("http://127.0.0.1:9/", "tok", 2.0)).set_usage(CALL)
    assert caught.value.kind == "transport" and caught.value.status is None


def test_the_sink_reads_the_server_version(stub: Stub) -> None:
    stub.version = "7.0.7"
    assert WaldurSink(make_client(stub.url, "tok", 5.0)).server_version() == "7.0.7"
    assert stub.seen[0]["path"] == "/api/version/"


# -- the whole forwarder over SQL and Redis, against the stub ----------------------------------

from ingest import bootstrap  # noqa: E402
from ingest.adapters.redis.forward_gate import RedisForwardGate  # noqa: E402
from ingest.services import catalog_file  # noqa: E402
from tests.integration.test_outbox import Catalog, bridge_settings, delivery  # noqa: E402

TODAY = dt.datetime.now(dt.UTC)
THIS_MONTH = dt.date(TODAY.year, TODAY.month, 1)


@pytest.fixture
def forwarding(database_url: str, redis_url: str, stub: Stub) -> Iterator[tuple[bootstrap.Runtime, Catalog]]:
    catalog = Catalog(6)
    rt = bootstrap.Runtime(
        bridge_settings(database_url, redis_url, waldur_url=stub.url, waldur_forward_rate=200.0)
    )
    rt.catalog_source.load(catalog_file.parse(catalog.doc()))
    yield rt, catalog
    rt.engine.dispose()


def test_reports_over_resources_become_one_call_per_changed_resource(
    forwarding: tuple[bootstrap.Runtime, Catalog], stub: Stub
) -> None:
    rt, catalog = forwarding
    seq = 0
    final: dict[str, dict[str, str]] = {}
    for round_ in range(5):
        batch = []
        for r in catalog.resources[:4]:
            seq += 1
            batch.append(delivery(seq, r, THIS_MONTH, cpu_hours=str(round_ * 10 + seq), ram_gb="1"))
            final[r] = {"cpu_hours": f"{round_ * 10 + seq:.2f}", "ram_gb": "1.00"}
        rt.committer.commit(batch)
    done = rt.forwarder.run(10.0)
    assert done["acked"] == 4
    calls = [s for s in stub.seen if s["path"].endswith("/set_usage/")]
    assert len(calls) == 4
    assert {
        c["json"]["resource"]: {u["type"]: u["amount"] for u in c["json"]["usages"]} for c in calls
    } == final
    assert rt.forwarder.run(5.0).get("acked", 0) == 0  # clean: no more calls
    status = rt.forward_status()
    assert status["dirty_keys"] == 0 and status["in_flight"] == 0 and status["pending_reports"] == 0


def test_a_permanent_400_lands_in_the_failures_and_a_retry_forwards_it(
    forwarding: tuple[bootstrap.Runtime, Catalog], stub: Stub
) -> None:
    rt, catalog = forwarding
    r = catalog.resources[0]
    rt.committer.commit([delivery(1, r, THIS_MONTH, cpu_hours="5")])
    body = b'{"resource":["Resource is not in valid state."]}'
    stub.script.append((400, {"Content-Type": "application/json"}, body))
    assert rt.forwarder.run(5.0)["quarantined"] == 1
    (failure,) = rt.outbox.failures()
    assert failure["reason"] == "resource_state" and failure["status"] == 400
    full = rt.outbox.failure(failure["id"])
    assert full is not None and full["body"] == body.decode()
    assert full["request"]["resource"] == r and full["request"]["usages"] == [
        {"type": "cpu_hours", "amount": "5.00"}
    ]
    assert rt.forward_status()["failures_by_reason"] == {"resource_state": 1}
    assert rt.forwarder.run(2.0).get("leased", 0) == 0  # waits for the operator
    assert rt.outbox.retry([failure["id"]], dt.datetime.now(dt.UTC)) == [failure["id"]]
    assert rt.forwarder.run(5.0)["acked"] == 1
    assert rt.forward_status()["failures_by_reason"] == {}


@pytest.mark.serial  # times a few seconds: alone, after the parallel part (make test)
def test_the_global_bucket_holds_every_forwarder_to_the_rate(redis_url: str) -> None:
    import redis

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    taken: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        gate = RedisForwardGate(redis.Redis.from_url(redis_url), prefix)
        end = time_.monotonic() + 2.0
        while time_.monotonic() < end:
            wait = gate.take(20.0)
            if wait == 0:
                with lock:
                    taken.append(time_.monotonic())
            else:
                time_.sleep(wait)

    import time as time_

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # 20/s with a burst of one: about 41 tokens in 2 s, whatever the number of takers
    assert 36 <= len(taken) <= 42, len(taken)
    taken.sort()
    for i in range(len(taken)):
        in_a_second = [x for x in taken if taken[i] <= x < taken[i] + 1.0]
        assert len(in_a_second) <= 21


# -- against the fake Waldur, a real process (ingest/dev/fake_waldur) -------------------------

PAST_MONTH = (THIS_MONTH - dt.timedelta(days=1)).replace(day=1)


def _fake_process() -> Any:
    return pytest.importorskip("ingest.dev.fake_waldur.process")


@pytest.fixture
def fake_catalog() -> Catalog:
    return Catalog(10)


def _start_fake(catalog: Catalog, mode: str = "8", extra: tuple[str, ...] = ()) -> Any:
    return _fake_process().start(
        mode=mode, seed=catalog.doc(), token="fwd-staff-token", extra_args=list(extra)
    )


@pytest.fixture
def fake(fake_catalog: Catalog) -> Iterator[Any]:
    waldur = _start_fake(fake_catalog)
    yield waldur
    waldur.stop()


def _runtime(
    database_url: str, redis_url: str, catalog: Catalog, url: str, **extra: Any
) -> bootstrap.Runtime:
    rt = bootstrap.Runtime(
        bridge_settings(database_url, redis_url, waldur_url=url, waldur_token="fwd-staff-token", **extra)
    )
    rt.catalog_source.load(catalog_file.parse(catalog.doc()))
    return rt


def _until_clean(rt: bootstrap.Runtime, timeout: float = 30.0) -> dict[str, int]:
    """Forward passes (as beat would run them) until the outbox is clean."""
    import time as time_

    total: dict[str, int] = {}
    end = time_.monotonic() + timeout
    while time_.monotonic() < end:
        for k, v in rt.forwarder.run(5.0).items():
            total[k] = total.get(k, 0) + v
        status = rt.forward_status()
        if status["dirty_keys"] == 0:
            return total
        time_.sleep(0.2)
    raise AssertionError(f"outbox still dirty: {rt.forward_status()}; so far {total}")


def _waldur_values(fake: Any) -> dict[tuple[str, str], dict[str, str]]:
    found: dict[tuple[str, str], dict[str, str]] = {}
    for u in fake.usages():
        key = (str(uuid.UUID(u["resource"])), u["billing_period"][:10])
        found.setdefault(key, {})[u["type"]] = f"{float(u['usage']):.2f}"
    return found


def test_n_reports_over_m_resources_are_one_call_per_changed_resource_with_the_final_values(
    database_url: str, redis_url: str, fake: Any, fake_catalog: Catalog
) -> None:
    import random

    rt = _runtime(database_url, redis_url, fake_catalog, fake.url)
    rng = random.Random(3)
    changed = fake_catalog.resources[:8]
    final: dict[str, dict[str, str]] = {}
    seq = 0
    for _batch in range(10):
        batch = []
        for _ in range(30):  # 300 reports over 8 resources
            seq += 1
            r = rng.choice(changed)
            component = rng.choice(["cpu_hours", "ram_gb"])
            amount = f"{rng.randint(0, 10_000) / 100:.2f}"
            batch.append(delivery(seq, r, THIS_MONTH, **{component: amount}))
            final.setdefault(r, {})[component] = amount
        rt.committer.commit(batch)
    done = _until_clean(rt)
    calls = fake.calls()
    assert done.get("acked") == len({r for r in final}) == len(calls)
    assert all(c["status"] == 201 for c in calls)
    assert sorted(str(uuid.UUID(c["payload"]["resource"])) for c in calls) == sorted(final)
    period = THIS_MONTH.isoformat()
    assert _waldur_values(fake) == {(r, period): v for r, v in final.items()}
    for c in calls:  # one call carries every component the resource has this month
        assert {u["type"] for u in c["payload"]["usages"]} == set(
            final[str(uuid.UUID(c["payload"]["resource"]))]
        )
    # nothing changed: another pass makes no call
    rt.forwarder.run(2.0)
    assert len(fake.calls()) == len(calls)
    rt.engine.dispose()


def test_a_503_is_retried_then_succeeds(
    database_url: str, redis_url: str, fake: Any, fake_catalog: Catalog
) -> None:
    rt = _runtime(database_url, redis_url, fake_catalog, fake.url)
    r = fake_catalog.resources[0]
    fake.fault(status=503, count=2, retry_after=1)
    rt.committer.commit([delivery(1, r, THIS_MONTH, cpu_hours="7.25")])
    done = _until_clean(rt)
    assert done.get("retried") == 2 and done.get("acked") == 1
    assert [c["status"] for c in fake.calls()] == [503, 503, 201]
    assert _waldur_values(fake) == {(r, THIS_MONTH.isoformat()): {"cpu_hours": "7.25"}}
    rt.engine.dispose()


def _cli(monkeypatch: pytest.MonkeyPatch, rt: bootstrap.Runtime, *argv: str) -> int:
    from ingest.cli.main import main

    s = rt.settings
    for name, value in (
        ("DATABASE_URL", s.database_url),
        ("REDIS_URL", s.redis_url),
        ("REDIS_PREFIX", s.redis_prefix),
        ("WALDUR_URL", s.waldur_url),
        ("WALDUR_TOKEN", s.waldur_token),
    ):
        monkeypatch.setenv(name, value)
    bootstrap.runtime.cache_clear()
    try:
        return main(list(argv))
    finally:
        bootstrap.runtime().engine.dispose()
        bootstrap.runtime.cache_clear()


def test_a_permanent_400_goes_to_the_failures_list_and_back_after_a_fix(
    database_url: str,
    redis_url: str,
    fake: Any,
    fake_catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rt = _runtime(database_url, redis_url, fake_catalog, fake.url)
    bad, good = fake_catalog.resources[:2]
    fake.set_resource(bad, state="Erred")  # Waldur: 400 "Resource is not in valid state."
    rt.committer.commit(
        [delivery(1, bad, THIS_MONTH, cpu_hours="3"), delivery(2, good, THIS_MONTH, cpu_hours="4")]
    )
    done = _until_clean(rt)
    assert done.get("quarantined") == 1 and done.get("acked") == 1
    capsys.readouterr()
    assert _cli(monkeypatch, rt, "waldur", "failures", "list", "--json") == 0
    (failure,) = json.loads(capsys.readouterr().out)
    assert failure["resource"] == bad and failure["status"] == 400 and failure["reason"] == "resource_state"
    assert _cli(monkeypatch, rt, "waldur", "failures", "show", str(failure["id"]), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert json.loads(shown["body"]) == {"resource": ["Resource is not in valid state."]}
    assert shown["request"]["usages"] == [{"type": "cpu_hours", "amount": "3.00"}]
    assert _cli(monkeypatch, rt, "waldur", "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["failures_by_reason"] == {"resource_state": 1} and status["failed_keys"] == 1
    fake.set_resource(bad, state="OK")  # the fix, in Waldur
    monkeypatch.setattr(bootstrap.Runtime, "kick_forward", lambda self: None)
    assert _cli(monkeypatch, rt, "waldur", "failures", "retry", str(failure["id"])) == 0
    assert "retrying 1 failure" in capsys.readouterr().out
    _until_clean(rt)
    assert _waldur_values(fake)[(bad, THIS_MONTH.isoformat())] == {"cpu_hours": "3.00"}
    assert _cli(monkeypatch, rt, "waldur", "failures", "list") == 0
    assert "no forward failures unresolved" in capsys.readouterr().out
    rt.engine.dispose()


@pytest.mark.serial  # times a few seconds: alone, after the parallel part (make test)
def test_the_rate_cap_holds_across_forwarders(
    database_url: str, redis_url: str, fake: Any, fake_catalog: Catalog
) -> None:
    rate = 4.0
    first = _runtime(database_url, redis_url, fake_catalog, fake.url, waldur_forward_rate=rate)
    # a second forwarder process: its own runtime, the same database, Redis prefix and Waldur
    import dataclasses

    second = bootstrap.Runtime(dataclasses.replace(first.settings))
    for seq, r in enumerate(fake_catalog.resources, start=1):
        first.committer.commit([delivery(seq, r, THIS_MONTH, cpu_hours=str(seq))])
    results: list[dict[str, int]] = []
    threads = [
        threading.Thread(target=lambda rt=rt: results.append(rt.forwarder.run(10.0)))
        for rt in (first, second)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    calls = fake.calls()
    assert len(calls) == len(fake_catalog.resources) and all(c["status"] == 201 for c in calls)
    assert sum(r.get("acked", 0) for r in results) == len(calls)
    assert all(r.get("acked", 0) > 0 for r in results)  # both forwarders took part
    times = sorted(c["time"] for c in calls)
    for t0 in times:
        assert len([t for t in times if t0 <= t < t0 + 1.0]) <= rate + 1
    assert times[-1] - times[0] >= (len(times) - 2) / rate
    first.engine.dispose()
    second.engine.dispose()


def test_a_7x_server_never_gets_a_past_month(
    database_url: str, redis_url: str, fake_catalog: Catalog
) -> None:
    waldur = _start_fake(fake_catalog, mode="7.0.7")
    try:
        rt = _runtime(database_url, redis_url, fake_catalog, waldur.url)
        old, new = fake_catalog.resources[:2]
        rt.committer.commit(
            [delivery(1, old, PAST_MONTH, cpu_hours="1"), delivery(2, new, THIS_MONTH, cpu_hours="2")]
        )
        done = _until_clean(rt)
        assert done.get("acked") == 1 and done.get("quarantined") == 1
        assert [str(uuid.UUID(c["payload"]["resource"])) for c in waldur.calls()] == [new]
        (failure,) = rt.outbox.failures()
        assert failure["reason"] == "past_month_on_7x" and failure["resource"] == old
        assert rt.forward_status()["server_version"].startswith("7.")
        rt.engine.dispose()
    finally:
        waldur.stop()


def test_an_8x_server_gets_a_past_month_under_that_month(
    database_url: str, redis_url: str, fake: Any, fake_catalog: Catalog
) -> None:
    rt = _runtime(database_url, redis_url, fake_catalog, fake.url)
    r = fake_catalog.resources[0]
    rt.committer.commit([delivery(1, r, PAST_MONTH, cpu_hours="11")])
    assert _until_clean(rt).get("acked") == 1
    assert _waldur_values(fake) == {(r, PAST_MONTH.isoformat()): {"cpu_hours": "11.00"}}
    rt.engine.dispose()


def test_a_refused_token_holds_forwarding_and_status_says_so(
    database_url: str,
    redis_url: str,
    fake: Any,
    fake_catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rt = bootstrap.Runtime(
        bridge_settings(database_url, redis_url, waldur_url=fake.url, waldur_token="wrong")
    )
    rt.catalog_source.load(catalog_file.parse(fake_catalog.doc()))
    for i, r in enumerate(fake_catalog.resources[:5]):
        rt.committer.commit([delivery(i + 1, r, THIS_MONTH, cpu_hours="1")])
    done = rt.forwarder.run(3.0)
    assert done.get("unauthorized", 0) >= 1 and not done.get("quarantined")
    assert rt.forward_status()["dirty_keys"] == 5 and rt.outbox.failures() == []
    assert rt.forwarder.run(1.0) == {"held": 1}
    capsys.readouterr()
    assert _cli(monkeypatch, rt, "waldur", "status") == 0
    out = capsys.readouterr().out
    assert "hold: unauthorized" in out and "HTTP 401" in out and "5 dirty keys" in out
    rt.engine.dispose()
