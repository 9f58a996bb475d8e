"""The journal archive as the services use it (adapters/archive/ implements it).

Workers append every report they finalise to the archive before they acknowledge it in Redis,
so Redis keeps only pending entries and a short window, while ``ingest replay`` and report
status lookups reach back ``JOURNAL_ARCHIVE_DAYS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from ingest.services.ports import Delivery


class ArchiveProblem(NamedTuple):
    """A part of the archive that cannot be read: the file, where in it, and why."""

    path: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path} at byte {self.offset}: {self.reason}"


@dataclasses.dataclass
class ArchiveCheck:
    """What ``verify`` read: segments, blocks and entries, and every problem found."""

    segments: int = 0
    blocks: int = 0
    entries: int = 0
    problems: list[ArchiveProblem] = dataclasses.field(default_factory=list)


class Archive(Protocol):
    """Compressed, checksummed, fsynced segments of finalised journal entries."""

    def append(self, entries: Sequence[Delivery]) -> None:
        """Write ``entries`` (any order) durably: fsynced before this returns. Raises OSError
        (the caller then does not acknowledge them; a redelivery appends them again)."""

    def read(
        self,
        start_ms: int | None = None,
        end_ms: int | None = None,
        start_after: str | None = None,
        on_problem: Callable[[ArchiveProblem], None] | None = None,
    ) -> Iterator[Delivery]:
        """Entries whose stream id's milliseconds are in [start_ms, end_ms] (None: open) and,
        given ``start_after`` (a stream id), after it; in acceptance order (stream id, then
        sequence), each (stream id, sequence) once although it may have been appended twice,
        with ``deliveries`` = 1. A block that cannot be read is skipped and passed to
        ``on_problem`` (the read goes on with the next readable block)."""

    def find(self, report_id: str, accepted_ms: int) -> Delivery | None:
        """The archived entry of a report accepted at ``accepted_ms`` (its id's time),
        reading only the segments of that time; None when the archive does not hold it."""

    def verify(self) -> ArchiveCheck:
        """Read every segment and check every block (checksum, framing, decoding)."""

    def stats(self) -> dict[str, Any]:
        """Segments, bytes on disk, entries, the span (first and last acceptance time, ISO
        8601), bytes per report, the directory and its retention in days."""

    def prune(self, now: float | None = None) -> int:
        """Remove segments past the retention (JOURNAL_ARCHIVE_DAYS); returns files removed."""
