"""The replay guard: remember which tokens a provider already used, for a window."""

from __future__ import annotations

from typing import Any


class ReplayGuard:
    """Part of RedisQueue: one key per (customer, token digest), expiring with the window."""

    client: Any
    stream: str

    def claim_tokens(self, customer: str, digests: list[str], ttl: float) -> list[bool]:
        """Remember each token for ``ttl`` seconds, in one round trip; per digest, False when
        it was already seen (also when it comes twice in ``digests``)."""
        pipe = self.client.pipeline(transaction=False)
        for digest in digests:
            pipe.set(self._seen_key(customer, digest), "1", nx=True, px=max(1, int(ttl * 1000)))
        return [bool(ok) for ok in pipe.execute()]

    def forget_tokens(self, customer: str, digests: list[str]) -> None:
        """Undo ``claim_tokens`` for reports that were not accepted after all."""
        if digests:
            self.client.delete(*[self._seen_key(customer, d) for d in digests])

    def _seen_key(self, customer: str, digest: str) -> str:
        return f"{self.stream}:seen:{customer}:{digest}"
