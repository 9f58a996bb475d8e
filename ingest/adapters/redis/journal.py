"""The Redis side: one stream is both the durable journal and the work queue.

Every accepted report is appended with ``XADD`` by a Lua script (accept.lua) that, in the same
atomic round trip, takes the next acceptance sequence (``max(last + 1, clock)``, see
accept.lua), writes the journal epoch the first time and raises a rate-limited "kick" flag.
Workers claim entries through a consumer group (``XREADGROUP``): a claimed entry stays in
the group's pending list until ``XACK``, which happens only after its batch committed, so a
crash anywhere leaves it pending for the reconciler (``XAUTOCLAIM``). Entries are trimmed
only behind the oldest pending entry and after the retention window, so the journal doubles
as the source for ``ingest replay``.

RedisQueue is assembled from this module (accept, claim, ack, reclaim, trim, read), guard.py
(the replay guard) and stats.py (counters, heartbeats); the scripts are in scripts.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import redis

from ingest.adapters.redis.entries import GROUP, entry, id_key, s
from ingest.adapters.redis.guard import ReplayGuard
from ingest.adapters.redis.scripts import Scripts
from ingest.adapters.redis.stats import JournalStats
from ingest.services.ports import Accepted, Delivery

__all__ = ["CLOCK_ORIGIN_MS", "GROUP", "TICKS_PER_MS", "RedisQueue"]

log = logging.getLogger(__name__)

# The acceptance sequence's clock: (ms since this origin) * TICKS_PER_MS (accept.lua).
CLOCK_ORIGIN_MS = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
TICKS_PER_MS = 4096

# A status lookup reads the journal from just before the time its report id carries (the
# web's clock, stamped before the write; the stream id is Redis's, a few milliseconds later
# on one host), at most FIND_MAX_ENTRIES entries, inside Redis: 512 entries hold Redis for
# about 2.5 ms (2,000 took 10 ms, measured 2026-12-01), so an unknown id costs that much and
# no more. Under a load past ~8,000 reports/s a report still queued may be past the bound
# (not found until it is committed, which SQL answers).
FIND_BEFORE_MS = 20
FIND_AFTER_MS = 1000
FIND_MAX_ENTRIES = 512


class RedisQueue(ReplayGuard, JournalStats):
    """Redis adapter for the journal stream. Safe to share between threads (a pool inside)."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        kick_ms: int = 200,
        clock_origin_ms: int = CLOCK_ORIGIN_MS,
        min_replicas: int = 0,
    ) -> None:
        self.client: Any = client  # redis-py's reply types are too wide to be useful here
        # REDIS_MIN_REPLICAS_ACK: claims are refused by a primary with fewer replicas (claim)
        self.min_replicas = min_replicas
        self._cut_off_warned = -60.0
        self.seq_key = f"{prefix}:seq"
        self.epoch_key = f"{prefix}:epoch"
        # tests move the origin to stand for a Redis clock that jumps (accept.lua's ARGV[4])
        self.clock_origin_ms = clock_origin_ms
        # the highest sequence SQL committed, as last seen (note_floor): a second guard
        # under the clock, passed with every accept
        self.floor_hint = 0
        self._epoch_prefix = secrets.token_hex(6)
        self.stream = f"{prefix}:journal"
        self.kick_key = f"{prefix}:kick"
        self.accepted_key = f"{prefix}:accepted"
        self.acked_key = f"{prefix}:acked"
        self.cap_key = f"{prefix}:pending-cap"  # back-pressure's cap (services/pressure.py)
        self.trimmed_key = f"{self.stream}:trimmed"  # the last trim's cut-off (trimmed_ms)
        self.kick_ms = kick_ms
        self.scripts = Scripts.register(client)
        self._group_ready = False

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # -- accept ------------------------------------------------------------------------------

    def _accept_keys_args(
        self, reports: list[tuple[str, bytes]], customer: str, rate: float, burst: float
    ) -> tuple[list[str], list[Any]]:
        args: list[Any] = [
            self.kick_ms,
            rate,
            burst or 2 * rate,
            self.clock_origin_ms,
            self.floor_hint,
            self._epoch_prefix,
        ]
        for report_id, raw in reports:
            args.append(report_id)
            args.append(raw)
        return [
            self.seq_key,
            self.stream,
            self.kick_key,
            f"{self.stream}:rate:{customer}",
            self.accepted_key,
            self.epoch_key,
            self.cap_key,
            self.acked_key,
        ], args

    def accept_command(
        self, reports: list[tuple[str, bytes]], customer: str = "", rate: float = 0.0, burst: float = 0.0
    ) -> list[Any]:
        """The EVALSHA command that appends (report id, envelope) pairs atomically, after
        taking ``len(reports)`` tokens from the customer's bucket when ``rate`` > 0. The web
        pipelines it (adapters/redis/accept.py); ``accepted`` reads its reply: consecutive
        sequences from ``first``, or -1 (nothing written) when the bucket is short."""
        keys, args = self._accept_keys_args(reports, customer, rate, burst)
        return ["EVALSHA", self.scripts.accept.sha, len(keys), *keys, *args]

    @property
    def accept_script(self) -> str:
        """The text of accept.lua, whose SHA1 ``accept_command`` names."""
        return str(self.scripts.accept.script)

    @staticmethod
    def accepted(reply: list[Any]) -> Accepted:
        first, kick, left, reset, flags = reply
        return Accepted(int(first), bool(kick), int(left), int(reset), int(flags))

    def ensure_seq_at_least(self, floor: int) -> int:
        """After a Redis loss, never hand out a sequence at or below one already committed:
        a missing key, or one lower than ``floor``, is raised to it. Also remembered as the
        floor every later accept from this process passes (accept.lua)."""
        self.note_floor(floor)
        return int(self.scripts.seq_floor(keys=[self.seq_key], args=[int(floor)]))

    def note_floor(self, floor: int) -> None:
        """Remember the highest sequence SQL committed: accepts never go at or below it."""
        self.floor_hint = max(self.floor_hint, int(floor))

    # -- the journal epoch -------------------------------------------------------------------

    def journal_epoch(self) -> tuple[str | None, int]:
        """(the epoch marker, the sequence counter) in one round trip; (None, 0) when empty."""
        epoch, seq = self.client.mget(self.epoch_key, self.seq_key)
        return (None if epoch is None else s(epoch)), int(seq or 0)

    def set_epoch(self, epoch: str, only_if_missing: bool = False) -> str:
        """Write the epoch marker (the one already there wins with ``only_if_missing``);
        returns the marker Redis holds now."""
        if self.client.set(self.epoch_key, epoch, nx=only_if_missing):
            return epoch
        return s(self.client.get(self.epoch_key))

    def new_epoch(self) -> str:
        return f"{self._epoch_prefix}-{secrets.token_hex(6)}"

    def entry_seq(self, entry_id: str) -> int | None:
        """The sequence of one journal entry, or None when the journal no longer holds it."""
        rows = self.client.xrange(self.stream, min=entry_id, max=entry_id, count=1)
        return int(rows[0][1].get(b"s", b"0")) if rows else None

    def last_entry(self) -> tuple[str, int] | None:
        """(stream id, sequence) of the newest journal entry."""
        rows = self.client.xrevrange(self.stream, count=1)
        return (s(rows[0][0]), int(rows[0][1].get(b"s", b"0"))) if rows else None

    def entries_after(self, entry_id: str, limit: int = 100_000) -> list[tuple[str, int]]:
        """(stream id, sequence) of the entries after ``entry_id``, oldest first; only those
        two fields cross the wire (entry_seqs.lua)."""
        found: list[tuple[str, int]] = []
        cursor = "(" + entry_id
        while len(found) < limit:
            page = min(1000, limit - len(found))
            flat = self.scripts.entry_seqs(keys=[self.stream], args=[cursor, page])
            found += [(s(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
            if len(flat) < 2 * page:
                break
            cursor = "(" + found[-1][0]
        return found

    # -- claim, ack, reclaim, trim -----------------------------------------------------------

    def claim(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """Claim up to ``count`` never-delivered entries for this consumer; none from a
        primary cut off from its replicas (see ``cut_off``)."""
        self.ensure_group()
        if self.cut_off():
            return []
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
        return [entry(eid, fields) for eid, fields in answer[0][1] if fields]

    def cut_off(self) -> bool:
        """True when replica acknowledgements are required (``min_replicas``) and this Redis
        is a primary with fewer replicas connected: a primary in a split brain (frozen or cut
        off while Sentinel promoted another, and not demoted yet). Its new entries were
        answered 503 (WAIT), and their clock sequences may be handed out again by the new
        primary for reports answered 201; committing them first would quarantine those as
        ``sequence_reused``. They are not claimed: the entries it holds that were replicated
        are on the new primary, and the rest were never acknowledged. A replica (a demoted
        primary) is not cut off: the claim meets READONLY and the connection re-resolves."""
        if self.min_replicas <= 0:
            return False
        role = self.client.execute_command("ROLE")
        if s(role[0]) != "master" or len(role[2]) >= self.min_replicas:
            return False
        now = time.monotonic()
        if now - self._cut_off_warned >= 60:
            self._cut_off_warned = now
            log.warning(
                "this Redis primary has %d of the %d replicas REDIS_MIN_REPLICAS_ACK requires: "
                "claiming nothing from it until they are back or Sentinel names another primary",
                len(role[2]),
                self.min_replicas,
            )
        return True

    def ack(self, entry_ids: list[str]) -> int:
        """Acknowledge committed entries; returns how many were still pending."""
        done = 0
        for i in range(0, len(entry_ids), 1000):
            done += int(
                self.scripts.ack(keys=[self.stream, self.acked_key], args=[GROUP, *entry_ids[i : i + 1000]])
            )
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
                self.ack([s(d) for d in deleted])
            if not answer[1] and cursor == "0-0":
                break
            ids = [eid for eid, fields in answer[1] if fields]
            deliveries = self._deliveries(ids)
            claimed.extend(
                entry(eid, fields, deliveries.get(s(eid), 1)) for eid, fields in answer[1] if fields
            )
            if cursor == "0-0":
                break
        return claimed

    def _deliveries(self, ids: list[Any]) -> dict[str, int]:
        if not ids:
            return {}
        first, last = s(ids[0]), s(ids[-1])
        rows = self.client.xpending_range(self.stream, GROUP, min=first, max=last, count=len(ids) * 2)
        return {s(row["message_id"]): int(row["times_delivered"]) for row in rows}

    def trim(self, retention_seconds: float) -> int:
        """Drop journal entries older than the retention window and behind every consumer
        (``0``: every acknowledged entry, when memory is short and the archive holds them).
        The cut-off is kept (``trimmed_ms``): the journal epoch check expects nothing older."""
        self.ensure_group()
        # retention 0: no time bound at all (an entry of this very millisecond may go too)
        bounds = [f"{int((time.time() - retention_seconds) * 1000)}-0"] if retention_seconds > 0 else []
        for group in self.client.xinfo_groups(self.stream):
            if s(group["name"]) == GROUP:
                bounds.append(s(group["last-delivered-id"]))
        oldest = self.oldest_pending_id()
        if oldest:
            bounds.append(oldest)
        if not bounds:
            return 0
        cutoff = min(bounds, key=id_key)
        trimmed = int(self.client.xtrim(self.stream, minid=cutoff, approximate=False))
        if trimmed:
            self.client.set(self.trimmed_key, cutoff)
        return trimmed

    def trimmed_ms(self) -> int:
        """The acceptance time (ms) before which trims removed entries; 0: never trimmed."""
        cutoff = self.client.get(self.trimmed_key)
        return id_key(s(cutoff))[0] if cutoff else 0

    # -- read --------------------------------------------------------------------------------

    def read_journal(self, start: str = "-", end: str = "+", page: int = 1000) -> Iterator[Delivery]:
        """Every journal entry in acceptance order, between two stream ids (inclusive)."""
        for eid, fields in self._scan(start, end, page):
            yield entry(eid, fields)

    def find(self, report_id: str, accepted_ms: int) -> Delivery | None:
        """The journal entry of a report, looked up where its id's clock says it was accepted
        (FIND_BEFORE_MS before to FIND_AFTER_MS after), reading at most FIND_MAX_ENTRIES
        entries, inside Redis (find.lua): a lookup of an unknown id costs the same bounded
        time whatever the journal holds."""
        start, end = max(0, accepted_ms - FIND_BEFORE_MS), accepted_ms + FIND_AFTER_MS
        found = self.scripts.find(
            keys=[self.stream], args=[f"{start}", f"{end}", report_id, FIND_MAX_ENTRIES]
        )
        if not found:
            return None
        entry_id, flat = found
        return entry(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    def _scan(self, start: str, end: str, page: int = 2000) -> Iterator[tuple[Any, Any]]:
        cursor = start
        while True:
            rows = self.client.xrange(self.stream, min=cursor, max=end, count=page)
            yield from rows
            if len(rows) < page:
                return
            cursor = "(" + s(rows[-1][0])

    def is_pending_or_new(self, entry_id: str) -> bool:
        """True while the entry was never acknowledged by the commit group."""
        self.ensure_group()
        for group in self.client.xinfo_groups(self.stream):
            if s(group["name"]) == GROUP and id_key(entry_id) > id_key(s(group["last-delivered-id"])):
                return True
        return bool(self.client.xpending_range(self.stream, GROUP, min=entry_id, max=entry_id, count=1))
