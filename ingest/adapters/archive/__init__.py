"""The journal archive on disk (services/archive_ports.py's Archive): segment files of
compressed, checksummed blocks under JOURNAL_ARCHIVE_DIR.

Layout and format: segments.py (``<dir>/<YYYY-MM-DD>/<HH>/<writer>-<n>.seg``), blocks.py (a
block's header and columns), records.py (an envelope's compact, exactly restorable form).
"""

from __future__ import annotations

import os
import secrets
import socket
import string
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.adapters.archive import reader
from ingest.adapters.archive.blocks import Encoder
from ingest.adapters.archive.segments import hour_of
from ingest.adapters.archive.writer import MAX_SEGMENT_BYTES, SegmentWriter
from ingest.domain.ids import stream_id_key as stream_id
from ingest.services.archive_ports import Archive, ArchiveCheck, ArchiveProblem
from ingest.services.ports import Delivery

__all__ = ["FileArchive"]

_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_.")
_fork_lock = threading.Lock()  # two threads of a child must not both start a writer


def _new_fork_lock() -> None:
    global _fork_lock
    _fork_lock = threading.Lock()  # the parent's may have been held by a thread at the fork


os.register_at_fork(after_in_child=_new_fork_lock)


def writer_name() -> str:
    """hostname-pid-random: unique per process, and safe in a file name."""
    host = "".join(c if c in _NAME_CHARS else "_" for c in socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class FileArchive:
    """The Archive over a directory that every worker process appends to with files of its own.

    ``append`` is thread-safe and durable when it returns. After a fork (Celery prefork) the
    child notices the new pid and takes a new writer name, so it never writes the parent's
    files. Reads need no lock: they see whole blocks, and a block being written shows as a
    torn end, reported, never decoded.
    """

    def __init__(
        self,
        directory: str | Path,
        keep_days: float = 35.0,
        writer: str | None = None,
        clock: Callable[[], float] = time.time,
        max_segment_bytes: int = MAX_SEGMENT_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.keep_days = keep_days
        self.clock = clock
        self._given_name = writer
        self._max_segment_bytes = max_segment_bytes
        self._start_writer(forked=False)

    def _start_writer(self, forked: bool) -> None:
        name = self._given_name
        if name is None:
            name = writer_name()
        elif forked:
            name = f"{name}-{writer_name()}"  # the parent keeps the given name
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._writer = SegmentWriter(self.directory, name, self._max_segment_bytes)
        self._encoder = Encoder()

    @property
    def writer(self) -> str:
        return self._writer.name

    def _check_fork(self) -> None:
        if os.getpid() == self._pid:
            return
        with _fork_lock:
            if os.getpid() != self._pid:
                # the parent's handles, lock and zstd context are not ours to use
                self._writer.forget()
                self._start_writer(forked=True)

    def append(self, entries: Sequence[Delivery]) -> None:
        if not entries:
            return
        self._check_fork()
        groups: dict[int, list[tuple[tuple[int, int], int, Delivery]]] = {}
        for entry in entries:
            key = stream_id(entry.entry_id)
            groups.setdefault(hour_of(key[0]), []).append((key, entry.seq, entry))
        with self._lock:
            for hour in sorted(groups):
                group = groups[hour]
                group.sort(key=lambda item: (item[0], item[1]))
                block = self._encoder.encode([item[2] for item in group], [item[0] for item in group])
                self._writer.write(hour, block)
                self._writer.sync(hour)

    def read(
        self,
        start_ms: int | None = None,
        end_ms: int | None = None,
        start_after: str | None = None,
        on_problem: Callable[[ArchiveProblem], None] | None = None,
    ) -> Iterator[Delivery]:
        return reader.read(self.directory, start_ms, end_ms, start_after, on_problem)

    def find(self, report_id: str, accepted_ms: int) -> Delivery | None:
        return reader.find(self.directory, report_id, accepted_ms)

    def verify(self) -> ArchiveCheck:
        return reader.verify(self.directory)

    def stats(self) -> dict[str, Any]:
        return reader.stats(self.directory, self.keep_days)

    def prune(self, now: float | None = None) -> int:
        moment = self.clock() if now is None else now
        expired = reader.expired_hours(self.directory, int((moment - self.keep_days * 86400) * 1000))
        if not expired:
            return 0
        self._check_fork()
        with self._lock:
            self._writer.close([hour for hour, _ in expired])
        return reader.prune(expired)

    def close(self) -> None:
        """Close the open segment files (appends after this open new ones)."""
        with self._lock:
            self._writer.close()


if TYPE_CHECKING:  # mypy checks that FileArchive keeps to the port
    _conforms: type[Archive] = FileArchive
