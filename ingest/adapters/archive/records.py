"""The compact form of one archived envelope, and its exact inverse.

A v1 envelope is ~800 bytes of msgpack, half of it the JWS, whose base64 payload repeats the
``claims`` field in a form zstd cannot match. So the envelope is cut into byte spans around
its report id and its token: the id is kept as 16 bytes, the token's payload is left out when
it is the base64url of the claims field's bytes (the usual case) or else kept decoded, and
restoring is a concatenation. Every cut is checked where it is made (the spans are slices of
the raw bytes at positions verified to hold the id and the token; the payload text is proved
to be the canonical base64url of the bytes kept), so ``unpack`` returns the original bytes
with no check at restore time. What does not fit is kept verbatim: a raw that is not an
envelope (poison is archived as it came), a token with padding or non-canonical base64. The
signature stays text: random base64 costs zstd no more than its 32 bytes would.
"""

from __future__ import annotations

import binascii
from typing import NamedTuple

import msgspec

VERBATIM = 0  # head = the raw bytes
SPLIT_ID = 1  # raw = head + id + body (the token stays in body)
SPLIT_TOKEN = 2  # raw = head + id + body + jws_head "." b64(payload) "." signature + tail
ID_TEXT = 4  # a flag: the stored report id is its UTF-8 text, not hex packed into bytes
CLAIMS_PAYLOAD = 8  # a flag of SPLIT_TOKEN: the token's payload is the claims field's bytes
KINDS = frozenset(
    (form | text | same)
    for form in (VERBATIM, SPLIT_ID, SPLIT_TOKEN)
    for text in (0, ID_TEXT)
    for same in ((0, CLAIMS_PAYLOAD) if form == SPLIT_TOKEN else (0,))
)
_CLAIMS_FIELD = b"\xa6claims"
_BIN_HEADER = {0xC4: 2, 0xC5: 3, 0xC6: 5}  # msgpack bin 8, 16, 32

_TO_STD = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")
_PAD = (b"", b"", b"==", b"=")
_URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# the last character of a segment of length 2 or 3 mod 4 carries 4 or 2 unused bits
_LAST = {2: frozenset(_URL_ALPHABET[::16]), 3: frozenset(_URL_ALPHABET[::4])}


class _Head(msgspec.Struct, tag="v1", tag_field="v"):
    """Just the fields the cut needs; msgspec skips the rest without building them."""

    id: str
    token: str
    claims: bytes


_decode_head = msgspec.msgpack.Decoder(_Head).decode


class Record(NamedTuple):
    """One envelope's parts, each a column of a block (see blocks.py)."""

    kind: int  # VERBATIM, SPLIT_ID or SPLIT_TOKEN, with ID_TEXT
    report_id: bytes  # see compact_id; b"" with ID_TEXT: not an envelope
    head: bytes
    body: bytes
    jws_head: bytes
    payload: bytes  # base64url-decoded; b"" with CLAIMS_PAYLOAD
    tail: bytes  # everything after the token: the claims field
    signature: bytes  # the token's third segment, as it came


def compact_id(report_id: str) -> tuple[bytes, int]:
    """A report id as stored, and its flag: lowercase hex as its bytes (16 for the 32 hex of
    an id), else the UTF-8 text with ID_TEXT. ``bytes.fromhex`` also takes upper case and
    spaces, hence the check."""
    try:
        packed = bytes.fromhex(report_id)
    except ValueError:
        return report_id.encode(), ID_TEXT
    return (packed, 0) if packed.hex() == report_id else (report_id.encode(), ID_TEXT)


def _b64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).translate(_TO_URL).rstrip(b"=")


def _unb64(segment: bytes) -> bytes | None:
    """The bytes of a canonical unpadded base64url segment, None for any other text.

    Canonical: only alphabet characters, no padding, a length that is not 1 mod 4, and zero
    bits in the last character's unused low bits; exactly the texts that re-encode to
    themselves, so checking this proves the round trip without re-encoding.
    """
    rest = len(segment) % 4
    if rest == 1 or segment.translate(None, _URL_ALPHABET):
        return None
    if rest and segment[-1] not in _LAST[rest]:
        return None
    return binascii.a2b_base64(segment.translate(_TO_STD) + _PAD[rest])


def _bin_header(size: int) -> int:
    return 2 if size < 0x100 else 3 if size < 0x10000 else 5


def _claims_at(tail: bytes) -> int:
    """Where the claims' bytes start in a tail that is the claims field, else -1."""
    if len(tail) <= 7 or not tail.startswith(_CLAIMS_FIELD):
        return -1
    size = _BIN_HEADER.get(tail[7])
    return -1 if size is None else 7 + size


def pack(raw: bytes) -> Record:
    """Cut ``raw`` into a Record that ``unpack`` turns back into exactly ``raw``."""
    try:
        env = _decode_head(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Record(VERBATIM | ID_TEXT, b"", raw, b"", b"", b"", b"", b"")
    rid, flag = compact_id(env.id)
    id_bytes = env.id.encode()
    start = raw.find(id_bytes)
    if start < 0:  # cannot happen for valid msgpack; kept verbatim all the same
        return Record(VERBATIM | flag, rid, raw, b"", b"", b"", b"", b"")
    id_end = start + len(id_bytes)
    token = env.token.encode()
    # in the encoder's field order the token comes right before the claims field, the last
    tok = len(raw) - len(env.claims) - _bin_header(len(env.claims)) - len(_CLAIMS_FIELD) - len(token)
    if tok < id_end or not raw.startswith(token, tok):
        tok = raw.find(token, id_end)
    parts = token.split(b".")
    if tok >= 0 and len(parts) == 3:
        head, body, tail = raw[:start], raw[id_end:tok], raw[tok + len(token) :]
        claims = env.claims
        # the usual case, cheaper to prove by encoding the claims than by decoding the payload:
        # the tail ends with the claims' bytes right after the field's header
        if _claims_at(tail) == len(tail) - len(claims) and tail.endswith(claims) and _b64(claims) == parts[1]:
            kind = SPLIT_TOKEN | CLAIMS_PAYLOAD | flag
            return Record(kind, rid, head, body, parts[0], b"", tail, parts[2])
        payload = _unb64(parts[1])
        if payload is not None:
            return Record(SPLIT_TOKEN | flag, rid, head, body, parts[0], payload, tail, parts[2])
    return Record(SPLIT_ID | flag, rid, raw[:start], raw[id_end:], b"", b"", b"", b"")


def unpack(
    kind: int,
    report_id: bytes,
    head: bytes,
    body: bytes,
    jws_head: bytes,
    payload: bytes,
    tail: bytes,
    signature: bytes,
) -> bytes:
    """The raw envelope a Record was cut from. Raises ValueError for an unknown kind."""
    form = kind & 3
    if form == VERBATIM:
        return head
    rid = report_id if kind & ID_TEXT else report_id.hex().encode()
    if form == SPLIT_TOKEN:
        if kind & CLAIMS_PAYLOAD:
            at = _claims_at(tail)
            if at < 0:
                raise ValueError("claims payload without a claims field")
            payload = tail[at:]
        return b"".join((head, rid, body, jws_head, b".", _b64(payload), b".", signature, tail))
    if form == SPLIT_ID:
        return head + rid + body
    raise ValueError(f"unknown record kind {kind}")
