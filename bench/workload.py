"""Pre-signed reports, journal envelopes for a pre-filled backlog, and the reference usage table.

Tokens are HS256 JWS made with hmac directly (the same bytes PyJWT would produce up to header
key order), so signing 100,000 reports takes well under a second. Every report names a resource
and carries three absolute amounts that are distinct across the whole benchmark, so the last
accepted value of each (resource, component, billing period) tells which report won.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import itertools
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bench.catalog import COMPONENTS, Catalog
from schemas import queue as wire

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
_amounts = itertools.count(1)


def b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def sign(claims: dict[str, Any], secret: str) -> str:
    signing_input = _HEADER + b"." + b64(orjson.dumps(claims))
    mac = hmac.new(secret.encode("utf-8"), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(mac)).decode("ascii")


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    resource: int  # index into Catalog.resources
    amounts: tuple[str, ...]  # one per COMPONENTS entry
    body: bytes  # the JSON request body


def _amounts_next() -> tuple[str, ...]:
    n = next(_amounts)
    # distinct everywhere, 2 decimal places as Waldur allows
    return tuple(f"{n}.{k:02d}" for k in range(1, len(COMPONENTS) + 1))


def make_report(catalog: Catalog, resource: int, dry_run: bool = False) -> Report:
    ref = catalog.resources[resource]
    provider = catalog.providers[ref.provider]
    amounts = _amounts_next()
    claims: dict[str, Any] = {
        "resource": ref.uuid,
        "usages": [{"type": c, "amount": a} for (c, _), a in zip(COMPONENTS, amounts, strict=True)],
    }
    body: dict[str, Any] = {"customer": provider.customer, "data": sign(claims, provider.secret)}
    if dry_run:
        body["dry_run"] = True
    return Report(resource, amounts, orjson.dumps(body))


def make_reports(catalog: Catalog, count: int, rng: random.Random, dry_run: bool = False) -> list[Report]:
    n = len(catalog.resources)
    return [make_report(catalog, rng.randrange(n), dry_run) for _ in range(count)]


def write_bodies(reports: list[Report], directory: Path, parts: int) -> list[list[Report]]:
    """Split reports round-robin into ``parts`` files bodies-1.txt .. bodies-N.txt (one JSON
    body per line); return the split so records (part, 1-based line) map back to reports."""
    directory.mkdir(parents=True, exist_ok=True)
    split: list[list[Report]] = [reports[i::parts] for i in range(parts)]
    for i, chunk in enumerate(split, start=1):
        (directory / f"bodies-{i}.txt").write_bytes(b"\n".join(r.body for r in chunk) + b"\n")
    return split


Key = tuple[str, str, str]  # (resource uuid, component, billing period YYYY-MM-01)


class Reference:
    """The usage table the load generator expects: the last accepted value per key."""

    def __init__(self) -> None:
        self.best: dict[Key, tuple[int, Decimal]] = {}
        self.accepted: set[int] = set()  # acceptance sequences answered with 201
        # requests in flight when a load stopped: the server may have accepted them without
        # the client seeing the answer; keyed by token, resolved against SQL at verification
        self.in_flight: dict[str, tuple[Report, ...]] = {}

    def add(self, catalog: Catalog, report: Report, seq: int, period: str) -> None:
        self.accepted.add(seq)
        resource = catalog.resources[report.resource].uuid
        for (component, _), amount in zip(COMPONENTS, report.amounts, strict=True):
            key = (resource, component, period)
            old = self.best.get(key)
            if old is None or old[0] < seq:
                self.best[key] = (seq, Decimal(amount))

    def add_in_flight(self, report: Report) -> None:
        token = orjson.loads(report.body)["data"]
        self.in_flight[token] = (*self.in_flight.get(token, ()), report)

    def merge(self, other: Reference) -> None:
        self.accepted |= other.accepted
        self.in_flight.update(other.in_flight)
        for key, value in other.best.items():
            old = self.best.get(key)
            if old is None or old[0] < value[0]:
                self.best[key] = value


# -- a pre-filled backlog: the envelopes the web process would have written --------------------


def envelopes(
    catalog: Catalog, count: int, rng: random.Random, now: float | None = None
) -> Iterator[tuple[Report, bytes, str, str]]:
    """Yield (report, v1 envelope, billing period, report id) as Intake.set_usage would."""
    accepted = time.time() if now is None else now
    moment = dt.datetime.fromtimestamp(accepted, dt.UTC)
    period = dt.date(moment.year, moment.month, 1).isoformat()
    date = moment.isoformat()
    n = len(catalog.resources)
    for i in range(count):
        r = rng.randrange(n)
        ref = catalog.resources[r]
        provider = catalog.providers[ref.provider]
        amounts = _amounts_next()
        claims: dict[str, Any] = {
            "resource": ref.uuid,
            "usages": [{"type": c, "amount": a} for (c, _), a in zip(COMPONENTS, amounts, strict=True)],
        }
        token = sign(claims, provider.secret)
        at = accepted + i * 1e-6
        report_id = f"{int(at * 1000):012x}{uuid.uuid4().hex[:20]}"
        queued = wire.QueuedReport(
            id=report_id,
            customer=provider.customer,
            resource=ref.uuid,
            plan_period=ref.plan_period,
            billing_period=period,
            date=date,
            accepted_at=at,
            usages=tuple(wire.UsageLine(c, a) for (c, _), a in zip(COMPONENTS, amounts, strict=True)),
            token=token,
            claims=orjson.dumps(claims),
        )
        yield Report(r, amounts, b""), wire.encode(queued), period, report_id


def chunked(items: Iterable[object], size: int) -> Iterator[list[object]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
