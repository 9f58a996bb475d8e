"""Token verification: HS256 only, key lookup in, claims out.

Waldur signs with the provider's ``api_secret_code`` (UTF-8 bytes) and verifies with HS256.
A token that is malformed, wrongly signed, of another algorithm, expired, not yet valid or
addressed to an audience fails with the same message: Waldur answers several of these with a
500, we answer all of them with a 400.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import math
import re
import time
from typing import Any

import jwt
import orjson
from jwt.algorithms import HMACAlgorithm

from ingest.domain.errors import non_field_error
from ingest.domain.ids import parse_uuid

SIGNATURE_FAILED = "Signature verification failed."
SECRET_NOT_SET = "API secret code is not set."
MAX_TOKEN_BYTES = 1024 * 1024  # the request body limit is the real bound


class _HS256(HMACAlgorithm):
    """HS256 without the per-call key-length warning and PEM sniffing.

    The key never comes from the token: it is the provider's secret from our catalog, whose
    length policy is applied when the catalog is loaded (SECRET_MIN_LENGTH), not per request.
    """

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)

    def prepare_key(self, key: str | bytes) -> bytes:
        return key.encode("utf-8") if isinstance(key, str) else key

    def check_key_length(self, key: bytes) -> str | None:
        return None


_jws = jwt.PyJWS(algorithms=[], options={"verify_signature": True})
_jws.register_algorithm("HS256", _HS256())


def sign(claims: dict[str, Any], secret: str) -> str:
    """Sign claims the way Waldur's clients do (HS256 over compact JSON)."""
    payload = orjson.dumps(claims, option=orjson.OPT_NON_STR_KEYS)
    return _jws.encode(payload, secret.encode("utf-8"), algorithm="HS256", headers={"typ": "JWT"})


_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_ALG = _HS256()


def _segment(text: str) -> bytes:
    """Strict base64url (no padding, no foreign characters), decoded in C."""
    if len(text) % 4 == 1 or not _SEGMENT.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=256)
def _header_ok(segment: str) -> bool:
    """A provider sends the same header segment with every token: decide it once."""
    try:
        header = json.loads(_segment(segment))
    except (ValueError, RecursionError, binascii.Error):
        return False
    return (
        isinstance(header, dict)
        and header.get("alg") == "HS256"
        and "crit" not in header
        and "b64" not in header
        and isinstance(header.get("kid", ""), str)
    )


def _decode(token: str, keys: list[bytes]) -> bytes:
    """The verified payload bytes of a compact HS256 JWS, or ValueError.

    PyJWT's HMAC algorithm does the signature check; the segment parsing is ours because
    PyJWT 2.15 validates base64 characters in a Python loop, half the cost of a request.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not three segments")
    if not _header_ok(parts[0]):
        raise ValueError("header")
    signature = _segment(parts[2])
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not any(_ALG.verify(signing_input, key, signature) for key in keys):
        raise ValueError("signature")
    return _segment(parts[1])


def verify(
    token: str,
    secrets: str | list[str],
    now: float | None = None,
    require_iat: bool = False,
    max_age: float = 0.0,
) -> dict[str, Any]:
    """Return the verified claims, or raise Rejected(400 'Signature verification failed.').

    ``secrets`` may hold the current and the previous key of a provider (rotation overlap).
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or not token.isascii():
        raise non_field_error(SIGNATURE_FAILED)
    keys = [k.encode("utf-8") for k in ([secrets] if isinstance(secrets, str) else secrets)]
    try:
        payload = _decode(token, keys)
        # the standard library, as PyJWT and Waldur use: exact big integers, 1e400 -> inf
        claims = json.loads(payload)
    except (ValueError, RecursionError, binascii.Error):
        raise non_field_error(SIGNATURE_FAILED) from None
    if not isinstance(claims, dict):
        raise non_field_error(SIGNATURE_FAILED)
    moment = time.time() if now is None else now
    _check_registered_claims(claims, moment)
    if require_iat and "iat" not in claims:
        raise non_field_error(SIGNATURE_FAILED)
    if max_age > 0 and "iat" in claims and claims["iat"] < moment - max_age:
        raise non_field_error(SIGNATURE_FAILED)
    return claims


