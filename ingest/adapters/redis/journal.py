"""The Redis side: one stream is both the durable journal and the work queue.

Every accepted report is appended with ``XADD`` by a Lua script that, in the same atomic
round trip, takes the next acceptance sequence (``INCR``) and raises a rate-limited "kick"
flag. Workers claim entries through a consumer group (``XREADGROUP``): a claimed entry stays
in the group's pending list until ``XACK``, which happens only after its batch committed, so
a crash anywhere leaves it pending for the reconciler (``XAUTOCLAIM``). Entries are trimmed
only behind the oldest pending entry and after the retention window, so the journal doubles
as the source for ``ingest replay``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis

from ingest.services.ports import Accepted, Delivery

GROUP = "commit"

# KEYS: sequence, stream, kick flag, rate bucket, accepted counter.
# ARGV: kick period (ms), rate (/s, 0: unlimited), burst, then (report id, envelope) pairs.
# Returns {first sequence, kick, tokens left, seconds to full}; first = -1: rate limited;
# first = -2: the sequence key is missing (a new or emptied Redis): the caller must set its
# floor from SQL first, so a sequence at or below one already committed is never handed out.
_ACCEPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-2, 0, 0, 0} end
local count = (#ARGV - 3) / 2
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local left, reset = -1, 0
if rate > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local b = redis.call('HMGET', KEYS[4], 'tokens', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  -- a batch larger than the bucket is admitted once the bucket is full and leaves it in
  -- debt, so Retry-After is always true and the long-run rate still holds
  local need = math.min(count, burst)
  if tokens < need then
    return {-1, 0, math.max(0, math.floor(tokens)), math.ceil((need - tokens) / rate)}
  end
  tokens = tokens - count
  redis.call('HSET', KEYS[4], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[4], math.ceil((burst - tokens) / rate) + 1)
  left, reset = math.max(0, math.floor(tokens)), math.ceil((burst - tokens) / rate)
end
local last = redis.call('INCRBY', KEYS[1], count)
redis.call('INCRBY', KEYS[5], count)
local first = last - count + 1
for i = 0, count - 1 do
  redis.call('XADD', KEYS[2], '*', 's', first + i, 'i', ARGV[4 + 2 * i], 'r', ARGV[5 + 2 * i])
end
local kick = 0
if redis.call('SET', KEYS[3], '1', 'PX', ARGV[1], 'NX') then kick = 1 end
return {first, kick, left, reset}
"""

# Acknowledge entries and count only those newly acknowledged: accepted - acked = backlog.
_ACK = """
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('INCRBY', KEYS[2], n)
return n
"""

_SEQ_FLOOR = """
local raw = redis.call('GET', KEYS[1])
local current = tonumber(raw or '0')
local floor = tonumber(ARGV[1])
if raw == false or current < floor then redis.call('SET', KEYS[1], math.max(current, floor)) end
return math.max(current, floor)
"""


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes], deliveries: int = 1) -> Delivery:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Delivery(eid, int(fields.get(b"s", b"0")), fields.get(b"r", b""), deliveries)


