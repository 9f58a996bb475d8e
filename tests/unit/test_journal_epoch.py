"""The journal epoch check (services/journal_epoch.py) over small fakes of Redis's journal and
SQL's journal_state: a rewind is found whenever the last check ran, never twice, and never
in a journal that lost nothing."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from ingest.services import journal_epoch
from ingest.services.journal_epoch import JournalState, NewestCommitted

RETENTION = 24 * 3600.0


class FakeJournal:
    """A journal: entries (stream id, sequence), the counter and the epoch marker."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.entries: list[tuple[str, int]] = []
        self.seq = 0
        self.epoch: str | None = None
        self._n = 0
        self.trimmed = 0
        self.kept: str | None = None

    def accept(self, count: int = 1) -> list[int]:
        """Accept reports now: clock-based sequences, as accept.lua hands them out."""
        ms = int(self.clock[0] * 1000)
        first = max(self.seq + 1, ms * 4096, (self.entries[-1][1] + 1) if self.entries else 0)
        seqs = list(range(first, first + count))
        self.entries += [(f"{ms}-{i}", q) for i, q in enumerate(seqs)]
        self.seq = seqs[-1]
        if self.epoch is None:
            self.epoch = "accept-epoch"
        return seqs

    def snapshot(self) -> FakeJournal:
        return copy.deepcopy(self)

    def restore(self, older: FakeJournal) -> None:
        self.entries, self.seq, self.epoch = list(older.entries), older.seq, older.epoch
        self.kept, self.trimmed = older.kept, older.trimmed

    # -- EpochJournal ----------------------------------------------------------------------
    def journal_epoch(self) -> tuple[str | None, int]:
        return self.epoch, self.seq

    def set_epoch(self, epoch: str, only_if_missing: bool = False) -> str:
        if not (only_if_missing and self.epoch is not None):
            self.epoch = epoch
        return self.epoch or epoch

    def new_epoch(self) -> str:
        self._n += 1
        return f"epoch-{self._n}"

    def entry_seq(self, entry_id: str) -> int | None:
        return next((q for e, q in self.entries if e == entry_id), None)

    def last_entry(self) -> tuple[str, int] | None:
        return self.entries[-1] if self.entries else None

    def entries_after(self, entry_id: str, limit: int = 100_000) -> list[tuple[str, int]]:
        def key(e: str) -> tuple[int, int]:
            ms, _, n = e.partition("-")
            return int(ms), int(n or 0)

        return [(e, q) for e, q in self.entries if key(e) > key(entry_id)][:limit]

    def ensure_seq_at_least(self, floor: int) -> int:
        self.seq = max(self.seq, floor)
        return self.seq

    def trimmed_ms(self) -> int:
        return self.trimmed

    def keep_from(self, entry_id: str) -> None:
        self.kept = entry_id

    def trim_before(self, ms: int) -> None:
        """Trim as RedisQueue.trim does (trim.lua): drop entries before ``ms`` but never the
        newest (the consumer group's last delivered entry bounds XTRIM MINID) nor the one the
        last check verified (``keep_from``), and keep the cut-off."""
        if self.kept is not None:
            ms = min(ms, int(self.kept.split("-")[0]))
        kept = [(e, q) for e, q in self.entries[:-1] if int(e.split("-")[0]) >= ms]
        self.entries = kept + self.entries[-1:]
        self.trimmed = min(ms, int(self.entries[-1][0].split("-")[0])) if self.entries else ms

    def oldest_unfinished_ms(self) -> int | None:
        return None


class FakeSql:
    """SQL's committed reports (sequence -> acceptance time) and the journal_state row."""

    def __init__(self) -> None:
        self.reports: dict[int, float] = {}
        self.row = JournalState()

    def commit(self, seqs: list[int], accepted_at: float) -> None:
        self.reports.update(dict.fromkeys(seqs, accepted_at))

    @contextmanager
    def locked(self) -> Iterator[FakeSql]:
        yield self

    def state(self) -> JournalState:
        return self.row

    def newest(self) -> NewestCommitted | None:
        if not self.reports:
            return None
        top = max(self.reports)
        return NewestCommitted(top, f"r{top}", self.reports[top])

    def committed_seqs(self, above: int, upto: int) -> set[int]:
        return {q for q in self.reports if above < q <= upto}

    def save(self, state: JournalState) -> None:
        self.row = dataclasses.replace(state)


