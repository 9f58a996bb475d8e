"""The one builder of the official client, and the one reading of what a failed call means.

The client raises ``UnexpectedStatus`` (status and raw body, no headers) for every status it
does not expect, and httpx errors for the transport. A response hook keeps ``Retry-After`` of
the last answer so a 429 or a 503 can be honoured. Error bodies are not always JSON objects
(a bare list from 7.x, Django's HTML page on a 500): they are kept as text, parsed only when
they parse.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from importlib import metadata
from typing import Any

import httpx
from waldur_api_client import AuthenticatedClient
from waldur_api_client.errors import UnexpectedStatus

# WaldurFailure.kind
UNAUTHORIZED = "unauthorized"  # 401: a configuration error (token wrong, expired, user gone)
FORBIDDEN = "forbidden"  # 403: the token lacks a role
REJECTED = "rejected"  # other 4xx: Waldur will never take this request as it is
THROTTLED = "throttled"  # 429: a proxy in front of Waldur asks us to slow down
SERVER_ERROR = "server_error"  # 5xx: often transient, not always (a 500 that repeats)
TRANSPORT = "transport"  # timeout, refused or reset connection, bad gateway answer

TRANSIENT_KINDS = frozenset({THROTTLED, SERVER_ERROR, TRANSPORT})


@dataclasses.dataclass(frozen=True)
class WaldurFailure(Exception):
    kind: str
    status: int | None
    body: str
    retry_after: float | None = None

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no answer"
        return f"Waldur {self.kind} ({where}): {self.body[:300]}"

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT_KINDS

    def parsed_body(self) -> Any:
        """The body as JSON when it is JSON (an object, or a bare list), else the text."""
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body


_last_retry_after = threading.local()


def _remember_retry_after(response: httpx.Response) -> None:
    _last_retry_after.value = response.headers.get("Retry-After")


def _retry_after_seconds() -> float | None:
    raw = getattr(_last_retry_after, "value", None)
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def make_client(url: str, token: str, timeout: float) -> AuthenticatedClient:
    """The client for WALDUR_URL with our timeout (the client has none by default)."""
    try:
        version = metadata.version("usage-ingest")
    except metadata.PackageNotFoundError:
        version = "dev"
    return AuthenticatedClient(
        base_url=url.rstrip("/"),
        token=token,
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": f"usage-ingest/{version}"},
        httpx_args={"event_hooks": {"response": [_remember_retry_after]}},
    )


def failure(exc: BaseException) -> WaldurFailure | None:
    """What a call's exception means, or None when it is not a Waldur or transport failure."""
    if isinstance(exc, WaldurFailure):
        return exc
    if isinstance(exc, UnexpectedStatus):
        status = exc.status_code
        body = exc.content.decode("utf-8", errors="replace")
        if status == 401:
            return WaldurFailure(UNAUTHORIZED, status, body)
        if status == 403:
            return WaldurFailure(FORBIDDEN, status, body)
        if status == 429:
            return WaldurFailure(THROTTLED, status, body, _retry_after_seconds())
        if status >= 500:
            return WaldurFailure(SERVER_ERROR, status, body, _retry_after_seconds())
        return WaldurFailure(REJECTED, status, body)
    if isinstance(exc, httpx.TransportError | httpx.DecodingError):
        return WaldurFailure(TRANSPORT, None, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ValueError | KeyError | TypeError):
        # the client could not parse a 2xx body (an unknown enum, a missing key)
        return WaldurFailure(REJECTED, None, f"unparseable answer: {type(exc).__name__}: {exc}")
    return None