def token_digest(token: str, claims: bytes) -> str:
    """The replay-cache key of a token: its ``jti`` when it has one, else its digest."""
    try:
        jti = orjson.loads(claims).get("jti")
    except (orjson.JSONDecodeError, AttributeError):
        jti = None
    if isinstance(jti, str) and 0 < len(jti) <= 128:
        return "jti:" + hashlib.sha256(jti.encode()).hexdigest()
    return hashlib.sha256(token.encode()).hexdigest()


def _check_registered_claims(claims: dict[str, Any], now: float) -> None:
    if "aud" in claims:
        raise non_field_error(SIGNATURE_FAILED)
    for name, must_be_past in (("exp", False), ("nbf", True), ("iat", True)):
        if name not in claims:
            continue
        value = claims[name]
        if (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):  # NaN passes every comparison, inf never expires
            raise non_field_error(SIGNATURE_FAILED)
        if must_be_past and value > now:
            raise non_field_error(SIGNATURE_FAILED)
        if not must_be_past and value <= now:
            raise non_field_error(SIGNATURE_FAILED)


# -- report-status tokens ------------------------------------------------------------------
#
# A provider reads its reports' status with a token made for that and nothing else: HS256
# with its secret, ``aud`` = STATUS_AUDIENCE, ``sub`` = its customer UUID, and a short life
# (``iat`` and ``exp`` required, ``exp`` at most STATUS_TOKEN_MAX_TTL ahead). A usage token
# can never pass: intake refuses any token with an ``aud``, so no stored usage token has one.

STATUS_AUDIENCE = "usage-ingest:report-status"
STATUS_TOKEN_TTL = 900  # seconds, what ``ingest status-token`` mints by default
STATUS_TOKEN_MAX_TTL = 3600.0  # the default of STATUS_TOKEN_MAX_TTL
CLOCK_SKEW = 30.0  # seconds a provider's clock may run ahead of ours
MAX_STATUS_TOKEN_BYTES = 4096


class BadStatusToken(ValueError):
    """Not a valid report-status token (the reason is for logs, never for the client)."""


def sign_status_token(
    customer: str, secret: str, ttl: float = STATUS_TOKEN_TTL, now: float | None = None
) -> str:
    """A report-status token for ``customer`` (its UUID as text), valid ``ttl`` seconds."""
    issued = int(time.time() if now is None else now)
    claims = {"aud": STATUS_AUDIENCE, "sub": customer, "iat": issued, "exp": issued + int(ttl)}
    return sign(claims, secret)


def verify_status_token(
    token: str,
    secrets: list[str],
    customer: str,
    max_ttl: float = STATUS_TOKEN_MAX_TTL,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a valid report-status token of ``customer``, or BadStatusToken."""
    if not isinstance(token, str) or len(token) > MAX_STATUS_TOKEN_BYTES or not token.isascii():
        raise BadStatusToken("malformed")
    try:
        claims = json.loads(_decode(token, [k.encode("utf-8") for k in secrets]))
    except (ValueError, RecursionError, binascii.Error):
        raise BadStatusToken("malformed or wrongly signed") from None
    if not isinstance(claims, dict):
        raise BadStatusToken("not a claims object")
    if claims.get("aud") != STATUS_AUDIENCE:
        raise BadStatusToken("not a report-status token")
    subject = parse_uuid(claims.get("sub"))
    if subject is None or subject != parse_uuid(customer):
        raise BadStatusToken("another customer's token")
    moment = time.time() if now is None else now
    times = {}
    for name in ("iat", "exp", "nbf"):
        if name not in claims:
            if name == "nbf":
                continue
            raise BadStatusToken(f"no {name}")
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadStatusToken(f"{name} is not a number")
        times[name] = float(value)
    if times["exp"] <= moment:
        raise BadStatusToken("expired")
    if times["iat"] > moment + CLOCK_SKEW or times.get("nbf", moment) > moment + CLOCK_SKEW:
        raise BadStatusToken("issued in the future")
    if times["exp"] - times["iat"] > max_ttl or times["exp"] - moment > max_ttl + CLOCK_SKEW:
        raise BadStatusToken("lives too long")
    return claims


_DUMMY_KEY = b"usage-ingest: no such customer, same cost"


def burn(token: object) -> None:
    """Spend what a verification costs, for a customer that does not exist."""
    if isinstance(token, str) and len(token) <= MAX_TOKEN_BYTES:
        with contextlib.suppress(Exception):
            _decode(token, [_DUMMY_KEY])
