"""The operator services over fakes of their ports: replay's dry run keys usage by UsageKey,
the same key the commit path uses."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

from ingest.domain.model import UsageKey
from ingest.services import operations
from ingest.services.ports import Delivery
from tests.unit.fakes import FakeStore
from tests.unit.test_commit import PERIOD, R1, delivery, make


class FakeOperatorJournal:
    def __init__(self, entries: list[Delivery]) -> None:
        self.entries = entries

    def read_journal(self, start: str = "-", end: str = "+", page: int = 1000) -> Iterator[Delivery]:
        return iter(self.entries)


@dataclasses.dataclass
class FakeReadModel:
    current: dict[UsageKey, tuple[str, int]]
    final: set[str] = dataclasses.field(default_factory=set)
    asked: list[list[UsageKey]] = dataclasses.field(default_factory=list)

    def final_report_ids(self, ids: list[str]) -> set[str]:
        return self.final & set(ids)

    def current_usage(self, keys: list[UsageKey]) -> dict[UsageKey, tuple[str, int]]:
        self.asked.append(keys)
        return {k: v for k, v in self.current.items() if k in keys}


@dataclasses.dataclass
class FakePorts:
    journal: Any
    read_model: Any
    committer: Any
    archive: Any = None

    def accepted_count(self) -> int:
        return len(self.journal.entries)


def test_plan_replay_compares_by_usage_key():
    key = UsageKey(str(R1), "cpu", PERIOD.isoformat())
    entries = [delivery(5, cpu="7"), delivery(6, ram="1")]
    read = FakeReadModel({key: ("3.00", 4)})
    plan = operations.plan_replay(
        FakePorts(FakeOperatorJournal(entries), read, make(FakeStore())),
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    assert all(isinstance(k, UsageKey) for k in read.asked[0])
    assert plan.entries == 2 and plan.skipped_final == 0
    assert [(c["component"], c["current"], c["replayed"], c["replayed_seq"]) for c in plan.changes] == [
        ("cpu", "3.00", "7", 5),
        ("ram", None, "1", 6),
    ]
    assert plan.changes[0]["resource"] == str(R1) and plan.changes[0]["billing_period"] == PERIOD.isoformat()


def test_replay_commits_through_the_committer_in_order():
    store = FakeStore()
    entries = [delivery(1, cpu="1"), delivery(2, cpu="2")]
    ports = FakePorts(FakeOperatorJournal(entries), FakeReadModel({}), make(store))
    outcome = operations.replay(ports, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert len(outcome.committed) == 1 and len(outcome.superseded) == 1
    again = operations.replay(ports, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert len(again.skipped) == 2 and not again.committed
