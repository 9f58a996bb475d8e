"""App factory: Falcon's ASGI app. Resources do HTTP only; the Intake service does the work.

ASGI because an event loop keeps connections alive and lets concurrent requests share one
Redis write (ingest/adapters/redis/accept.py); gunicorn's sync worker closed every connection
and paid a Redis round trip per request. Responders that wait on SQL run in a thread, so
the loop keeps serving intake meanwhile."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any, Protocol

import falcon
import falcon.asgi
import orjson
import yaml
from falcon.asgi import Request, Response

from api import docs
from api.body import read_body
from api.docs import Docs
from ingest.domain.errors import Backpressure, Rejected
from ingest.services.intake import Intake

log = logging.getLogger(__name__)
PREFIX = "/api/marketplace-public-api"


def _json(resp: Response | None, status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
    if resp is None:  # a WebSocket request reached an error handler: Falcon closes it
        return
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = render_json(body)
    for name, value in headers:
        resp.set_header(name, value)


def render_json(body: Any) -> bytes:
    """DRF's JSONRenderer bytes: compact, raw UTF-8, U+2028 and U+2029 escaped.

    orjson refuses a lone surrogate (an echoed ``"\\ud800"`` in a message): the standard
    library then writes the body escaped to ASCII. Waldur answers 500 there; we answer the 4xx.
    """
    try:
        data = orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(body, ensure_ascii=True, separators=(",", ":"), default=str).encode()
    if b"\xe2\x80" in data:
        data = data.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return data


class Counter(Protocol):
    def labels(self, *values: str) -> Counter: ...

    def inc(self, amount: float = 1) -> None: ...


class Tally(Protocol):
    def accepted(self, count: int, seconds: float | None = None) -> None: ...

    def flush(self) -> None: ...


class WebMetrics(Protocol):
    """What the web records (bootstrap.metrics(): the Prometheus adapter). ``TALLY`` is not
    locked: only the event loop's thread calls it."""

    @property
    def REJECTED(self) -> Counter: ...  # noqa: N802 - the adapter's module-level names

    @property
    def TALLY(self) -> Tally: ...  # noqa: N802


class _NoCounter:
    def labels(self, *values: str) -> _NoCounter:
        return self

    def inc(self, amount: float = 1) -> None:
        return None


class _NoTally:
    def accepted(self, count: int, seconds: float | None = None) -> None:
        return None

    def flush(self) -> None:
        return None


class NoMetrics:
    """Records nothing: the default for apps built without metrics (tests)."""

    REJECTED = _NoCounter()
    TALLY = _NoTally()


class _Public:
    def __init__(self, intake: Callable[[], Intake], max_body: int, metrics: WebMetrics) -> None:
        self.intake = intake
        self.max_body = max_body
        self.metrics = metrics


class CheckSignature(_Public):
    async def on_post(self, req: Request, resp: Response) -> None:
        self.intake().check_signature(await read_body(req, self.max_body))
        resp.status = 200  # empty, and so without a Content-Type, as DRF sends it
        resp.data = b""


class SetUsage(_Public):
    async def on_post(self, req: Request, resp: Response) -> None:
        started = time.perf_counter()
        try:
            receipt = await self.intake().set_usage(await read_body(req, self.max_body))
        except Rejected as exc:
            self.metrics.REJECTED.labels(_reason(exc)).inc()
            raise
        except Backpressure:
            self.metrics.REJECTED.labels("503").inc()
            raise
        if not receipt.dry_run:
            log.debug("accepted report %s seq %s", receipt.id, receipt.seq)
        _json(resp, 201, receipt.body(), receipt.headers.items())
        self.metrics.TALLY.accepted(0 if receipt.dry_run else 1, time.perf_counter() - started)


