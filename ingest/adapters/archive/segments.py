"""Segment files on disk: where an hour's files live, and walking a file's block headers.

``<dir>/<YYYY-MM-DD>/<HH>/<writer>-<n>.seg``, by the UTC hour of the stream id's milliseconds
(the journal's acceptance time), so a range read, a lookup and pruning pick directories by
name. A file holds only whole blocks unless a write was torn; every problem a walk meets is
reported with the file and byte offset, and the walk goes on wherever it safely can.
"""

from __future__ import annotations

import calendar
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ingest.adapters.archive.blocks import HEADER_SIZE, MAGIC, Block, Header, parse_header
from ingest.services.archive_ports import ArchiveProblem

HOUR_MS = 3_600_000
SUFFIX = ".seg"
SUMMARY = ".sum"  # next to a closed segment file: what ``stats`` needs without its headers
TORN = "truncated block (torn write)"
WRITING_GRACE = 10.0  # seconds since a file's last write during which a short end is a write under way
BAD_HEADER = "bad block header"
_SCAN_CHUNK = 1 << 20


def hour_of(ms: int) -> int:
    """Hours since the epoch of a stream id's milliseconds."""
    return ms // HOUR_MS


def hour_path(root: Path, hour: int) -> Path:
    t = time.gmtime(hour * 3600)
    return root / time.strftime("%Y-%m-%d", t) / time.strftime("%H", t)


def _hour_from_names(day: str, hour: str) -> int | None:
    try:
        t = time.strptime(f"{day} {hour}", "%Y-%m-%d %H")
    except ValueError:
        return None
    if len(day) != 10 or len(hour) != 2:
        return None
    return calendar.timegm(t) // 3600


def hours(root: Path, first: int | None = None, last: int | None = None) -> list[tuple[int, Path]]:
    """The hour directories in [first, last] (None: open), in time order."""
    found: list[tuple[int, Path]] = []
    try:
        days = sorted(os.scandir(root), key=lambda d: d.name)
    except FileNotFoundError:
        return found
    for day in days:
        if not day.is_dir():
            continue
        for entry in sorted(os.scandir(day.path), key=lambda d: d.name):
            hour = _hour_from_names(day.name, entry.name)
            if hour is None or not entry.is_dir():
                continue
            if (first is None or hour >= first) and (last is None or hour <= last):
                found.append((hour, Path(entry.path)))
    found.sort()
    return found


def files(directory: Path) -> list[Path]:
    """The segment files of one hour directory, by name."""
    try:
        return sorted(Path(e.path) for e in os.scandir(directory) if e.name.endswith(SUFFIX) and e.is_file())
    except FileNotFoundError:
        return []


class Summary:
    """Blocks, entries and acceptance span of one closed segment file, and its size then."""

    __slots__ = ("bytes", "blocks", "entries", "first_ms", "last_ms")

    def __init__(self) -> None:
        self.bytes = self.blocks = self.entries = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None

    def add(self, header: Header) -> None:
        self.bytes = header.end
        self.blocks += 1
        if header.entries:
            self.entries += header.entries
            self.first_ms = header.first_ms if self.first_ms is None else min(self.first_ms, header.first_ms)
            self.last_ms = header.last_ms if self.last_ms is None else max(self.last_ms, header.last_ms)

    def save(self, segment: Path) -> None:
        """Next to ``segment``, replaced whole (a reader never sees half of it). Not synced:
        a summary lost in a crash only makes ``stats`` read that file's headers."""
        target = segment.with_name(segment.name + SUMMARY)
        partial = target.with_name(target.name + ".tmp")
        fields = {name: getattr(self, name) for name in self.__slots__}
        partial.write_text(json.dumps(fields))
        os.replace(partial, target)

    @classmethod
    def load(cls, segment: Path, size: int) -> Summary | None:
        """The saved summary of ``segment`` if it describes the file as it is now."""
        try:
            fields = json.loads(segment.with_name(segment.name + SUMMARY).read_text())
            summary = cls()
            for name in cls.__slots__:
                setattr(summary, name, fields[name])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        counts = (summary.bytes, summary.blocks, summary.entries)
        span = (summary.first_ms, summary.last_ms)
        if not all(type(n) is int for n in counts) or not all(t is None or type(t) is int for t in span):
            return None
        return summary if summary.bytes == size else None


def _resync(fh: BinaryIO, start: int, size: int) -> Header | None:
    """The first sound header after ``start``: a bad header hides where its block ends, so
    look for the next magic whose header checks out rather than lose the rest of the file."""
    position = start
    while position < size:
        fh.seek(position)
        chunk = fh.read(_SCAN_CHUNK + HEADER_SIZE)
        at = chunk.find(MAGIC)
        while 0 <= at < _SCAN_CHUNK:
            header = parse_header(chunk[at : at + HEADER_SIZE], position + at)
            if header is not None:
                return header
            at = chunk.find(MAGIC, at + 1)
        position += _SCAN_CHUNK
    return None


def headers(fh: BinaryIO, path: str) -> Iterator[Header | ArchiveProblem]:
    """Every block header of an open segment file, in file order, and the problems between
    them: a short block at the end is a torn write; a bad header is skipped by resyncing."""
    status = os.fstat(fh.fileno())
    size = status.st_size
    # a short end in a file written to just now is a block being written, not a torn one
    # (its entries are still pending in Redis): not reported
    writing = time.time() - status.st_mtime < WRITING_GRACE
    offset = 0
    while offset < size:
        fh.seek(offset)
        data = fh.read(HEADER_SIZE)
        header = parse_header(data, offset)
        if header is None:
            if len(data) < HEADER_SIZE:  # no room for a block: the end of a write cut short
                if not writing:
                    yield ArchiveProblem(path, offset, TORN)
                return
            yield ArchiveProblem(path, offset, BAD_HEADER)
            header = _resync(fh, offset + 1, size)
            if header is None:
                return
        if header.end > size:
            if not writing:
                yield ArchiveProblem(path, header.offset, TORN)
            return
        yield header
        offset = header.end


def load(fh: BinaryIO, header: Header) -> Block:
    """The block behind ``header``; raises BlockError."""
    fh.seek(header.offset + HEADER_SIZE)
    return Block(header, fh.read(header.payload_length))


def open_segment(path: Path) -> BinaryIO | ArchiveProblem:
    """``path`` open for reading, or the problem that it cannot be opened."""
    try:
        return path.open("rb")
    except OSError as exc:
        return ArchiveProblem(str(path), 0, f"cannot open: {exc.strerror or exc}")
