"""Know when Redis lost data: the journal epoch.

The accept script writes a random marker (the epoch) with the first entry of a Redis's
journal. SQL keeps, in one row (journal_state), the epoch it trusts, the highest sequence it
committed under it, and when everything accepted before some moment was final in SQL. Every
check -- each reconciler pass and the web's background thread, never the request path --
compares the two, holding that row's lock so only one process acts on what it finds:

- Redis's epoch is missing or another one: Redis came back empty (or was flushed), or it is
  a different instance;
- Redis's sequence counter is below the highest sequence SQL committed, SQL's newest report
  is newer than the journal's newest entry, or a report SQL committed since the last check
  is not in the journal although its retention has not passed: Redis was restarted from an
  older AOF or snapshot (a power cut's lost second). The counter alone is not enough (the
  clock sequence lifts it past SQL's at the first accept after a restart); the comparison
  of SQL's sequences with the journal's entries does not depend on when the check runs, as
  long as the last check left a baseline -- the entry it saw, or, when it saw an empty
  journal, SQL's highest sequence then (see _findings).

Either is a detected loss: logged once as an ERROR with what was found, counted, shown by
/readyz ("journal": "degraded: ...", still 200) and ``ingest stats`` for DEGRADED_SECONDS.
Then a new epoch is adopted (written to Redis, recorded in SQL) and the sequence is raised
above SQL's, so the condition is reported once, not stuck. The reports that were accepted
but not committed cannot be named (their ids were only in Redis): the loss record gives the
window they were accepted in, from the last check's "everything before was final" moment to
the detection.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

log = logging.getLogger(__name__)

DEGRADED_SECONDS = 3600.0  # /readyz and ``ingest stats`` say degraded this long after a loss
RETENTION_MARGIN = 300.0  # a committed entry this close to its retention may be trimmed
SAFE_MARGIN = 5.0  # web clocks vs Redis's: a report id's time may precede its XADD


@dataclasses.dataclass(frozen=True)
class JournalState:
    """The SQL row (times are Unix seconds)."""

    epoch: str | None = None
    floor_seq: int = 0  # SQL's highest sequence when this epoch was adopted
    committed_seq: int = 0  # the highest sequence SQL had committed at the last check
    committed_accepted_at: float | None = None  # that report's acceptance time
    verified_id: str | None = None  # the newest journal entry the last check saw (stream id)
    verified_seq: int = 0  # its sequence: SQL's reports above it are compared with the journal
    safe_since: float | None = None  # at the last good check, all accepted before was final
    checked_at: float | None = None
    adopted_at: float | None = None
    losses: int = 0
    last_loss_at: float | None = None
    last_loss: dict[str, Any] | None = None


class NewestCommitted(NamedTuple):
    seq: int
    report_id: str
    accepted_at: float


class EpochTransaction(Protocol):
    """One SQL transaction holding journal_state's row lock."""

    def state(self) -> JournalState:
        """The row (JournalState() when it was just created)."""

    def newest(self) -> NewestCommitted | None:
        """The report with the highest sequence in SQL (any final state)."""

    def committed_seqs(self, above: int, upto: int) -> set[int]:
        """Sequences of SQL's reports with above < seq <= upto."""

    def save(self, state: JournalState) -> None: ...


class EpochStore(Protocol):
    def locked(self) -> AbstractContextManager[EpochTransaction]:
        """A transaction holding the row lock; committed when the block exits cleanly."""


class EpochJournal(Protocol):
    """The Redis side (adapters/redis RedisQueue)."""

    def journal_epoch(self) -> tuple[str | None, int]: ...

    def set_epoch(self, epoch: str, only_if_missing: bool = False) -> str: ...

    def new_epoch(self) -> str: ...

    def entry_seq(self, entry_id: str) -> int | None: ...

    def last_entry(self) -> tuple[str, int] | None: ...

    def entries_after(self, entry_id: str, limit: int = 100_000) -> list[tuple[str, int]]: ...

    def ensure_seq_at_least(self, floor: int) -> int: ...

    def oldest_unfinished_ms(self) -> int | None: ...

    def trimmed_ms(self) -> int:
        """Acceptance time (ms) before which trims removed entries (0: never trimmed)."""

    def keep_from(self, entry_id: str) -> None:
        """Trims keep this entry and what follows it (until a later check moves it on)."""


