"""Who may read a report's status: an operator (OPERATOR_TOKEN) or the provider that sent it.

A provider sends ``X-Customer: <uuid>`` and ``Authorization: Bearer <report-status token>``:
a JWT signed HS256 with its API secret code that only a status token carries
(``aud: usage-ingest:report-status``, ``sub``: its customer UUID) and that lives briefly
(``iat`` and ``exp`` required, ``exp`` at most STATUS_TOKEN_MAX_TTL ahead); see
``signing.verify_status_token``. A usage token, however well signed, is refused: usage
tokens are stored raw in SQL and the journal, and one must not open every report of its
provider for as long as the secret lives. Failures say nothing about which part was wrong.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import time
import uuid

from ingest.domain import signing
from ingest.domain.errors import Rejected
from ingest.domain.ids import parse_uuid
from ingest.services.catalog_cache import CatalogCache

log = logging.getLogger(__name__)
NOT_AUTHENTICATED = {"detail": "Authentication credentials were not provided."}
INVALID = {"detail": "Invalid signature or token."}


class Operator:
    """Marker: the caller may see every report."""


def authorize(
    catalog: CatalogCache,
    operator_token: str,
    authorization: str | None,
    customer: str | None,
    *,
    max_ttl: float = signing.STATUS_TOKEN_MAX_TTL,
    now: float | None = None,
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
    moment = time.time() if now is None else now
    keys = provider.secrets(dt.datetime.fromtimestamp(moment, dt.UTC)) if provider is not None else []
    if provider is None or not keys:
        signing.burn(credential)  # an unknown customer costs what a known one does
        raise Rejected(INVALID, status=401)
    try:
        signing.verify_status_token(credential, keys, str(provider.customer), max_ttl, moment)
    except signing.BadStatusToken as exc:
        log.debug("report status refused for customer %s: %s", provider.customer, exc)
        raise Rejected(INVALID, status=401) from None
    return provider.customer
