"""What stands before a set_usage write: token authentication, the rate cap, injected faults."""

from __future__ import annotations

import threading
import time
from typing import Any

from ingest.dev.fake_waldur.formats import parse_uuid
from ingest.dev.fake_waldur.store import Store, User

NOT_PROVIDED = "Authentication credentials were not provided."


class Unauthorized(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def authenticate(store: Store, header: str | None, query_token: str | None) -> User:
    """DRF TokenAuthentication with Waldur's token lifetime (idle expiry)."""
    parts = (header or "").split()
    if not parts and store.config.mode != "8" and query_token:  # 7.x also read ?x-auth-token=
        parts = ["Token", query_token]
    if not parts or parts[0].lower() != "token":
        raise Unauthorized(NOT_PROVIDED)
    if len(parts) == 1:
        raise Unauthorized("Invalid token header. No credentials provided.")
    if len(parts) > 2:
        raise Unauthorized("Invalid token header. Token string should not contain spaces.")
    with store.lock:
        user = store.users.get(parts[1])
        if user is None:
            raise Unauthorized("Invalid token.")
        if not user.is_active:
            raise Unauthorized("User inactive or deleted.")
        idle = time.monotonic() - user.refreshed
        if user.token_lifetime is not None and idle > user.token_lifetime:
            raise Unauthorized("Token has expired.")
        # 7.x refreshes on every request; 8.x at most once per half-lifetime
        if store.config.mode != "8" or user.token_lifetime is None or idle >= user.token_lifetime / 2:
            user.refreshed = time.monotonic()
        return user


class Pacer:
    """``--rate``: calls wait for their slot (queue), or get 429 with Retry-After."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0
        self._rate: float | None = None

    def admit(self, rate: float | None, mode: str) -> float | None:
        """Sleeps until the caller's slot; in 429 mode answers the wait instead of taking one."""
        if not rate:
            self._rate = None
            return None
        with self._lock:
            now = time.monotonic()
            if rate != self._rate:  # a new cap starts afresh
                self._rate, self._next = rate, now
            slot = max(now, self._next)
            if mode == "429" and slot - now > 0.001:
                return slot - now
            self._next = slot + 1.0 / rate
        if slot > now:
            time.sleep(slot - now)
        return None


def take_fault(store: Store, payload: Any) -> dict[str, Any] | None:
    """The first injected fault that applies to this call (counted ones are used up)."""
    resource = parse_uuid(str(payload.get("resource"))) if isinstance(payload, dict) else None
    with store.lock:
        for fault in store.faults:
            target = fault.get("resource")
            if target is not None and target != resource:
                continue
            if fault.get("remaining") is not None:
                if fault["remaining"] <= 0:
                    continue
                fault["remaining"] -= 1
            fault["used"] = fault.get("used", 0) + 1
            return fault
    return None
