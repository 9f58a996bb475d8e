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
