"""Segment files on disk: where an hour's files live, and walking a file's block headers.

``<dir>/<YYYY-MM-DD>/<HH>/<writer>-<n>.seg``, by the UTC hour of the stream id's milliseconds
(the journal's acceptance time), so a range read, a lookup and pruning pick directories by
name. A file holds only whole blocks unless a write was torn; every problem a walk meets is
reported with the file and byte offset, and the walk goes on wherever it safely can.
"""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ingest.adapters.archive.blocks import HEADER_SIZE, MAGIC, Block, Header, parse_header
from ingest.services.archive_ports import ArchiveProblem

HOUR_MS = 3_600_000
SUFFIX = ".seg"
TORN = "truncated block (torn write)"
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
    size = os.fstat(fh.fileno()).st_size
    offset = 0
    while offset < size:
        fh.seek(offset)
        data = fh.read(HEADER_SIZE)
        header = parse_header(data, offset)
        if header is None:
            if len(data) < HEADER_SIZE:  # no room for a block: the end of a write cut short
                yield ArchiveProblem(path, offset, TORN)
                return
            yield ArchiveProblem(path, offset, BAD_HEADER)
            header = _resync(fh, offset + 1, size)
            if header is None:
                return
        if header.end > size:
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
