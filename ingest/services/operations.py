"""Operator services: report status, quarantine replay, journal replay, queue statistics.

Replay guarantees: it is idempotent and sequence-guarded. Reports already in a final state in
SQL are skipped; everything else is committed through the same Committer as the workers, in
acceptance order, so replaying twice -- or replaying old reports after newer ones -- changes
nothing that should not change. Replay reads the journal archive (every report a worker
finalised, JOURNAL_ARCHIVE_DAYS back) and the Redis journal (the pending entries and the last
JOURNAL_RETENTION_MINUTES) merged into one acceptance order, each entry once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import msgspec

from ingest.domain.ids import accepted_ms, canonical_month, canonical_uuid, stream_id_key
from ingest.domain.model import UsageKey
from ingest.services.archive_ports import Archive, ArchiveProblem
from ingest.services.commit import Committer, Outcome
from ingest.services.ports import Delivery, OperatorJournal, ReadModel
from schemas import queue as wire


class OperatorPorts(Protocol):
    """What the operator services use; ``ingest.bootstrap.Runtime`` provides it, unit tests
    a small fake."""

    @property
    def journal(self) -> OperatorJournal: ...

    @property
    def read_model(self) -> ReadModel: ...

    @property
    def committer(self) -> Committer: ...

    @property
    def archive(self) -> Archive | None:
        """The journal archive, or None when JOURNAL_ARCHIVE_DIR is off."""

    def accepted_count(self) -> int:
        """Reports the journal ever accepted (its sequence)."""

    def journal_health(self) -> dict[str, Any]:
        """The journal epoch as SQL recorded it: status, epoch, losses, the last loss."""


def report_status(ports: OperatorPorts, report_id: str, archive: bool = False) -> dict[str, Any] | None:
    """Where a report is: committed/superseded/quarantined (SQL), queued (in the journal), or,
    with ``archive`` (the operator's command line), unrecorded in SQL but archived.

    Bounded whoever asks: the id carries its acceptance time, so the journal is read only
    around it (a bounded range, RedisQueue.find), and the archive only in that time's
    segments. The HTTP status endpoint does not read the archive (a report the archive holds
    was final, so SQL has it unless the database was restored from a backup)."""
    row = ports.read_model.report(report_id)
    if row is not None:
        row.pop("token", None)
        row["values"] = ports.read_model.committed_values(report_id)
        return row
    ms = accepted_ms(report_id)
    if ms is None:
        return None
    entry = ports.journal.find(report_id, ms)
    pending = entry is not None and ports.journal.is_pending_or_new(entry.entry_id)
    if entry is None and archive and ports.archive is not None:
        entry = ports.archive.find(report_id, ms)
    if entry is None:
        return None
    report = wire.decode(entry.raw)
    return {
        "id": report.id,
        "seq": entry.seq,
        "customer": report.customer,
        "resource": report.resource,
        "billing_period": report.billing_period,
        "accepted_at": dt.datetime.fromtimestamp(report.accepted_at, dt.UTC).isoformat(),
        "state": "queued" if pending else "unrecorded",
        "reason_code": None if pending else "acknowledged_without_sql_row",
        "reason": None if pending else "finalised, missing from SQL: run `ingest replay`",
        "deliveries": entry.deliveries,
        "committed_at": None,
        "values": [],
    }


def replay_quarantined(ports: OperatorPorts, rows: list[dict[str, Any]]) -> Outcome:
    """Commit quarantined reports again (after the catalog was fixed)."""
    deliveries = [Delivery(f"quarantine-{r['id']}", int(r["seq"]), r["envelope"] or b"", 1) for r in rows]
    return ports.committer.commit(deliveries, revive=True)


@dataclasses.dataclass
class ReplayPlan:
    entries: int = 0
    skipped_final: int = 0
    changes: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _ms(moment: dt.datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _entry_order(entry: Delivery) -> tuple[tuple[int, int], int]:
    return stream_id_key(entry.entry_id), entry.seq


def window_entries(
    ports: OperatorPorts,
    since: dt.datetime,
    until: dt.datetime | None,
    start_after: str | None = None,
    on_problem: Callable[[ArchiveProblem], None] | None = None,
) -> Iterator[Delivery]:
    """Every entry accepted in [since, until] (after ``start_after``, a stream id), from the
    archive and the Redis journal merged in acceptance order; an entry both hold (the
    window Redis has not trimmed yet) comes once."""
    start_ms, end_ms = _ms(since), _ms(until)
    start = "(" + start_after if start_after else str(start_ms)
    live = ports.journal.read_journal(start, "+" if end_ms is None else str(end_ms))
    if ports.archive is None:
        yield from live
        return
    archived = ports.archive.read(start_ms, end_ms, start_after, on_problem)
    last: tuple[tuple[int, int], int] | None = None
    for entry in heapq.merge(archived, live, key=_entry_order):
        order = _entry_order(entry)
        if order != last:
            last = order
            yield entry


def journal_window(
    ports: OperatorPorts,
    since: dt.datetime,
    until: dt.datetime | None,
    customer: uuid.UUID | None,
    resource: uuid.UUID | None,
    start_after: str | None = None,
    on_problem: Callable[[ArchiveProblem], None] | None = None,
) -> Iterator[tuple[Delivery, wire.QueuedReport]]:
    """``window_entries`` decoded, for one customer or resource when given."""
    for entry in window_entries(ports, since, until, start_after, on_problem):
        try:
            report = wire.decode(entry.raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if customer and report.customer != str(customer):
            continue
        if resource and report.resource != str(resource):
            continue
        yield entry, report


def replay(
    ports: OperatorPorts,
    since: dt.datetime,
    until: dt.datetime | None = None,
    customer: uuid.UUID | None = None,
    resource: uuid.UUID | None = None,
    start_after: str | None = None,
    batch_size: int = 500,
    progress: Callable[[int, str], None] | None = None,
    on_problem: Callable[[ArchiveProblem], None] | None = None,
) -> Outcome:
    """Re-apply every report accepted in [since, until], in acceptance order (archive and
    journal, ``window_entries``). Give ``until`` to fix the window's end: without it, reports
    accepted during the replay are replayed too."""
    total = Outcome()
    batch: list[Delivery] = []

    def flush() -> None:
        if batch:
            total.merge(ports.committer.commit(batch))
            if progress:
                progress(len(batch), batch[-1].entry_id)
            batch.clear()

    for entry, _report in journal_window(ports, since, until, customer, resource, start_after, on_problem):
        batch.append(entry._replace(deliveries=1))
        if len(batch) >= batch_size:
            flush()
    flush()
    return total


PLAN_CHUNK = 5000  # reports a dry run reads before it asks SQL which of them are final


def plan_replay(
    ports: OperatorPorts,
    since: dt.datetime,
    until: dt.datetime | None = None,
    customer: uuid.UUID | None = None,
    resource: uuid.UUID | None = None,
    on_problem: Callable[[ArchiveProblem], None] | None = None,
) -> ReplayPlan:
    """What ``replay`` would change, per usage key: current value vs replayed value. Reads
    the window in chunks (the archive may hold weeks of it): memory grows with the usage keys
    that would change, not with the reports read."""
    plan = ReplayPlan()
    newest: dict[UsageKey, tuple[str, int]] = {}
    window = journal_window(ports, since, until, customer, resource, on_problem=on_problem)
    while chunk := list(itertools.islice(window, PLAN_CHUNK)):
        plan.entries += len(chunk)
        final = ports.read_model.final_report_ids([r.id for _e, r in chunk])
        for entry, report in chunk:
            if report.id in final:
                plan.skipped_final += 1
                continue
            resource_text = canonical_uuid(report.resource)
            month = canonical_month(report.billing_period)
            for line in report.usages:
                key = UsageKey(resource_text, line.type, month)
                if key not in newest or newest[key][1] < entry.seq:
                    newest[key] = (line.amount, entry.seq)
    current = ports.read_model.current_usage(list(newest))
    for key, (amount, seq) in sorted(newest.items(), key=lambda kv: kv[1][1]):
        now_amount, now_seq = current.get(key, (None, 0))
        if seq > now_seq:
            plan.changes.append(
                {
                    "resource": key.resource,
                    "component": key.component,
                    "billing_period": key.billing_period,
                    "current": now_amount,
                    "current_seq": now_seq or None,
                    "replayed": amount,
                    "replayed_seq": seq,
                }
            )
    return plan


def stats(ports: OperatorPorts) -> dict[str, Any]:
    """Counts from SQL and from the journal, for ``ingest stats``."""
    sql = ports.read_model.state_counts()
    queue = ports.journal
    backlog = queue.backlog()
    oldest = queue.oldest_pending_id()
    age = None
    if oldest:
        age = max(0.0, time.time() - int(oldest.split("-")[0]) / 1000)
    counts = sql["counts"]
    return {
        "accepted": ports.accepted_count(),  # the accepted counter counts them
        "committed": counts.get("committed", 0),
        "superseded": counts.get("superseded", 0),
        "quarantined": counts.get("quarantined", 0),
        "per_second_last_minute": sql["per_second"],
        "backlog": backlog,
        "pending_claimed": queue.pending_count(),
        "oldest_pending_age_s": None if age is None else round(age, 1),
        "journal_entries": queue.journal_length(),
        "workers_seen": queue.workers_seen(),
        "last_reconcile": queue.last_reconcile(),
        # "ok", or "degraded: ..." for a while after Redis lost journal data; last_loss has
        # the window in which the reports that could not be kept were accepted
        "journal": ports.journal_health(),
    }
