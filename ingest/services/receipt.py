"""What a 201 from set_usage carries: the report's id, sequence and where to look it up."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """An accepted (or dry-run) report; ``headers`` are the rate-limit headers to send."""

    id: str | None
    seq: int | None
    billing_period: str
    dry_run: bool
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        if self.dry_run:
            return {"dry_run": True, "billing_period": self.billing_period}
        return {
            "id": self.id,
            "sequence": self.seq,
            "billing_period": self.billing_period,
            "status": "queued",
            "status_url": f"/api/usage-reports/{self.id}/",
        }
