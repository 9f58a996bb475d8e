"""Fixtures the fault tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.sentinel_cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A primary, two replicas and three Sentinels (down after 1 s) on private ports."""
    c = Cluster(tmp_path / "redis", replicas=2, sentinels=3, down_after_ms=1000, failover_timeout_ms=3000)
    c.start()
    yield c
    c.stop()
