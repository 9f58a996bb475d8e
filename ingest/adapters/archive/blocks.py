"""Blocks: the unit a segment file is made of, one per hour an ``append`` call touches.

A block is a fixed header and a zstd frame. The header says how long the frame is (so a
reader can step over a block it cannot read), how many entries it holds and the span of
their stream ids' milliseconds (so a range read, a lookup or the stats need no decompression),
and carries the payload's CRC-32 and its own: a torn write or a flipped bit is found, never
decoded into wrong entries. Inside, the entries are columns (every stream id, then every
sequence, ..., every signature): like values sit together, which zstd compresses to 132
bytes a report rather than 139 as rows (20,000 envelopes in blocks of 1,000; in blocks of 100
both are ~144, the plain envelopes 195-202).
"""

from __future__ import annotations

import functools
import itertools
import struct
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import msgspec
import zstandard

from ingest.adapters.archive import records
from ingest.domain.ids import stream_id_key as stream_id
from ingest.services.ports import Delivery

MAGIC = b"IJA1"
VERSION = 1
CODEC_ZSTD_COLUMNS = 1
LEVEL = 3
# magic, version, codec, reserved, payload length, uncompressed length, entries, first ms,
# last ms, payload crc32; then the crc32 of those 40 bytes
_FIELDS = struct.Struct("<4sBBHIIIqqI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _FIELDS.size + _CRC.size

_Columns = tuple[
    list[int],  # ms - first ms
    list[int],  # the stream id's sequence part
    list[int],  # acceptance sequence, each minus the previous one
    list[int],  # record kind
    list[bytes],  # report id
    list[bytes],  # head
    list[bytes],  # body
    list[bytes],  # jws head
    list[bytes],  # payload
    list[bytes],  # tail (claims)
    list[bytes],  # signature
]
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Columns).decode


class BlockError(Exception):
    """A block that cannot be read; the message is the problem's reason."""


class Header(NamedTuple):
    """A block's header, where it is, and where the next block starts."""

    offset: int
    payload_length: int
    raw_length: int
    entries: int
    first_ms: int
    last_ms: int
    crc: int

    @property
    def end(self) -> int:
        return self.offset + HEADER_SIZE + self.payload_length


def parse_header(data: bytes, offset: int) -> Header | None:
    """The header at the start of ``data`` (read at ``offset``), None if it does not check."""
    if len(data) < HEADER_SIZE or data[:4] != MAGIC:
        return None
    (crc,) = _CRC.unpack_from(data, _FIELDS.size)
    if zlib.crc32(data[: _FIELDS.size]) != crc:
        return None
    _, version, codec, _, length, raw_length, count, first, last, payload_crc = _FIELDS.unpack_from(data)
    if version != VERSION or codec != CODEC_ZSTD_COLUMNS:
        return None
    return Header(offset, length, raw_length, count, first, last, payload_crc)


class Encoder:
    """Makes blocks; holds one zstd context (not thread-safe: the writer's lock guards it)."""

    def __init__(self) -> None:
        self._zstd = zstandard.ZstdCompressor(level=LEVEL)

    def encode(self, entries: Sequence[Delivery], ids: Sequence[tuple[int, int]] | None = None) -> bytes:
        """One block of ``entries``, which the caller sorted by (stream id, sequence);
        ``ids``: their stream ids parsed, when the caller has them already."""
        if ids is None:
            ids = [stream_id(e.entry_id) for e in entries]
        first = ids[0][0]
        last = max(ms for ms, _ in ids)
        seqs = [e.seq for e in entries]
        columns = (
            [ms - first for ms, _ in ids],
            [n for _, n in ids],
            [seq - before for seq, before in zip(seqs, [0, *seqs[:-1]], strict=True)],
            *zip(*[records.pack(e.raw) for e in entries], strict=True),
        )
        raw = _encode(columns)
        payload = self._zstd.compress(raw)
        fields = _FIELDS.pack(
            MAGIC,
            VERSION,
            CODEC_ZSTD_COLUMNS,
            0,
            len(payload),
            len(raw),
            len(entries),
            first,
            last,
            zlib.crc32(payload),
        )
        return fields + _CRC.pack(zlib.crc32(fields)) + payload


class Block:
    """A decoded block: entry i's sort key and, on demand, its raw envelope."""

    def __init__(self, header: Header, payload: bytes) -> None:
        if len(payload) != header.payload_length:
            raise BlockError("truncated block (torn write)")
        if zlib.crc32(payload) != header.crc:
            raise BlockError("payload checksum mismatch")
        try:
            raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=header.raw_length)
        except zstandard.ZstdError as exc:
            raise BlockError(f"payload does not decompress: {exc}") from None
        if len(raw) != header.raw_length:
            raise BlockError("payload length differs from the header")
        try:
            cols = _decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BlockError(f"records do not decode: {exc}") from None
        if any(len(col) != header.entries for col in cols):
            raise BlockError("record columns differ from the entry count")
        if not records.KINDS.issuperset(cols[3]):
            raise BlockError("unknown record kind")
        self._first = header.first_ms
        self._cols = cols

    @functools.cached_property
    def keys(self) -> list[tuple[int, int, int]]:
        """(ms, n, sequence) of every entry, in block order (sorted by the writer)."""
        first, cols = self._first, self._cols
        seqs = itertools.accumulate(cols[2])
        return [(first + off, n, seq) for off, n, seq in zip(cols[0], cols[1], seqs, strict=True)]

    def index(self, report_id: bytes, flag: int) -> int | None:
        """The first entry holding ``report_id`` (compact_id's form), found without keys."""
        ids, kinds = self._cols[4], self._cols[3]
        at = 0
        while True:
            try:
                at = ids.index(report_id, at)
            except ValueError:
                return None
            if kinds[at] & records.ID_TEXT == flag:
                return at
            at += 1

    def raw(self, i: int) -> bytes:
        c = self._cols
        return records.unpack(c[3][i], c[4][i], c[5][i], c[6][i], c[7][i], c[8][i], c[9][i], c[10][i])

    def delivery(self, i: int) -> Delivery:
        ms, n, seq = self.keys[i]
        return Delivery(f"{ms}-{n}", seq, self.raw(i), 1)

    def __len__(self) -> int:
        return len(self._cols[0])
