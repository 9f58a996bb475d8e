"""What every forwarder process shares, in Redis (services.forward_ports.ForwardGate): the
global token bucket of WALDUR_FORWARD_RATE (forward_bucket.lua), the hold that stops all
forwarding for a while (a 401/403, a Retry-After), and small notes for ``ingest waldur
status`` (the last forward error, the server version seen)."""

from __future__ import annotations

import json
import time
from importlib.resources import files
from typing import Any

import redis

# One token at most in hand: calls are spaced 1/rate apart, so no one-second window holds
# more than rate + 1 calls, whatever the number of processes.
BURST = 1.0


class RedisForwardGate:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.bucket_key = f"{prefix}:waldur:forward:bucket"
        self.hold_key = f"{prefix}:waldur:forward:hold"
        self.note_prefix = f"{prefix}:waldur:forward:note:"
        source = files(__package__).joinpath("forward_bucket.lua").read_text(encoding="utf-8")
        self._take = client.register_script(source)

    def take(self, rate: float) -> float:
        if rate <= 0:
            return 0.0
        wait_ms = int(self._take(keys=[self.bucket_key], args=[rate, BURST]))
        return wait_ms / 1000.0

    def hold(self, seconds: float, kind: str, reason: str) -> None:
        until = time.time() + seconds
        doc = json.dumps({"kind": kind, "reason": reason, "until": until})
        current = self.held()
        if current is not None and current["until"] >= until:
            return  # a longer hold stands
        self.client.set(self.hold_key, doc, px=max(1, int(seconds * 1000)))

    def held(self) -> dict[str, Any] | None:
        raw = self.client.get(self.hold_key)
        if raw is None:
            return None
        doc: dict[str, Any] = json.loads(raw)
        return doc

    def note(self, name: str, doc: dict[str, Any]) -> None:
        self.client.set(self.note_prefix + name, json.dumps(doc, default=str))

    def noted(self, name: str) -> dict[str, Any] | None:
        raw = self.client.get(self.note_prefix + name)
        return None if raw is None else dict(json.loads(raw))

    def clear_hold(self) -> None:
        self.client.delete(self.hold_key)