class World:
    def __init__(self) -> None:
        self.clock = [1_800_000_000.0]
        self.journal = FakeJournal(self.clock)
        self.sql = FakeSql()

    def tick(self, seconds: float = 0.1) -> None:
        self.clock[0] += seconds

    def accept_and_commit(self, count: int = 5) -> list[int]:
        seqs = self.journal.accept(count)
        self.sql.commit(seqs, self.clock[0])
        self.tick()
        return seqs

    def check(self) -> journal_epoch.JournalHealth:
        return journal_epoch.check(self.journal, self.sql, RETENTION, now=lambda: self.clock[0])


def test_no_loss_is_reported_while_nothing_is_lost():
    w = World()
    assert w.check().detected is None  # the first check, an empty journal
    for _ in range(5):
        w.accept_and_commit()
        assert w.check().detected is None
    w.journal.accept(3)  # accepted, not committed yet
    assert w.check().detected is None
    assert w.check().status == "ok"


def test_a_rewind_before_any_check_saw_an_entry_is_found_after_new_accepts():
    """The missed run of test_restart_from_an_older_aof_copy: the only check before the loss
    saw an empty journal (no baseline entry), and the first check after the restart came
    when accepts had lifted the counter above SQL's again."""
    w = World()
    assert w.check().detected is None  # the web's check at start: an empty journal
    w.accept_and_commit(10)
    older = w.journal.snapshot()  # the AOF copy
    lost = w.accept_and_commit(10)  # committed, then lost with the restore
    w.journal.restore(older)
    w.tick(1)
    w.accept_and_commit(10)  # accepted and committed after the restart
    health = w.check()
    assert health.detected is not None, health
    assert "missing from the journal" in health.detected["reason"]
    assert f"{min(lost)}..{max(lost)}" in health.detected["reason"]
    assert w.check().detected is None  # reported once
    assert w.check().status.startswith("degraded:")


def test_a_rewind_is_found_before_anything_is_accepted_again_even_with_the_floor_raised():
    w = World()
    w.check()
    w.accept_and_commit(10)
    older = w.journal.snapshot()
    w.accept_and_commit(10)
    w.journal.restore(older)
    w.journal.ensure_seq_at_least(max(w.sql.reports))  # the reconciler's floor ran first
    health = w.check()
    assert health.detected is not None, health
    assert "newer than the journal's newest entry" in health.detected["reason"]
    assert w.check().detected is None
    w.accept_and_commit(5)  # and later accepts are not taken for another loss
    assert w.check().detected is None


def test_a_rewind_behind_the_verified_entry_is_found():
    w = World()
    w.check()
    w.accept_and_commit(10)
    older = w.journal.snapshot()
    w.accept_and_commit(10)
    assert w.check().detected is None  # the baseline is now past the copy
    w.journal.restore(older)
    w.tick(1)
    w.accept_and_commit(5)
    health = w.check()
    assert health.detected is not None and "is gone" in health.detected["reason"]
    assert w.check().detected is None


def test_a_rewind_after_the_verified_entry_is_found():
    w = World()
    w.check()
    w.accept_and_commit(10)
    assert w.check().detected is None
    older = w.journal.snapshot()
    w.accept_and_commit(10)
    w.journal.restore(older)
    w.tick(1)
    w.accept_and_commit(5)
    health = w.check()
    assert health.detected is not None and "missing from the journal" in health.detected["reason"]
    assert w.check().detected is None