@dataclasses.dataclass(frozen=True)
class JournalHealth:
    status: str  # "ok", "degraded: ..." or "unknown: ..."
    state: JournalState | None = None
    detected: dict[str, Any] | None = None  # the loss this check found, if it found one

    def as_dict(self) -> dict[str, Any]:
        state = self.state or JournalState()
        return {
            "status": self.status,
            "epoch": state.epoch,
            "committed_seq": state.committed_seq,
            "checked_at": _iso(state.checked_at),
            "losses_detected": state.losses,
            "last_loss": state.last_loss,
        }


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def health_of(state: JournalState, now: float) -> JournalHealth:
    if state.last_loss_at is not None and now - state.last_loss_at < DEGRADED_SECONDS and state.last_loss:
        loss = state.last_loss
        return JournalHealth(
            f"degraded: Redis lost journal data ({loss.get('reason')}); detected "
            f"{loss.get('detected_at')}; reports accepted from {loss.get('lost_from')} to "
            f"{loss.get('lost_to')} that are not in SQL are lost",
            state,
        )
    return JournalHealth("ok", state)


def _stream_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0] or 0)


Findings = tuple[list[str], str | None, int, tuple[str, int] | None]


def _findings(
    journal: EpochJournal,
    txn: EpochTransaction,
    state: JournalState,
    newest: NewestCommitted | None,
    now: float,
    retention_seconds: float,
) -> Findings:
    """``_compare``, again when a trim ran while it read the journal: a trim that takes
    entries between two pages of the read would look like a loss. Trims never take the
    entry the last check verified nor what follows it (trim.lua), so this matters only when
    the whole journal is read (no recent verified entry); after three tries with trims
    under way it reports nothing this time and the next check reads again."""
    for _ in range(3):
        before = journal.trimmed_ms()
        found = _compare(journal, txn, state, newest, now, retention_seconds)
        if not found[0] or journal.trimmed_ms() == before:
            return found
    log.info("journal epoch check: trims ran during each read of the journal; checking again later")
    return [], found[1], found[2], None


def _compare(
    journal: EpochJournal,
    txn: EpochTransaction,
    state: JournalState,
    newest: NewestCommitted | None,
    now: float,
    retention_seconds: float,
) -> Findings:
    """What is wrong, Redis's (epoch, sequence), and the newest entry now verified.

    Besides the epoch and the counter (which the clock sequence and the reconciler's floor
    lift past SQL's again at the first accept or pass after a restart, so they cannot be
    relied on), SQL's committed reports are compared with the journal, which keeps every
    entry for its retention window:

    - the newest report committed in this epoch must not be newer than the journal's newest
      entry (a journal rewound and not written to since);
    - every report committed above a baseline must be in the journal: SQL's sequences
      between the baseline and the journal's newest sequence are compared with the entries.
      The baseline is the entry the last check verified; when that check found the journal
      empty (a new Redis, a new epoch, or the first check of all) it is SQL's highest
      sequence then, compared with the whole journal, so a loss before the first check that
      saw an entry is found too; when the last check is older than the retention, it is the
      journal's oldest entry.

    Sequences of an earlier epoch (at or below ``floor_seq``) are never expected."""
    top = newest.seq if newest else 0
    redis_epoch, redis_seq = journal.journal_epoch()
    if redis_epoch is None:
        return ["Redis holds no journal epoch: it came back empty or was flushed"], None, redis_seq, None
    if redis_epoch != state.epoch:
        return (
            [
                f"Redis journal epoch {redis_epoch} is not the {state.epoch} SQL knows: Redis came back "
                "empty or is a different instance"
            ],
            redis_epoch,
            redis_seq,
            None,
        )
    if redis_seq < top:
        return (
            [
                f"Redis's sequence {redis_seq} is below the highest committed {top}: Redis restarted "
                "from an older AOF or snapshot"
            ],
            redis_epoch,
            redis_seq,
            None,
        )
    # seconds an entry is surely still there (half a retention shorter than 10 minutes)
    keep = retention_seconds - min(RETENTION_MARGIN, retention_seconds / 2)
    last = journal.last_entry()
    # ``newest`` was read before the journal: its entry was appended before it committed
    recent_top = newest is not None and top > state.floor_seq and now - newest.accepted_at < keep
    if recent_top and (last is None or last[1] < top):
        return (
            [
                f"the newest committed report (sequence {top}) is newer than the journal's newest "
                f"entry ({'none' if last is None else last[1]}): Redis restarted from an older AOF "
                "or snapshot"
            ],
            redis_epoch,
            redis_seq,
            None,
        )
    # a trim (the retention, or back-pressure's early trim with the archive on) removes
    # entries legitimately: nothing accepted before its cut-off is expected
    trim_ms = journal.trimmed_ms()
    fresh = (
        state.verified_id is not None
        and now * 1000 - _stream_ms(state.verified_id) < keep * 1000
        and _stream_ms(state.verified_id) >= trim_ms
    )
    if fresh and state.verified_id is not None:
        if journal.entry_seq(state.verified_id) != state.verified_seq:
            return (
                [
                    f"journal entry {state.verified_id} (sequence {state.verified_seq}), there at the "
                    "last check, is gone: Redis restarted from an older AOF or snapshot"
                ],
                redis_epoch,
                redis_seq,
                None,
            )
        start, floor = state.verified_id, max(state.verified_seq, state.floor_seq)
        verified: tuple[str, int] | None = (state.verified_id, state.verified_seq)
        trimmed = False
    else:
        start, floor, verified = "0-0", state.floor_seq, None  # the whole journal
        recent = state.checked_at is not None and now - state.checked_at < keep
        recent = recent and trim_ms < ((state.checked_at or 0) - SAFE_MARGIN) * 1000
        trimmed = not (state.verified_id is None and recent)
        if not trimmed:  # the last check found the journal empty: all since must be in it
            floor = max(floor, state.committed_seq)
    after = journal.entries_after(start)
    if not after:
        return [], redis_epoch, redis_seq, verified
    if trimmed:  # older entries may have gone with the retention
        floor = max(floor, after[0][1] - 1)
    upto = max(seq for _eid, seq in after)
    missing = txn.committed_seqs(floor, upto) - {seq for _eid, seq in after} if upto > floor else set()
    if missing:
        return (
            [
                f"{len(missing)} report(s) committed to SQL are missing from the journal (sequences "
                f"{min(missing)}..{max(missing)}): Redis restarted from an older AOF or snapshot "
                "(the last second before a power cut)"
            ],
            redis_epoch,
            redis_seq,
            None,
        )
    newest_id = max(after, key=lambda e: tuple(int(p or 0) for p in e[0].partition("-")[::2]))[0]
    return [], redis_epoch, redis_seq, (newest_id, upto)


