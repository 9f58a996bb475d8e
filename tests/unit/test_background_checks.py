"""The web's background checks: with them on, the request path never calls the catalog source
or the journal for a version check or a back-pressure sample; the thread does."""

from __future__ import annotations

import dataclasses
import time

import pytest

from ingest.config import Settings
from ingest.domain.errors import Backpressure
from ingest.domain.model import CatalogSnapshot
from ingest.services.catalog_cache import CatalogCache
from ingest.services.intake import Intake
from ingest.services.pressure import MemoryReading, Pressure
from tests.unit.fakes import refuse_accept


class _Source:
    def __init__(self) -> None:
        self.current = 1
        self.version_calls = 0
        self.snapshots = 0

    def version(self) -> int:
        self.version_calls += 1
        return self.current

    def snapshot(self) -> CatalogSnapshot:
        self.snapshots += 1
        return dataclasses.replace(CatalogSnapshot.empty(), version=self.current)


class _Journal:
    def __init__(self) -> None:
        self.queued = 0
        self.samples = 0

    def memory_reading(self) -> MemoryReading:
        self.samples += 1
        return MemoryReading(0, 0, 0, self.queued, self.queued)

    def set_pending_cap(self, cap: int | None) -> None:
        return None

    def trim(self, retention_seconds: float) -> int:
        return 0


def test_get_never_checks_the_source_once_a_thread_does() -> None:
    source = _Source()
    cache = CatalogCache(source, refresh=0.0)
    assert cache.get().version == 1
    cache.background = True
    calls = source.version_calls
    source.current = 2
    for _ in range(100):
        assert cache.get().version == 1  # the request path serves what it has
    assert source.version_calls == calls
    assert cache.check().version == 2  # the thread's call reloads
    assert cache.get().version == 2 and source.snapshots == 2


def test_pressure_in_the_background_is_decided_by_samples_only() -> None:
    journal = _Journal()
    pressure = Pressure(journal, max_backlog=10, high_water=0.9, interval=0.0)  # type: ignore[arg-type]
    pressure.background = True
    journal.queued = 50
    pressure.check()  # no sample taken on the request path
    assert journal.samples == 0
    pressure.sample()
    with pytest.raises(Backpressure):
        pressure.check()
    journal.queued = 0
    pressure.sample()
    pressure.check()


def test_the_thread_picks_up_a_new_catalog_and_a_backlog() -> None:
    source = _Source()
    journal = _Journal()
    settings = Settings(catalog_refresh=0.0, max_backlog=10)
    intake = Intake(settings, CatalogCache(source, 0.0), journal, accept=refuse_accept)  # type: ignore[arg-type]
    intake.catalog.get()
    intake.check_in_background(interval=0.01)
    source.current = 7
    journal.queued = 11
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        intake.catalog.get().version != 7 or intake.pressure._reason is None
    ):  # noqa: SLF001
        time.sleep(0.01)
    assert intake.catalog.get().version == 7
    with pytest.raises(Backpressure):
        intake.pressure.check()