class SetUsages(_Public):
    """Batch intake: 207 with one result per report, in order."""

    async def on_post(self, req: Request, resp: Response) -> None:
        results = await self.intake().set_usages(await read_body(req, self.max_body))
        accepted = sum(1 for r in results if r["status"] == 201 and "id" in r)
        self.metrics.TALLY.accepted(accepted)
        for r in results:
            if r["status"] != 201:
                self.metrics.REJECTED.labels(f"{r['status']}:{next(iter(r['errors']), 'detail')}").inc()
        _json(resp, 207, {"results": results})


def _reason(exc: Rejected) -> str:
    """A label of bounded cardinality: status and the first error field."""
    return f"{exc.status}:{next(iter(exc.body), 'detail')}"


class Metrics:
    def __init__(self, metrics: WebMetrics, exposition: Callable[[], tuple[bytes, str]]) -> None:
        self.metrics = metrics
        self.exposition = exposition

    async def on_get(self, req: Request, resp: Response) -> None:
        self.metrics.TALLY.flush()  # here, on the loop that tallies; the exposition must not
        body, content_type = await asyncio.to_thread(self.exposition)
        resp.data = body
        resp.content_type = content_type


class UsageReport:
    """GET a report's status; a provider sees only its own reports (others are 404)."""

    def __init__(self, status: Callable[[str, str | None, str | None], dict[str, Any] | None]) -> None:
        self.status = status

    async def on_get(self, req: Request, resp: Response, report_id: str) -> None:
        found = await asyncio.to_thread(
            self.status, report_id, req.get_header("Authorization"), req.get_header("X-Customer")
        )
        if found is None:
            _json(resp, 404, {"detail": "Not found."})
        else:
            _json(resp, 200, found)


class Schema:
    """The OpenAPI document (schemas/openapi.yaml), read once: YAML by default, JSON with
    ?format=json or, without ``format``, when the Accept header prefers JSON to YAML."""

    YAML = "application/vnd.oai.openapi"
    # YAML first: Falcon's best_match breaks a tie (``*/*``, a browser's Accept) by this order
    OFFERS = (YAML, "application/yaml", "application/x-yaml", "text/yaml", falcon.MEDIA_JSON, f"{YAML}+json")

    def __init__(self) -> None:
        self.yaml = resources.files("schemas").joinpath("openapi.yaml").read_bytes()
        self.json = orjson.dumps(yaml.safe_load(self.yaml))

    def wants_json(self, req: Request) -> bool:
        given = req.get_param("format")
        if given is not None:  # ?format wins over Accept
            return given == "json"
        return (req.client_prefers(self.OFFERS) or "").endswith("json")  # None: no Accept matches

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.vary = ("Accept",)
        if self.wants_json(req):
            resp.content_type, resp.data = falcon.MEDIA_JSON, self.json
        else:
            resp.content_type, resp.data = self.YAML, self.yaml


class Health:
    async def on_get(self, req: Request, resp: Response) -> None:
        _json(resp, 200, {"status": "ok"})


class Ready:
    """503 when a dependency does not answer. ``journal`` (the journal epoch check, read from
    memory) is informative only: "degraded: ..." after Redis lost data keeps the 200, so load
    balancers keep routing to a web that accepts and keeps reports again. ``pressure`` is
    "degraded: ..." while back-pressure refuses reports (pending work over MAX_BACKLOG or the
    Redis memory mark); the status is then "degraded", still 200: every web shares the one
    journal, so taking this one out of rotation would relieve nothing."""

    def __init__(
        self,
        checks: dict[str, Callable[[], object]],
        journal: Callable[[], str] | None = None,
        pressure: Callable[[], str] | None = None,
    ) -> None:
        self.checks = checks
        self.journal = journal
        self.pressure = pressure  # "degraded: ..." while back-pressure refuses: status too

    async def on_get(self, req: Request, resp: Response) -> None:
        results, facts = await asyncio.to_thread(self._run)
        ok = all(v == "ok" for v in results.values())
        body: dict[str, str] = {"status": "ok" if ok else "unavailable", **results, **facts}
        if self.journal is not None:
            try:
                body["journal"] = self.journal()
            except Exception as exc:
                body["journal"] = f"unknown: {type(exc).__name__}"
        if self.pressure is not None:
            body["pressure"] = self.pressure()
            if ok and body["pressure"] != "ok":
                body["status"] = "degraded"
        _json(resp, 200 if ok else 503, body)

    def _run(self) -> tuple[dict[str, str], dict[str, str]]:
        """Each check's verdict; a check that returns a dict adds its entries as facts
        (the Redis primary it found, ``redis_primary``), which never decide readiness."""
        results: dict[str, str] = {}
        facts: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                found = check()
                results[name] = "ok"
                if isinstance(found, dict):
                    facts.update({str(k): str(v) for k, v in found.items() if k not in self.checks})
            except Exception as exc:
                results[name] = f"unavailable: {type(exc).__name__}"
        return results, facts