class RedisQueue:
    """Redis adapter for the journal stream. Safe to share between threads (a pool inside)."""

    def __init__(self, client: redis.Redis, prefix: str, kick_ms: int = 200) -> None:
        self.client: Any = client  # redis-py's reply types are too wide to be useful here
        self.seq_key = f"{prefix}:seq"
        self.stream = f"{prefix}:journal"
        self.kick_key = f"{prefix}:kick"
        self.accepted_key = f"{prefix}:accepted"
        self.acked_key = f"{prefix}:acked"
        self.kick_ms = kick_ms
        self._accept = client.register_script(_ACCEPT)
        self._seq_floor = client.register_script(_SEQ_FLOOR)
        self._ack = client.register_script(_ACK)
        self._group_ready = False
        self._local = threading.local()

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def accept(
        self, reports: list[tuple[str, bytes]], customer: str = "", rate: float = 0.0, burst: float = 0.0
    ) -> Accepted:
        """Append (report id, envelope) pairs atomically in one round trip, after taking
        ``len(reports)`` tokens from the customer's bucket when ``rate`` > 0.

        The sequences are consecutive from ``first``, in order; ``first`` is -1 (and nothing
        was written) when the bucket is short.
        """
        return self.accepted(
            self._evalsha(self._accept, *self._accept_keys_args(reports, customer, rate, burst))
        )

    def _accept_keys_args(
        self, reports: list[tuple[str, bytes]], customer: str, rate: float, burst: float
    ) -> tuple[list[str], list[Any]]:
        args: list[Any] = [self.kick_ms, rate, burst or 2 * rate]
        for report_id, raw in reports:
            args.append(report_id)
            args.append(raw)
        return [
            self.seq_key,
            self.stream,
            self.kick_key,
            f"{self.stream}:rate:{customer}",
            self.accepted_key,
        ], args

    def accept_command(
        self, reports: list[tuple[str, bytes]], customer: str = "", rate: float = 0.0, burst: float = 0.0
    ) -> list[Any]:
        """The EVALSHA command ``accept`` sends, for a caller that pipelines it elsewhere
        (adapters/redis_accept.py); ``accepted`` reads its reply."""
        keys, args = self._accept_keys_args(reports, customer, rate, burst)
        return ["EVALSHA", self._accept.sha, len(keys), *keys, *args]

    @property
    def accept_script(self) -> str:
        return str(self._accept.script)

    @staticmethod
    def accepted(reply: list[Any]) -> Accepted:
        first, kick, left, reset = reply
        return Accepted(int(first), bool(kick), int(left), int(reset))

    def _evalsha(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a script on a connection of this thread's own, past redis-py's pool and retry
        layers: they cost the web 30 us of CPU a request, half of its Redis client cost.

        Never retried after a connection error or timeout: the script may have run, and
        running it again would append the reports twice. The caller answers 503 instead and
        the provider resends. NOSCRIPT (a restarted Redis) means it did not run: the script
        is loaded and run once more."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():  # a connection never crosses a fork
            conn = local.conn = self.client.connection_pool.make_connection()
            local.pid = os.getpid()
        try:
            try:
                conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                self.client.script_load(script.script)
                conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()
            raise

    def claim_tokens(self, customer: str, digests: list[str], ttl: float) -> list[bool]:
        """Remember each token for ``ttl`` seconds, in one round trip; per digest, False when
        it was already seen (also when it comes twice in ``digests``)."""
        pipe = self.client.pipeline(transaction=False)
        for digest in digests:
            pipe.set(f"{self.stream}:seen:{customer}:{digest}", "1", nx=True, px=max(1, int(ttl * 1000)))
        return [bool(ok) for ok in pipe.execute()]

    def forget_tokens(self, customer: str, digests: list[str]) -> None:
        if digests:
            self.client.delete(*[f"{self.stream}:seen:{customer}:{d}" for d in digests])

    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """Claim up to ``count`` never-delivered entries for this consumer."""
        self.ensure_group()
        try:
            answer = self.client.xreadgroup(
                GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms or None
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            self.ensure_group()
            return []
        if not answer:
            return []
        return [_entry(eid, fields) for eid, fields in answer[0][1] if fields]

    def ack(self, entry_ids: list[str]) -> int:
        """Acknowledge committed entries; returns how many were still pending."""
        done = 0
        for i in range(0, len(entry_ids), 1000):
            done += int(self._ack(keys=[self.stream, self.acked_key], args=[GROUP, *entry_ids[i : i + 1000]]))
        return done

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 500) -> list[Delivery]:
        """Take over entries pending longer than ``min_idle_ms`` (crashed or stuck workers)."""
        self.ensure_group()
        claimed: list[Delivery] = []
        cursor = "0-0"
        while len(claimed) < count:
            answer = self.client.xautoclaim(
                self.stream, GROUP, consumer, min_idle_ms, cursor, count=count - len(claimed)
            )
            cursor = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
            deleted = answer[2] if len(answer) > 2 else []
            if deleted:
                self.ack([_s(d) for d in deleted])
            if not answer[1] and cursor == "0-0":
                break
            ids = [eid for eid, fields in answer[1] if fields]
            deliveries = self._deliveries(ids)
            claimed.extend(
                _entry(eid, fields, deliveries.get(_s(eid), 1)) for eid, fields in answer[1] if fields
            )
            if cursor == "0-0":
                break
        return claimed

    def _deliveries(self, ids: list[Any]) -> dict[str, int]:
        if not ids:
            return {}
        first, last = _s(ids[0]), _s(ids[-1])
        rows = self.client.xpending_range(self.stream, GROUP, min=first, max=last, count=len(ids) * 2)
        return {_s(row["message_id"]): int(row["times_delivered"]) for row in rows}

    def pending_count(self) -> int:
        self.ensure_group()
        info = self.client.xpending(self.stream, GROUP)
        return int(info["pending"])

    def backlog(self, limit: int = 0) -> int:
        """Reports accepted but not yet committed (never delivered plus pending).

        Two counters kept by the accept and ack scripts: O(1) on every Redis version, so the
        back-pressure check costs the same whatever the backlog (``limit`` is ignored).
        """
        accepted, acked = self.client.mget(self.accepted_key, self.acked_key)
        return max(0, int(accepted or 0) - int(acked or 0))

    def memory(self) -> tuple[int, int]:
        """(used_memory, maxmemory) in bytes; maxmemory 0 means unbounded."""
        info = self.client.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    def oldest_pending_id(self) -> str | None:
        self.ensure_group()
        info = self.client.xpending(self.stream, GROUP)
        return _s(info["min"]) if info.get("min") else None

    def trim(self, retention_seconds: float) -> int:
        """Drop journal entries older than the retention window and behind every consumer."""
        self.ensure_group()
        cutoff = f"{int((time.time() - retention_seconds) * 1000)}-0"
        for group in self.client.xinfo_groups(self.stream):
            if _s(group["name"]) == GROUP:
                cutoff = min(cutoff, _s(group["last-delivered-id"]), key=_id_key)
        oldest = self.oldest_pending_id()
        if oldest:
            cutoff = min(cutoff, oldest, key=_id_key)
        return int(self.client.xtrim(self.stream, minid=cutoff, approximate=False))

    def read_journal(self, start: str = "-", end: str = "+", page: int = 1000) -> Iterator[Delivery]:
        """Every journal entry in acceptance order, between two stream ids (inclusive)."""
        for eid, fields in self._scan(start, end, page):
            yield _entry(eid, fields)

    def journal_length(self) -> int:
        return int(self.client.xlen(self.stream))

    def find(self, report_id: str, accepted_ms: int, window_ms: int = 5000) -> Delivery | None:
        """The journal entry of a report, looked up around its acceptance time."""
        start = f"{max(0, accepted_ms - window_ms)}-0"
        end = f"{accepted_ms + window_ms}-0"
        wanted = report_id.encode()
        for entry_id, fields in self._scan(start, end):
            if fields.get(b"i") == wanted:
                return _entry(entry_id, fields)
        return None

    def _scan(self, start: str, end: str, page: int = 2000) -> Iterator[tuple[Any, Any]]:
        cursor = start
        while True:
            rows = self.client.xrange(self.stream, min=cursor, max=end, count=page)
            yield from rows
            if len(rows) < page:
                return
            cursor = "(" + _s(rows[-1][0])

    def is_pending_or_new(self, entry_id: str) -> bool:
        """True while the entry was never acknowledged by the commit group."""
        self.ensure_group()
        for group in self.client.xinfo_groups(self.stream):
            if _s(group["name"]) == GROUP and _id_key(entry_id) > _id_key(_s(group["last-delivered-id"])):
                return True
        return bool(self.client.xpending_range(self.stream, GROUP, min=entry_id, max=entry_id, count=1))

    def ensure_seq_at_least(self, floor: int) -> int:
        """After a Redis loss, never hand out a sequence at or below one already committed."""
        return int(self._seq_floor(keys=[self.seq_key], args=[floor]))

    def heartbeat(self, consumer: str, ttl: int = 60) -> None:
        self.client.set(f"{self.stream}:worker:{consumer}", str(time.time()), ex=ttl)

    def workers_seen(self) -> list[str]:
        prefix = f"{self.stream}:worker:"
        return sorted(_s(k)[len(prefix) :] for k in self.client.scan_iter(prefix + "*"))

    def record_reconcile(self, summary: dict[str, int]) -> None:
        self.client.set(f"{self.stream}:reconciled", json.dumps({"at": time.time(), **summary}))

    def last_reconcile(self) -> dict[str, Any] | None:
        raw = self.client.get(f"{self.stream}:reconciled")
        return json.loads(raw) if raw else None

    def ping(self) -> bool:
        return bool(self.client.ping())


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)
