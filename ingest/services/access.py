"""Who may read a report's status: an operator (OPERATOR_TOKEN) or the provider that sent it.

A provider proves itself the way it signs usage: ``X-Customer: <uuid>`` and
``Authorization: Bearer <JWT signed HS256 with its API secret code>`` (any claims; an ``exp``
is honoured). Failures say nothing about which part was wrong.
"""

from __future__ import annotations

import hmac
import uuid

from ingest.domain import signing
from ingest.domain.errors import Rejected
from ingest.domain.ids import parse_uuid
from ingest.services.catalog_cache import CatalogCache

NOT_AUTHENTICATED = {"detail": "Authentication credentials were not provided."}
INVALID = {"detail": "Invalid signature or token."}


class Operator:
    """Marker: the caller may see every report."""


def authorize(
    catalog: CatalogCache, operator_token: str, authorization: str | None, customer: str | None
) -> uuid.UUID | Operator:
    if not authorization:
        raise Rejected(NOT_AUTHENTICATED, status=401)
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() == "token":
        if operator_token and hmac.compare_digest(credential.encode(), operator_token.encode()):
            return Operator()
        raise Rejected(INVALID, status=401)
    if scheme.lower() != "bearer" or not credential:
        raise Rejected(INVALID, status=401)
    who = parse_uuid(customer)
    provider = catalog.get().providers.get(who) if who else None
    if provider is None or not provider.secret:
        raise Rejected(INVALID, status=401)
    try:
        signing.verify(credential, provider.secret)
    except Rejected:
        raise Rejected(INVALID, status=401) from None
    return provider.customer
