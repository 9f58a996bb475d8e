"""The exception family whose class decides a report's fate.

- ``Rejected``: the request is answered with a 4xx and nothing is queued or written.
- ``Quarantine``: a queued report can never be committed; keep it with a reason, never retry.
- ``Transient``: infrastructure trouble (database or Redis down); retry with back-off.
- ``Backpressure``: refuse new reports for now (503 with Retry-After).
"""

from __future__ import annotations

from typing import Any

Body = dict[str, Any]

NOT_PERMITTED = "You do not have permission to perform this action."


class Rejected(Exception):
    status = 400

    def __init__(self, body: Body, status: int | None = None) -> None:
        super().__init__(body)
        self.body = body
        if status is not None:
            self.status = status


def field_error(field: str, message: str) -> Rejected:
    return Rejected({field: [message]})


def non_field_error(message: str) -> Rejected:
    return Rejected({"non_field_errors": [message]})


class Forbidden(Rejected):
    status = 403

    def __init__(self) -> None:
        super().__init__({"detail": NOT_PERMITTED})


class RateLimited(Rejected):
    status = 429

    def __init__(self, limit: float, retry_after: int) -> None:
        super().__init__(
            {
                "detail": f"Request was throttled. Expected available in "
                f"{retry_after} second{'s' if retry_after != 1 else ''}."
            }
        )
        self.headers = {
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": f"{limit:g}",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(retry_after),
        }


class Quarantine(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Transient(Exception):
    """Raised (or wrapped) for failures that will pass: retry, never drop."""


class Backpressure(Exception):
    def __init__(self, retry_after: int, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.reason = reason