async def _rejected(req: Request, resp: Response | None, ex: Rejected, params: Any) -> None:
    headers = list(getattr(ex, "headers", {}).items())
    if ex.status == 413:  # do not read the rest of a huge body to keep the connection
        headers.append(("Connection", "close"))
    _json(resp, ex.status, ex.body, headers)


async def _backpressure(req: Request, resp: Response | None, ex: Backpressure, p: Any) -> None:
    _json(
        resp,
        503,
        {"detail": "Service temporarily unavailable, try again later."},
        [("Retry-After", str(ex.retry_after))],
    )


async def _http_error(req: Request, resp: Response | None, ex: falcon.HTTPError, p: Any) -> None:
    _json(resp, ex.status_code, {"detail": ex.title or "Error"}, dict(ex.headers or {}).items())


async def _unexpected(req: Request, resp: Response | None, ex: Exception, p: Any) -> None:
    # A defect or an outage, never the client's input: log it, answer without a traceback.
    log.exception("unexpected error on %s %s", req.method, req.path)
    _json(resp, 503, {"detail": "Service temporarily unavailable, try again later."}, [("Retry-After", "1")])


def create_app(
    intake: Callable[[], Intake],
    ready_checks: dict[str, Callable[[], object]],
    max_body: int,
    report_status: Callable[[str, str | None, str | None], dict[str, Any] | None] | None = None,
    *,
    batch_max_body: int = 8 * 1024 * 1024,
    metrics: WebMetrics | None = None,
    exposition: Callable[[], tuple[bytes, str]] | None = None,
) -> falcon.asgi.App[Request, Response]:
    """``metrics`` records what the web sees (default: nothing); ``exposition`` renders the
    Prometheus text, called in a thread after the web flushed its tally, and must not flush
    it itself; /metrics is served only when it is given."""
    recorder: WebMetrics = metrics if metrics is not None else NoMetrics()
    app = falcon.asgi.App(media_type=falcon.MEDIA_JSON)
    app.resp_options.default_media_type = None  # type: ignore[assignment]  # empty answers: no Content-Type
    app.req_options.strip_url_path_trailing_slash = False
    app.add_route(f"{PREFIX}/check_signature/", CheckSignature(intake, max_body, recorder))
    app.add_route(f"{PREFIX}/set_usage/", SetUsage(intake, max_body, recorder))
    app.add_route(f"{PREFIX}/set_usages/", SetUsages(intake, batch_max_body, recorder))
    if report_status is not None:
        app.add_route("/api/usage-reports/{report_id}/", UsageReport(report_status))
    if exposition is not None:
        app.add_route("/metrics", Metrics(recorder, exposition))
    app.add_route("/healthz", Health())
    app.add_route(
        "/readyz", Ready(ready_checks, lambda: intake().journal_status(), lambda: intake().pressure_status())
    )
    app.add_route("/api/schema/", Schema())
    app.add_sink(Docs(), docs.PATTERN)  # Swagger UI of /api/schema/ (not an API operation)
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(Rejected, _rejected)
    app.add_error_handler(Backpressure, _backpressure)
    return app
