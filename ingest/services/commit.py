"""The worker-side service: commit a batch of journal entries in one transaction.

Guarantees:
- every entry handed in ends in exactly one final state (committed, superseded, quarantined)
  in the same transaction that applies its usage, or the call raises and nothing changed;
- a usage row is only overwritten by a higher acceptance sequence, so redelivery, retries
  and replays never apply a report twice or roll a value back;
- one bad report never takes its batch down: a batch that fails for a non-transient reason is
  split until the culprit is alone, and that one is quarantined.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple
from zoneinfo import ZoneInfo

import msgspec
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ingest.domain import rules
from ingest.domain.errors import Quarantine, Transient
from ingest.domain.ids import NIL, as_uuid, canonical_month, canonical_uuid
from ingest.domain.model import (
    CatalogSnapshot,
    PlanPeriod,
    Resource,
    UsageKey,
    month_start_instant,
    next_month_start_instant,
)
from ingest.services.ports import (
    Delivery,
    OutboxMark,
    ReportRecord,
    SequenceTaken,
    UnitOfWork,
    UsageRow,
)
from schemas import queue as wire

log = logging.getLogger(__name__)
UTC = ZoneInfo("UTC")


@dataclasses.dataclass
class Outcome:
    committed: list[str] = dataclasses.field(default_factory=list)
    superseded: list[str] = dataclasses.field(default_factory=list)
    quarantined: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # already final: redelivery
    reasons: list[str] = dataclasses.field(default_factory=list)  # quarantine reason codes
    delays: list[float] = dataclasses.field(default_factory=list)  # accept -> commit, seconds
    done_entries: list[str] = dataclasses.field(default_factory=list)  # safe to XACK

    def merge(self, other: Outcome) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).extend(getattr(other, f.name))


class _Item(NamedTuple):
    delivery: Delivery
    report: wire.QueuedReport | None
    problem: Quarantine | None


def _decode(d: Delivery) -> _Item:
    try:
        return _Item(d, wire.decode(d.raw), None)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _Item(d, None, Quarantine("undecodable", f"journal entry is not a v1 report: {exc}"))


class CatalogCheck:
    """Re-check at commit what may have changed since acceptance; raise Quarantine.

    The rules are intake's own (``ingest.domain.rules``); what this class adds is caching.
    Built once per catalog snapshot, and what it works out is kept for that snapshot: the
    resources and plan periods looked up, by their text form (the journal carries text, and
    parsing a uuid per report was a tenth of a worker; filled as reports name them and
    emptied when ``MEMO`` are held, as the whole catalog must not be copied per worker), the
    reportable components per offering, and the verdict per (plan period, month of
    acceptance). The plan-period rule is judged against the month the report was accepted
    in, in the billing time zone ``tz``, as intake judged it.
    Rules that cannot change after acceptance (dates) or that intake alone applies (ownership,
    a plan) are not re-checked.
    """

    MEMO = 65536  # resources (and, apart, plan periods) remembered by text

    def __init__(self, catalog: CatalogSnapshot, tz: ZoneInfo = UTC) -> None:
        self.catalog = catalog
        self.tz = tz
        self._by_text: dict[str, Resource] = {}
        self._periods_by_text: dict[str, PlanPeriod] = {}
        self._reportable: dict[uuid.UUID, frozenset[str]] = {}
        self._periods: dict[tuple[str, float], rules.Broken | None] = {}
        # the billing month last seen: [opens, closes) as Unix times, and its first instant
        self._month: tuple[float, float, dt.datetime] = (0.0, 0.0, dt.datetime.min.replace(tzinfo=dt.UTC))

    def _resource(self, text: str) -> Resource | None:
        found = self._by_text.get(text)
        if found is None:
            found = self.catalog.resources.get(as_uuid(text))
            if found is not None:
                if len(self._by_text) >= self.MEMO:
                    self._by_text.clear()
                self._by_text[text] = found
        return found

    def _components(self, resource: Resource) -> frozenset[str]:
        found = self._reportable.get(resource.offering)
        if found is None:
            found = self._reportable[resource.offering] = rules.reportable(
                self.catalog.components_of(resource)
            )
        return found

    def _opened(self, accepted_at: float) -> tuple[float, dt.datetime]:
        """The billing month of an acceptance time: (its first second, its first instant)."""
        opens, closes, opened = self._month
        if not opens <= accepted_at < closes:
            moment = dt.datetime.fromtimestamp(accepted_at, dt.UTC)
            opened = month_start_instant(moment, self.tz)
            opens, closes = opened.timestamp(), next_month_start_instant(moment, self.tz).timestamp()
            self._month = (opens, closes, opened)
        return opens, opened

    def __call__(self, report: wire.QueuedReport) -> None:
        resource = self._resource(report.resource)
        if resource is None:
            raise rules.resource_missing(report.resource).quarantine()
        broken = rules.state(resource) or rules.components(report.usages, self._components(resource))
        if broken is not None:
            raise broken.quarantine()
        if report.plan_period is not None:
            opens, opened = self._opened(report.accepted_at)
            key = (report.plan_period, opens)
            if key not in self._periods:
                self._periods[key] = self._period_problem(report.plan_period, opened)
            problem = self._periods[key]
            if problem is not None:
                raise problem.quarantine()

    def _period_problem(self, plan_period: str, opened: dt.datetime) -> rules.Broken | None:
        period = self._periods_by_text.get(plan_period)
        if period is None:
            period = self.catalog.plan_periods.get(as_uuid(plan_period))
            if period is None:
                return rules.plan_period_missing(plan_period)
            if len(self._periods_by_text) >= self.MEMO:
                self._periods_by_text.clear()
            self._periods_by_text[plan_period] = period
        return rules.period_closed(period, opened)


def _record(item: _Item, state: str, now: dt.datetime, problem: Quarantine | None = None) -> ReportRecord:
    r = item.report
    if r is None:
        return ReportRecord(
            f"undecodable-{item.delivery.entry_id}"[:32],
            item.delivery.seq,
            str(NIL),
            None,
            None,
            now,
            "",
            repr(item.delivery.raw[:2000]),
            state,
            problem.code if problem else None,
            problem.message if problem else None,
            item.delivery.deliveries,
            now,
            item.delivery.raw,
        )
    return ReportRecord(
        r.id,
        item.delivery.seq,
        r.customer,
        r.resource,
        r.billing_period,
        dt.datetime.fromtimestamp(r.accepted_at, dt.UTC),
        r.token,
        r.claims.decode("utf-8", "replace"),
        state,
        problem.code if problem else None,
        problem.message if problem else None,
        item.delivery.deliveries,
        now,
        # token and payload are the audit record; the envelope is only needed to re-drive a
        # quarantined report, and storing it for every report cost a third of the bytes
        item.delivery.raw if state == "quarantined" else b"",
    )


def _minimal_record(item: _Item, now: dt.datetime, problem: Quarantine) -> ReportRecord:
    """A quarantine record the database cannot refuse: no token or payload, no foreign
    values but the envelope (bytes) that replay needs, text kept to printable ASCII."""
    r = item.report
    rid = r.id if r is not None and len(r.id) <= 32 and r.id.isascii() and r.id.isalnum() else None
    try:
        accepted = dt.datetime.fromtimestamp(r.accepted_at, dt.UTC) if r is not None else now
    except (OverflowError, OSError, ValueError):
        accepted = now
    return ReportRecord(
        rid or f"undecodable-{item.delivery.entry_id}"[:32],
        item.delivery.seq,
        str(NIL),
        None,
        None,
        accepted,
        "",
        "",
        "quarantined",
        problem.code,
        _printable(problem.message),
        item.delivery.deliveries,
        now,
        item.delivery.raw,
    )


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:2000]


def _rows(report: wire.QueuedReport, seq: int) -> list[UsageRow]:
    resource = canonical_uuid(report.resource)
    period = canonical_month(report.billing_period)
    plan_period = canonical_uuid(report.plan_period) if report.plan_period else None
    return [
        UsageRow(
            UsageKey(resource, u.type, period),
            plan_period,
            u.amount,
            u.description,
            u.recurring,
            u.missing_usage_policy,
            report.date,
            report.id,
            seq,
        )
        for u in report.usages
    ]


def _outbox_marks(
    winners: Iterable[UsageRow], applied: set[int], touched: dict[tuple[str, str], int]
) -> list[OutboxMark]:
    """The keys a batch applied usage to, with their highest applied sequence, sorted."""
    seqs: dict[tuple[str, str], int] = {}
    for row in winners:
        if row.seq in applied:
            where = (row.key.resource, row.key.billing_period)
            if row.seq > seqs.get(where, 0):
                seqs[where] = row.seq
    return [OutboxMark(r, p, seq, touched.get((r, p), 0)) for (r, p), seq in sorted(seqs.items())]


class Committer:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        catalog: Callable[[], CatalogSnapshot],
        max_deliveries: int,
        retry_attempts: int = 5,
        retry_wait_max: float = 8.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        tz: ZoneInfo = UTC,
        outbox: bool = False,
    ) -> None:
        """``tz``: the billing time zone (BILLING_TIMEZONE), the one intake judged in.
        ``outbox``: the Waldur bridge is on (WALDUR_URL); every key a batch applies usage to
        is marked dirty in ``usage_outbox`` in the batch's own transaction. Off, the commit
        path is exactly the standalone one."""
        self.unit_of_work = unit_of_work
        self.catalog = catalog
        self.max_deliveries = max_deliveries
        self.retry_attempts = retry_attempts
        self.retry_wait_max = retry_wait_max
        self.clock = clock
        self.tz = tz
        self.outbox = outbox
        self._check: CatalogCheck | None = None

    def commit(self, deliveries: Sequence[Delivery], revive: bool = False, fresh: bool = False) -> Outcome:
        """Commit a batch; transient failures are retried with back-off, then re-raised as
        Transient (the entries then stay pending for the reconciler). ``revive`` lets a
        quarantined report be committed again (replay from quarantine).

        ``fresh``: the entries were never delivered before (XREADGROUP ``>``), so none can
        have a final state yet and the lookup for redeliveries is skipped (6 us a report of
        PostgreSQL time). Should Redis lose acknowledgements (an AOF rewound by a crash) and
        hand a committed entry out as new, nothing changes in SQL: its usage has the same
        sequence, which the upsert never re-applies, and its record keeps its first state.
        Only that batch's outcome counts it as superseded instead of skipped.

        Never raises for one report: a batch that fails for a non-transient reason is split
        until the culprit is alone, and that one is quarantined (see ``_quarantine_alone``).
        A batch that still fails transiently at its last allowed delivery (MAX_DELIVERIES) is
        split the same way, so that a report which makes every transaction fail "transiently"
        (a serialization failure, a timeout it causes) is quarantined as poison on its own
        instead of taking its batch-mates with it; a database that is simply down makes the
        first lone report's write fail too, and then the call raises Transient."""
        items = [_decode(d) for d in deliveries]
        skip_final_check = revive or fresh
        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(Transient),
                stop=stop_after_attempt(self.retry_attempts),
                wait=wait_exponential(multiplier=0.1, max=self.retry_wait_max),
                reraise=True,
            ):
                with attempt:
                    return self._commit_isolating(items, skip_final_check)
        except Transient as exc:
            if not items or max(i.delivery.deliveries for i in items) < self.max_deliveries:
                raise
            log.error("batch of %d still fails at its last allowed delivery (%s); isolating", len(items), exc)
            return self._commit_isolating(items, skip_final_check, last_try=True)
        raise AssertionError("unreachable")

    def _commit_isolating(
        self, items: list[_Item], skip_final_check: bool, last_try: bool = False
    ) -> Outcome:
        """Commit ``items`` in one transaction; if that fails, in halves, down to the culprit.
        ``last_try``: transient failures are isolated too (the entries' last delivery)."""
        try:
            return self._commit_once(items, skip_final_check)
        except Transient as exc:
            if not last_try:
                raise
            failure: Exception = exc
        except Exception as exc:
            failure = exc
        if len(items) == 1:
            return self._quarantine_alone(items[0], failure, skip_final_check, last_try)
        half = len(items) // 2
        log.warning("batch of %d failed (%s); splitting", len(items), failure)
        outcome = self._commit_isolating(items[:half], skip_final_check, last_try)
        outcome.merge(self._commit_isolating(items[half:], skip_final_check, last_try))
        return outcome

    def _quarantine_alone(
        self, item: _Item, failure: Exception, skip_final_check: bool, last_try: bool
    ) -> Outcome:
        """The culprit of a failed batch, alone: quarantine it with the reason it failed.

        Its quarantine record is written without its usage rows, and a quarantined record
        holds no acceptance sequence against others (migration 0006), so a reused sequence
        cannot make this write fail as the commit did. Should the full record still be
        refused (a value the database will not store), a minimal record is written instead:
        no token, no payload, the envelope kept for replay. Only if not even that can be
        written is the entry left pending, alone (not acknowledged, logged as an error), and
        the rest of its batch goes on. Transient failures propagate: the database is down."""
        problem = self._problem(item, failure, last_try)
        log.error("report failed on its own, quarantining (%s): %s", problem.code, failure)
        try:
            return self._commit_once([item._replace(problem=problem)], skip_final_check)
        except Transient:
            raise
        except Exception as exc:
            log.error(
                "quarantine record of entry %s refused (%s); writing a minimal one",
                item.delivery.entry_id,
                exc,
            )
        now = self.clock()
        record = _minimal_record(item, now, problem)
        try:
            with self.unit_of_work() as uow:
                uow.record_reports([record])
                uow.commit()
        except Transient:
            raise
        except Exception as exc:
            log.error(
                "entry %s cannot be recorded at all, left pending: %s; its envelope: %r",
                item.delivery.entry_id,
                exc,
                item.delivery.raw[:2000],
            )
            return Outcome()
        log.warning(
            "quarantined report %s (minimal record): %s", record.id, problem, extra={"report_id": record.id}
        )
        return Outcome(quarantined=[record.id], reasons=[problem.code], done_entries=[item.delivery.entry_id])

    def _problem(self, item: _Item, failure: Exception, last_try: bool) -> Quarantine:
        error = f"{type(failure).__name__}: {failure}"[:1500]
        if isinstance(failure, SequenceTaken):
            return Quarantine(
                "sequence_reused",
                f"acceptance sequence {item.delivery.seq} already belongs to another report in SQL: "
                "Redis handed it out again (it lost acknowledged writes: an AOF that lost its last "
                f"second, a failover); nothing of this report was applied. {error}",
            )
        if item.delivery.deliveries > self.max_deliveries or (last_try and isinstance(failure, Transient)):
            return Quarantine(
                "poison", f"delivered {item.delivery.deliveries} times without commit; last error: {error}"
            )
        return Quarantine("commit_failed", error)

    def _commit_once(self, items: list[_Item], skip_final_check: bool) -> Outcome:
        now = self.clock()
        catalog = self.catalog()
        if self._check is None or self._check.catalog is not catalog:
            self._check = CatalogCheck(catalog, self.tz)
        check = self._check
        outcome = Outcome()
        with self.unit_of_work() as uow:
            final = (
                set() if skip_final_check else uow.final_report_ids([i.report.id for i in items if i.report])
            )
            live: list[_Item] = []
            records: list[ReportRecord] = []
            seen: set[str] = set()
            for item in items:
                if item.report and (item.report.id in final or item.report.id in seen):
                    outcome.skipped.append(item.report.id)
                    continue
                if item.report:
                    seen.add(item.report.id)
                problem = item.problem
                if problem is None and item.delivery.deliveries > self.max_deliveries:
                    problem = Quarantine(
                        "poison", f"delivered {item.delivery.deliveries} times without commit"
                    )
                if problem is None and item.report is not None:
                    try:
                        check(item.report)
                    except Quarantine as q:
                        problem = q
                if problem is not None:
                    records.append(_record(item, "quarantined", now, problem))
                    outcome.quarantined.append(records[-1].id)
                    outcome.reasons.append(problem.code)
                    log.warning(
                        "quarantined report %s: %s",
                        records[-1].id,
                        problem,
                        extra={"report_id": records[-1].id},
                    )
                else:
                    live.append(item)
            winners: dict[UsageKey, UsageRow] = {}
            touched: dict[tuple[str, str], int] = {}  # (resource, period) -> reports (bridge)
            for item in live:
                assert item.report is not None
                rows = _rows(item.report, item.delivery.seq)
                for row in rows:
                    best = winners.get(row.key)
                    # >=: a report naming a component twice keeps its last line, as Waldur does
                    if best is None or row.seq >= best.seq:
                        winners[row.key] = row
                if self.outbox and rows:
                    where = (rows[0].key.resource, rows[0].key.billing_period)
                    touched[where] = touched.get(where, 0) + 1
            applied_seqs = uow.upsert_usages(list(winners.values()))
            if self.outbox and applied_seqs:
                uow.mark_outbox(_outbox_marks(winners.values(), applied_seqs, touched), now)
            for item in live:
                assert item.report is not None
                won = not item.report.usages or item.delivery.seq in applied_seqs
                state = "committed" if won else "superseded"
                records.append(_record(item, state, now))
                getattr(outcome, state).append(item.report.id)
                outcome.delays.append(now.timestamp() - item.report.accepted_at)
            uow.record_reports(records)
            uow.commit()
        outcome.done_entries = [i.delivery.entry_id for i in items]
        return outcome