def test_an_emptied_redis_is_found_once_and_then_checked_from_its_new_start():
    w = World()
    w.check()
    w.accept_and_commit(10)
    assert w.check().detected is None
    w.journal.restore(FakeJournal(w.clock))  # came back empty
    w.accept_and_commit(3)
    health = w.check()
    assert health.detected is not None and "different instance" in health.detected["reason"]
    for _ in range(3):
        w.accept_and_commit(3)
        assert w.check().detected is None
    # a rewind in the new epoch is found as well
    older = w.journal.snapshot()
    w.accept_and_commit(3)
    w.journal.restore(older)
    w.tick(1)
    w.accept_and_commit(3)
    assert w.check().detected is not None


def test_a_journal_trimmed_by_its_retention_is_not_a_loss():
    w = World()
    w.check()
    w.accept_and_commit(10)
    assert w.check().detected is None
    w.tick(RETENTION)  # no check for a whole retention window; the old entries are trimmed
    w.journal.entries = []
    w.accept_and_commit(10)
    assert w.check().detected is None
    w.accept_and_commit(10)
    assert w.check().detected is None


def test_an_early_trim_of_committed_entries_is_not_a_loss():
    """Back-pressure with the archive on trims every acknowledged entry at once, right after
    a check verified one of them: what went before the trim's cut-off is not looked for."""
    w = World()
    w.check()
    w.accept_and_commit(10)
    assert w.check().detected is None  # the baseline is an entry about to be trimmed
    w.accept_and_commit(10)
    w.journal.trim_before(int(w.clock[0] * 1000))  # everything committed goes
    w.tick(1)
    w.accept_and_commit(5)
    assert w.check().detected is None
    assert w.check().status == "ok"


def test_a_rewind_after_an_early_trim_is_still_found():
    w = World()
    w.check()
    w.accept_and_commit(10)
    w.journal.trim_before(int(w.clock[0] * 1000))
    w.tick(10)
    assert w.check().detected is None
    older = w.journal.snapshot()
    lost = w.accept_and_commit(10)
    w.journal.restore(older)
    w.tick(1)
    w.accept_and_commit(5)
    health = w.check()
    assert health.detected is not None, health
    assert f"{min(lost)}" in health.detected["reason"] or "newer than" in health.detected["reason"]


def test_a_rewind_then_an_early_trim_before_the_next_check_is_still_found():
    """The trims of back-pressure may run between a rewind and the next check: they stop at
    the entry the last check verified (as the rewound Redis remembers it), so that check still
    finds what is missing."""
    w = World()
    w.check()
    w.accept_and_commit(10)
    assert w.check().detected is None
    older = w.journal.snapshot()
    lost = w.accept_and_commit(10)
    assert w.check().detected is None  # verified an entry the rewind takes away
    w.journal.restore(older)
    w.tick(1)
    w.accept_and_commit(5)
    w.journal.trim_before(int(w.clock[0] * 1000))
    health = w.check()
    assert health.detected is not None, health
    assert "is gone" in health.detected["reason"] or f"{min(lost)}" in health.detected["reason"]


def test_a_trim_during_a_read_of_the_whole_journal_is_not_a_loss():
    """No recent verified entry (the first check, or a stale one): the check reads the whole
    journal page by page while a reconciler trims it. Entries trimmed between two pages are
    not lost: the check reads again once the trims settle."""
    w = World()
    w.check()
    w.accept_and_commit(10)
    w.tick(RETENTION)  # the verified entry is too old to start from: the whole journal is read
    w.accept_and_commit(10)
    reads = {"n": 0}
    entries_after = w.journal.entries_after

    def trimmed_while_read(entry_id: str, limit: int = 100_000) -> list[tuple[str, int]]:
        reads["n"] += 1
        found = entries_after(entry_id, limit)
        if reads["n"] == 1:  # a trim between two pages: the second starts past a gap
            w.journal.trim_before(int(w.clock[0] * 1000))
            return found[:3] + found[6:]
        return found

    w.journal.entries_after = trimmed_while_read  # type: ignore[method-assign]
    assert w.check().detected is None and reads["n"] >= 2
