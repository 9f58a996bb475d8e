"""Request body decoding with DRF's answers, bounded in size.

DRF's default parsers, tried in its order: JSON, form-encoded, multipart. A parser takes a
request whose media type matches its own, where ``*`` on either side matches anything
(``*/*`` and ``application/*`` are JSON); parameters are ignored. No match (no Content-Type
included) is a 415 that echoes the header. A body of zero bytes is ``{}`` whatever the
Content-Type, as DRF's ``Request._parse`` does; any other body goes to its parser.
"""

from __future__ import annotations

import io
import json
import zlib
from typing import Any
from urllib.parse import parse_qsl

import falcon
import falcon.asgi
from falcon.media import MultipartFormHandler
from falcon.media.multipart import MultipartParseError

from ingest.domain.errors import Rejected

TOO_LARGE = {"detail": "Request body is too large."}
JSON = ("application", "json")
FORM = ("application", "x-www-form-urlencoded")
MULTIPART = ("multipart", "form-data")


async def read_body(req: falcon.asgi.Request, limit: int) -> Any:
    """The decoded body; ``limit`` bounds it both as sent and after gzip decompression.
    A chunked body (no Content-Length) is read up to the same limit."""
    length = req.content_length
    if length is not None and length > limit:
        raise Rejected(TOO_LARGE, status=413)
    raw = await req.stream.read(limit + 1)
    if len(raw) > limit:
        raise Rejected(TOO_LARGE, status=413)
    if not raw:
        return {}
    encoding = (req.get_header("Content-Encoding") or "identity").strip().lower()
    if encoding == "gzip":
        raw = gunzip(raw, limit)
    elif encoding != "identity":
        raise Rejected({"detail": f'Unsupported content encoding "{encoding}".'}, status=415)
    content_type = req.content_type or ""
    media = media_type(content_type)
    if _matches(JSON, media):
        return parse_json(raw)
    if _matches(FORM, media):
        return parse_form(raw)
    if _matches(MULTIPART, media):
        return parse_multipart(raw, content_type, limit)
    raise Rejected({"detail": f'Unsupported media type "{content_type}" in request.'}, status=415)


def media_type(content_type: str) -> tuple[str, str]:
    """(main, sub) of a Content-Type, lower-cased, without parameters; ("", "") if absent."""
    main, _slash, sub = content_type.split(";", 1)[0].strip().lower().partition("/")
    return main.strip(), sub.strip()


def _matches(parser: tuple[str, str], request: tuple[str, str]) -> bool:
    """DRF's ``_MediaType.match``: each half equal, or ``*`` on the request's side."""
    return all(mine == theirs or theirs == "*" for mine, theirs in zip(parser, request, strict=True))


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
    # DRF's strict_constant: repr() quotes the name ('NaN')
    raise ValueError(f"Out of range float values are not JSON compliant: {name!r}")


def parse_form(raw: bytes) -> dict[str, Any]:
    """Django's QueryDict: the last of a repeated key wins; bytes that are not UTF-8 are read as
    ISO-8859-1; percent-escapes that are not UTF-8 become U+FFFD."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")
    return _form_fields(parse_qsl(text, keep_blank_values=True, errors="replace"))


class UploadedFile:
    """A multipart file part. It is never a string (DRF: "Not a valid string."); echoed in an
    error message it reads as its file name, as Django's UploadedFile does."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


def parse_multipart(raw: bytes, content_type: str, limit: int) -> dict[str, Any]:
    """Django's MultiPartParser, by Falcon's parser over the bounded body: text parts are fields
    (UTF-8, undecodable bytes replaced), parts with a file name are files; files are laid over
    fields and the last of a repeated name wins."""
    handler = MultipartFormHandler()
    handler.parse_options.max_body_part_buffer_size = limit
    fields: list[tuple[str, str]] = []
    files: dict[str, Any] = {}
    try:
        form = handler.deserialize(io.BytesIO(raw), content_type, len(raw))
        for part in form:
            name = part.name
            if name is None:
                continue
            if part.filename is not None:
                part.stream.exhaust()
                files[name] = UploadedFile(part.filename)
            else:
                fields.append((name, part.get_data().decode("utf-8", errors="replace")))
    except falcon.HTTPInvalidHeader:  # no boundary, or one of an invalid length
        boundary = falcon.parse_header(content_type)[1].get("boundary")
        raise Rejected(
            {"detail": f"Multipart form parse error - Invalid boundary in multipart: {boundary}"}
        ) from None
    except MultipartParseError as exc:
        raise Rejected({"detail": f"Multipart form parse error - {exc.description}"}) from None
    return {**_form_fields(fields), **files}


def _form_fields(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """A blank ``dry_run`` in a form is DRF's ``default_empty_html`` for a BooleanField: absent
    (false). In JSON, ``"dry_run": ""`` stays an invalid boolean."""
    fields: dict[str, Any] = dict(pairs)
    if fields.get("dry_run") == "":
        del fields["dry_run"]
    return fields