def check(
    journal: EpochJournal,
    store: EpochStore,
    retention_seconds: float,
    on_loss: Callable[[dict[str, Any]], None] | None = None,
    now: Callable[[], float] = time.time,
) -> JournalHealth:
    """One check (see the module docstring); raises when Redis or SQL cannot be reached."""
    detected: dict[str, Any] | None = None
    with store.locked() as txn:
        state = txn.state()
        newest = txn.newest()
        top = newest.seq if newest else 0
        t = now()
        redis_epoch: str | None = None
        redis_seq = 0
        verified: tuple[str, int] | None = None
        if state.epoch is None:  # the first check ever: trust what Redis holds
            epoch = journal.set_epoch(journal.new_epoch(), only_if_missing=True)
            state = dataclasses.replace(state, epoch=epoch, floor_seq=top, adopted_at=t)
            found: list[str] = []
            verified = journal.last_entry()
        else:
            found, redis_epoch, redis_seq, verified = _findings(
                journal, txn, state, newest, t, retention_seconds
            )
        if found:
            epoch = journal.set_epoch(journal.new_epoch())
            since = state.safe_since
            detected = {
                "detected_at": _iso(t),
                "reason": found[0],
                "redis_epoch": redis_epoch,
                "sql_epoch": state.epoch,
                "redis_seq": redis_seq,
                "sql_committed_seq": top,
                "newest_committed": newest.report_id if newest else None,
                "newest_committed_accepted_at": _iso(newest.accepted_at) if newest else None,
                # accepted-but-uncommitted reports were accepted in this window; their ids
                # were only in Redis, so SQL cannot name them
                "lost_from": _iso(since if since is not None else state.adopted_at),
                "lost_to": _iso(t),
                "new_epoch": epoch,
            }
            state = dataclasses.replace(
                state,
                epoch=epoch,
                floor_seq=top,
                adopted_at=t,
                losses=state.losses + 1,
                last_loss_at=t,
                last_loss=detected,
            )
            verified = journal.last_entry()  # verify from here on, in the new epoch
        journal.ensure_seq_at_least(top)
        oldest = journal.oldest_unfinished_ms()
        safe = min(t, oldest / 1000 if oldest is not None else t) - SAFE_MARGIN
        state = dataclasses.replace(
            state,
            committed_seq=top,
            committed_accepted_at=newest.accepted_at if newest else None,
            verified_id=verified[0] if verified else None,
            verified_seq=verified[1] if verified else 0,
            safe_since=safe if state.safe_since is None else max(state.safe_since, safe),
            checked_at=t,
        )
        txn.save(state)
    if verified is not None:
        # the early trims of back-pressure run every half second: none may take the entry
        # the next check starts from, or what follows it, before that check has read them
        journal.keep_from(verified[0])
    if detected is not None:
        log.error("journal data loss detected: %s", detected)
        if on_loss is not None:
            try:
                on_loss(detected)
            except Exception:  # a metric must not undo the record
                log.exception("recording the journal loss failed")
    return dataclasses.replace(health_of(state, now()), detected=detected)
