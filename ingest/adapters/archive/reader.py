"""Reading the archive: the merged range read, the lookup, the check, the stats and pruning.

An hour directory holds only entries of that hour, so hours are read one after another;
within an hour every writer's files hold blocks in their own order, and a k-way merge of the
blocks (by their first stream id, taken from the headers) yields acceptance order while only
the blocks that overlap the merge point are decoded at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ingest.adapters.archive.blocks import Block, BlockError, Header
from ingest.adapters.archive.records import compact_id
from ingest.adapters.archive.segments import (
    HOUR_MS,
    SUMMARY,
    Summary,
    files,
    headers,
    hour_of,
    hours,
    load,
    open_segment,
)
from ingest.domain.ids import stream_id_key as stream_id
from ingest.services.archive_ports import ArchiveCheck, ArchiveProblem
from ingest.services.ports import Delivery

log = logging.getLogger(__name__)
FIND_WINDOW_MS = 5000  # the report id's clock (web) against the stream id's (Redis)

OnProblem = Callable[[ArchiveProblem], None]
_Ref = tuple[int, int, BinaryIO, str, Header]  # first ms, file order, file, path, header


def _report(problem: ArchiveProblem, on_problem: OnProblem | None) -> None:
    log.warning("journal archive: %s", problem)
    if on_problem is not None:
        on_problem(problem)


def _blocks(
    directory: Path, lo: int | None, hi: int | None, opened: list[BinaryIO], on_problem: OnProblem | None
) -> list[_Ref]:
    """The sound block headers of one hour whose span meets [lo, hi], by first stream id."""
    refs: list[_Ref] = []
    for path in files(directory):
        fh = open_segment(path)
        if isinstance(fh, ArchiveProblem):
            _report(fh, on_problem)
            continue
        opened.append(fh)
        for item in headers(fh, str(path)):
            if isinstance(item, ArchiveProblem):
                _report(item, on_problem)
            elif item.entries and (lo is None or item.last_ms >= lo) and (hi is None or item.first_ms <= hi):
                refs.append((item.first_ms, len(refs), fh, str(path), item))
    refs.sort(key=lambda ref: ref[:2])
    return refs


def _merge_hour(
    directory: Path,
    lo: int | None,
    hi: int | None,
    after: tuple[int, int] | None,
    on_problem: OnProblem | None,
) -> Iterator[Delivery]:
    opened: list[BinaryIO] = []
    try:
        refs = _blocks(directory, lo, hi, opened, on_problem)
        heap: list[tuple[int, int, int, int, int, Block]] = []  # ms, n, seq, serial, index, block
        at = 0
        last: tuple[int, int, int] | None = None
        while True:
            # a block's entries are all at or after its first ms: load it before the merge
            # passes that millisecond, not earlier
            while at < len(refs) and (not heap or refs[at][0] <= heap[0][0]):
                first_ms, serial, fh, path, header = refs[at]
                at += 1
                try:
                    block = load(fh, header)
                except BlockError as exc:
                    _report(ArchiveProblem(path, header.offset, str(exc)), on_problem)
                    continue
                heapq.heappush(heap, (*block.keys[0], serial, 0, block))
            if not heap:
                return
            ms, n, seq, serial, i, block = heap[0]
            if i + 1 < len(block):
                heapq.heapreplace(heap, (*block.keys[i + 1], serial, i + 1, block))
            else:
                heapq.heappop(heap)
            key = (ms, n, seq)
            if key == last:  # appended twice: a crash between the archive write and the ack
                continue
            last = key
            if (lo is None or ms >= lo) and (hi is None or ms <= hi) and (after is None or (ms, n) > after):
                yield Delivery(f"{ms}-{n}", seq, block.raw(i), 1)
    finally:
        for fh in opened:
            fh.close()


def read(
    root: Path,
    start_ms: int | None,
    end_ms: int | None,
    start_after: str | None,
    on_problem: OnProblem | None,
) -> Iterator[Delivery]:
    after = stream_id(start_after) if start_after is not None else None
    lo = start_ms
    if after is not None:
        lo = after[0] if lo is None else max(lo, after[0])
    first = hour_of(lo) if lo is not None else None
    last = hour_of(end_ms) if end_ms is not None else None
    for _, directory in hours(root, first, last):
        yield from _merge_hour(directory, lo, end_ms, after, on_problem)


def find(root: Path, report_id: str, accepted_ms: int) -> Delivery | None:
    """The entry holding ``report_id`` among the blocks within FIND_WINDOW_MS of its time."""
    target, flag = compact_id(report_id)
    lo, hi = accepted_ms - FIND_WINDOW_MS, accepted_ms + FIND_WINDOW_MS
    found: list[Delivery] = []
    for _, directory in hours(root, hour_of(lo), hour_of(hi)):
        opened: list[BinaryIO] = []
        try:
            for *_, fh, path, header in _blocks(directory, lo, hi, opened, None):
                try:
                    block = load(fh, header)
                except BlockError as exc:
                    _report(ArchiveProblem(path, header.offset, str(exc)), None)
                    continue
                i = block.index(target, flag)
                if i is not None:
                    found.append(block.delivery(i))
        finally:
            for fh in opened:
                fh.close()
    return min(found, key=lambda d: (stream_id(d.entry_id), d.seq)) if found else None


def _check_block(block: Block, header: Header, hour: int, path: str) -> ArchiveProblem | None:
    keys = block.keys
    low, high = min(k[0] for k in keys), max(k[0] for k in keys)
    if low != header.first_ms or high != header.last_ms or hour_of(low) != hour or hour_of(high) != hour:
        return ArchiveProblem(path, header.offset, "entries outside the block's span or hour")
    if keys != sorted(keys):
        return ArchiveProblem(path, header.offset, "entries out of order")
    for i in range(len(block)):
        block.raw(i)
    return None


def verify(root: Path) -> ArchiveCheck:
    check = ArchiveCheck()
    for hour, directory in hours(root):
        for path in files(directory):
            check.segments += 1
            fh = open_segment(path)
            if isinstance(fh, ArchiveProblem):
                check.problems.append(fh)
                continue
            with fh:
                for item in headers(fh, str(path)):
                    if isinstance(item, ArchiveProblem):
                        check.problems.append(item)
                        continue
                    try:
                        block = load(fh, item)
                        problem = _check_block(block, item, hour, str(path))
                    except (BlockError, ValueError) as exc:
                        problem = ArchiveProblem(str(path), item.offset, str(exc))
                    if problem is not None:
                        check.problems.append(problem)
                        continue
                    check.blocks += 1
                    check.entries += item.entries
    return check


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def stats(root: Path, keep_days: float) -> dict[str, Any]:
    """From each closed file's summary (``segments.Summary``), else from its block headers:
    no block is decompressed."""
    segments = size = entries = 0
    first: int | None = None
    last: int | None = None
    for _, directory in hours(root):
        for path in files(directory):
            summary = _summary(path)
            if summary is None:
                continue
            segments += 1
            size += summary.bytes
            entries += summary.entries
            if summary.first_ms is not None and summary.last_ms is not None:
                first = summary.first_ms if first is None else min(first, summary.first_ms)
                last = summary.last_ms if last is None else max(last, summary.last_ms)
    return {
        "directory": str(root),
        "keep_days": keep_days,
        "segments": segments,
        "bytes": size,
        "entries": entries,
        "first_accepted_at": _iso(first),
        "last_accepted_at": _iso(last),
        "bytes_per_report": round(size / entries, 1) if entries else None,
    }


def _summary(path: Path) -> Summary | None:
    """The file's saved summary if it is current, else one made from its headers (None: the
    file cannot be opened). ``bytes`` is the file's size, torn end included."""
    fh = open_segment(path)
    if isinstance(fh, ArchiveProblem):
        return None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        summary = Summary.load(path, size)
        if summary is None:
            summary = Summary()
            for item in headers(fh, str(path)):
                if isinstance(item, Header):
                    summary.add(item)
        summary.bytes = size
        return summary


def expired_hours(root: Path, cutoff_ms: int) -> list[tuple[int, Path]]:
    """Hour directories whose whole hour ended before ``cutoff_ms``."""
    return [(hour, path) for hour, path in hours(root) if (hour + 1) * HOUR_MS < cutoff_ms]


def prune(expired: list[tuple[int, Path]]) -> int:
    """Remove the given hour directories, then the day directories left empty."""
    removed = 0
    for _, directory in expired:
        for path in files(directory):
            try:
                path.unlink()
            except FileNotFoundError:  # another process pruned it first
                continue
            removed += 1
        with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith((SUMMARY, SUMMARY + ".tmp")):  # a summary, or one being saved
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        for empty in (directory, directory.parent):
            try:
                empty.rmdir()
            except OSError:  # not empty: other files, or the day still has hours
                break
    return removed
