"""Request body decoding with DRF's answers: JSON or form-encoded, bounded in size."""

from __future__ import annotations

import json
import zlib
from typing import Any
from urllib.parse import parse_qsl

import falcon.asgi

from ingest.domain.errors import Rejected

TOO_LARGE = {"detail": "Request body is too large."}


async def read_body(req: falcon.asgi.Request, limit: int) -> Any:
    """The decoded body; ``limit`` bounds it both as sent and after gzip decompression.
    A chunked body (no Content-Length) is read up to the same limit."""
    length = req.content_length
    if length is not None and length > limit:
        raise Rejected(TOO_LARGE, status=413)
    raw = await req.stream.read(limit + 1)
    if len(raw) > limit:
        raise Rejected(TOO_LARGE, status=413)
    encoding = (req.get_header("Content-Encoding") or "identity").strip().lower()
    if encoding == "gzip":
        raw = gunzip(raw, limit)
    elif encoding != "identity":
        raise Rejected({"detail": f'Unsupported content encoding "{encoding}".'}, status=415)
    media = (req.content_type or "").split(";", 1)[0].strip().lower()
    if not raw.strip():
        return {}
    if media in ("", "application/json") or media.endswith("+json"):
        return parse_json(raw)
    if media == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise Rejected({"detail": "Form parse error - invalid UTF-8"}) from None
    raise Rejected({"detail": f'Unsupported media type "{req.content_type}" in request.'}, status=415)


def gunzip(raw: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes: a gzip bomb gets a 413, not our memory."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise Rejected(TOO_LARGE, status=413)
        out += inflater.flush()
    except zlib.error:
        raise Rejected({"detail": "Malformed gzip body."}) from None
    if not inflater.eof:
        raise Rejected({"detail": "Malformed gzip body."})
    if len(out) > limit:
        raise Rejected(TOO_LARGE, status=413)
    return out


def parse_json(raw: bytes) -> Any:
    """DRF's JSON parser is the standard library's (exact big integers, its error wording)."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        reason = str(exc)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if not isinstance(exc, RecursionError) else "too deeply nested"
    raise Rejected({"detail": f"JSON parse error - {reason}"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"Out of range float values are not JSON compliant: {name}")
