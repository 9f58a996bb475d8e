"""Every example under schemas/examples/ is a valid envelope of the version its name says,
and survives the wire encoding unchanged (house style 6: examples a test validates)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from schemas import queue as wire

EXAMPLES = sorted((Path(__file__).parents[2] / "schemas" / "examples").glob("*.json"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_decodes_and_round_trips(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert path.name.startswith(f"queued_report_{doc['v']}")
    report = msgspec.json.decode(path.read_bytes(), type=wire.QueuedReport)
    assert report.id == doc["id"] and len(report.id) == 32
    assert [list(line) for line in msgspec.to_builtins(report.usages)] == doc["usages"]
    assert wire.decode(wire.encode(report)) == report


def test_a_changed_version_tag_is_refused() -> None:
    doc = json.loads(EXAMPLES[0].read_text())
    doc["v"] = "v2"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(doc).encode(), type=wire.QueuedReport)
