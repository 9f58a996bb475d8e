"""One process's segment files: appended to, rotated by size, fsynced before an append returns.

Each writer has files of its own (its name is in theirs), so processes never interleave
writes in a file and need no lock between them. A writer never appends to a file it did not
create: a file left by an earlier process of the same name may end in a torn block, and a
block written after that would be lost to the resync. For the same reason a file whose write
or fsync failed is abandoned (cut back to its last whole block when possible), and the next
append starts a new one.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from ingest.adapters.archive.blocks import HEADER_SIZE, parse_header
from ingest.adapters.archive.segments import SUFFIX, Summary, hour_path

MAX_SEGMENT_BYTES = 64 * 1024 * 1024
OPEN_HOURS = 2  # the current hour and the one before (a batch straddling the hour)


class _Segment:
    __slots__ = ("path", "fh", "size", "summary")

    def __init__(self, path: Path, fh: io.FileIO) -> None:
        self.path = path
        self.fh = fh
        self.size = 0
        self.summary = Summary()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each made durable in its parent."""
    missing: list[Path] = []
    at = path
    while not at.is_dir():
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
            directory.mkdir()
        _fsync_dir(directory.parent)


class SegmentWriter:
    """The open files of one writer name, at most OPEN_HOURS of them. Not thread-safe: the
    archive calls it under its lock."""

    def __init__(self, root: Path, name: str, max_bytes: int = MAX_SEGMENT_BYTES) -> None:
        self.root = root
        self.name = name
        self.max_bytes = max_bytes
        self._open: dict[int, _Segment] = {}
        self._next: dict[int, int] = {}  # hour -> the number of its next file

    def write(self, hour: int, block: bytes) -> _Segment:
        """Append one block to this hour's file (not yet synced); raises OSError."""
        segment = self._open.get(hour)
        if segment is not None and segment.size and segment.size + len(block) > self.max_bytes:
            self._close(hour)
            segment = None
        if segment is None:
            segment = self._create(hour)
        try:
            view = memoryview(block)
            while view:  # unbuffered: a short write is retried, a failed one raises
                view = view[segment.fh.write(view) or 0 :]
        except OSError:
            self.abandon(hour, truncate=True)
            raise
        header = parse_header(block[:HEADER_SIZE], segment.size)
        if header is not None:  # always: the encoder made it
            segment.summary.add(header)
        segment.size += len(block)
        return segment

    def sync(self, hour: int) -> None:
        """fsync this hour's file; after a failed fsync the file's state is unknown, so it
        is abandoned (a redelivery appends its entries again, the read drops the copies)."""
        segment = self._open[hour]
        try:
            os.fsync(segment.fh.fileno())
        except OSError:
            self.abandon(hour, truncate=False)
            raise

    def _create(self, hour: int) -> _Segment:
        directory = hour_path(self.root, hour)
        _make_dirs(directory)
        n = self._next.get(hour)
        if n is None:
            n = self._first_free(directory)
        self._next[hour] = n + 1
        path = directory / f"{self.name}-{n}{SUFFIX}"
        fh = path.open("xb", buffering=0)  # never someone else's file, nor an earlier one of this name
        _fsync_dir(directory)
        if len(self._open) >= OPEN_HOURS:
            self._close(min(self._open))
        segment = self._open[hour] = _Segment(path, fh)
        return segment

    def _first_free(self, directory: Path) -> int:
        prefix = f"{self.name}-"
        used = [-1]
        for entry in os.scandir(directory):
            number = entry.name[len(prefix) : -len(SUFFIX)]
            if entry.name.startswith(prefix) and entry.name.endswith(SUFFIX) and number.isdigit():
                used.append(int(number))
        return max(used) + 1

    def abandon(self, hour: int, truncate: bool) -> None:
        segment = self._open.pop(hour, None)
        if segment is None:
            return
        with contextlib.suppress(OSError):
            if truncate:
                segment.fh.truncate(segment.size)
        with contextlib.suppress(OSError):
            segment.fh.close()

    def _close(self, hour: int) -> None:
        """Close a file for good (it is never appended to again) and save its summary."""
        segment = self._open.pop(hour)
        with contextlib.suppress(OSError):  # synced already: nothing is lost
            segment.fh.close()
        with contextlib.suppress(OSError):  # without it, stats reads the file's headers
            segment.summary.save(segment.path)

    def open_hours(self) -> list[int]:
        return sorted(self._open)

    def close(self, hours: list[int] | None = None) -> None:
        for hour in list(self._open) if hours is None else hours:
            if hour in self._open:
                self._close(hour)

    def forget(self) -> None:
        """Drop the handles without touching them (a forked child: they are the parent's)."""
        self._open.clear()
        self._next.clear()
