"""The set_usage responder: injected faults, the rate cap and latency before the write, and
a record of every call (what /__fake__/calls answers)."""

from __future__ import annotations

import json
import time
from typing import Any

import falcon
import orjson

from ingest.dev.fake_waldur.gate import Pacer, take_fault
from ingest.dev.fake_waldur.store import Store, User
from ingest.dev.fake_waldur.usage import SERVER_ERROR_PAGE, set_usage


def send(resp: falcon.Response, status: int, body: Any = None, html: bool = False) -> None:
    """An answer as Waldur gives it: compact JSON, Django's HTML page, or nothing at all."""
    resp.status = status
    if body is None:
        resp.data = b""
        resp.content_type = None  # Waldur's empty answers carry no Content-Type
    elif html:
        resp.content_type = "text/html; charset=utf-8"
        resp.data = str(body).encode()
    else:
        resp.content_type = "application/json"
        resp.data = orjson.dumps(body)


def user_of(req: falcon.Request) -> User:
    user: User = req.context.user
    return user


class SetUsage:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.pacer = Pacer()

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        started = time.time()
        raw = req.bounded_stream.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError as exc:
            payload = None
            send(resp, 400, {"detail": f"JSON parse error - {exc}"})
        else:
            self._answer(req, resp, payload)
        record(self.store, req, resp, started, raw, payload)

    def _answer(self, req: falcon.Request, resp: falcon.Response, payload: Any) -> None:
        config = self.store.config
        fault = take_fault(self.store, payload)
        if fault is not None:
            req.context.fault = fault
            if fault.get("reset"):
                req.env["fake_waldur.reset"] = True
                send(resp, 500, None)
                return
            status = int(fault.get("status", 500))
            html = fault.get("html", status >= 500 and "body" not in fault)
            send(
                resp,
                status,
                SERVER_ERROR_PAGE if html else fault.get("body", {"detail": "Injected fault."}),
                html,
            )
            if fault.get("retry_after") is not None:
                resp.set_header("Retry-After", str(fault["retry_after"]))
            return
        wait = self.pacer.admit(config.rate, config.rate_mode)
        req.context.admitted = time.time()
        if wait is not None:
            seconds = max(1, round(wait + 0.5))
            send(resp, 429, {"detail": f"Request was throttled. Expected available in {seconds} seconds."})
            resp.set_header("Retry-After", str(seconds))
            return
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        outcome = set_usage(self.store, user_of(req), payload)
        send(resp, outcome.status, outcome.body, outcome.html)


def record(
    store: Store, req: falcon.Request, resp: falcon.Response, started: float, raw: bytes, payload: Any
) -> None:
    """One set_usage call, whatever its answer (401s too, with no user), for /__fake__/calls."""
    with store.lock:
        store.calls.append(
            {
                "index": len(store.calls),
                "time": started,
                "admitted": req.context.get("admitted"),
                "finished": time.time(),
                "user": req.context.user.username if "user" in req.context else None,
                "payload": payload if payload is not None else raw.decode("utf-8", "replace"),
                "status": resp.status_code,
                "body": (resp.data or b"").decode("utf-8", "replace"),
                "fault": "fault" in req.context,
                "reset": bool(req.env.get("fake_waldur.reset")),
            }
        )
