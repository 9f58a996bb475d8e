"""Queue envelope v1: what the web process writes to the Redis journal for each accepted report.

A breaking change adds ``QueuedReportV2``; it never edits this one. The acceptance sequence is
not part of the envelope: Redis assigns it atomically in the same round trip and stores it
beside the envelope in the stream entry (field ``s``).
"""

from __future__ import annotations

import msgspec


class UsageLine(msgspec.Struct, frozen=True, array_like=True):
    type: str
    amount: str  # a decimal string with at most 2 places, already validated
    description: str = ""
    recurring: bool = False
    missing_usage_policy: str = "none"


class QueuedReport(msgspec.Struct, frozen=True, tag="v1", tag_field="v"):
    id: str  # 32 hex characters
    customer: str  # hyphenated UUID
    resource: str  # hyphenated UUID (taken from the plan period when only that was given)
    plan_period: str | None
    billing_period: str  # YYYY-MM-01, fixed at acceptance in the billing time zone
    date: str  # ISO 8601 instant of the usage (the report's `date`, or the acceptance time)
    accepted_at: float  # Unix time
    usages: tuple[UsageLine, ...]
    token: str  # the raw JWS as received, kept for audit and replay
    claims: bytes  # the verified claims as JSON, exactly as decoded


encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(QueuedReport)


def encode(report: QueuedReport) -> bytes:
    return encoder.encode(report)


def decode(raw: bytes) -> QueuedReport:
    """Raise msgspec.DecodeError / ValidationError for anything that is not a v1 envelope."""
    return decoder.decode(raw)
