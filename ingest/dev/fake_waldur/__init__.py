"""A faithful fake Waldur (MasterMind 8.x, or 7.0.7 with ``--mode 7.0.7``) as a real process,
for end-to-end tests of the catalog sync and usage forwarding with the official
``waldur-api-client``, for ``make run-waldur-demo`` and for the benchmark.

Run it with ``python -m ingest.dev.fake_waldur --token T [--port 0] [--mode 8|7.0.7]
[--seed FILE | --demo | --generate N] [--rate R [--rate-mode queue|429]] [--latency-ms M]
[--time-zone ZONE] [--token-lifetime S]``, or from Python with ``process.start(...)``.
It prints ``fake Waldur (mode 8) listening on http://127.0.0.1:N/`` when ready.

Waldur's endpoints (docs/waldur-bridge.md §5.1): ``/api/users/me/``, ``/api/version/``,
``/api/marketplace-service-providers/`` (+ ``{uuid}/``, ``{uuid}/api_secret_code/``),
``/api/marketplace-provider-offerings/``, ``/api/marketplace-provider-resources/`` (+
``{uuid}/plan_periods/``), ``/api/marketplace-component-usages/`` (+ ``set_usage/``,
``{uuid}/set_user_usages/``, ``{uuid}/set_user_usage/``).

The control API, under ``/__fake__/``, answers loopback callers only and needs no token.
It is a test double's back door, not part of Waldur:

- ``GET /__fake__/calls?since=N``: recorded set_usage calls from index N, each with
  ``index``, ``time``, ``admitted``, ``finished``, ``user``, ``payload``, ``status``,
  ``body``, ``fault``, ``reset``; and ``next``, the index to ask from next time.
- ``GET /__fake__/usages``: stored component usages.
- ``GET /__fake__/stats``: request counts per ``"METHOD /route/"`` and status, the number
  of set_usage calls, and ``api_secret_code_posts`` (secret rotations through Waldur's API:
  a bridge must never make one).
- ``POST /__fake__/faults``: ``{"status": S, "count": K, "retry_after": N, "body": ...,
  "html": bool}``, ``{"reset": true, "count": K}``, ``{"resource": uuid, "status": S}``
  (every call for that resource), or ``{"clear": true}``.
- ``POST /__fake__/catalog``: merge a seed document (see ``seed``).
- ``POST /__fake__/resources/{uuid}``: ``{"state": ..., "plan": uuid|null, "name": ...}``;
  ``DELETE`` unlinks (hard delete).
- ``POST /__fake__/rotate/{customer}``: a new secret for that provider, answered.
- ``GET|POST /__fake__/config``: ``mode``, ``rate``, ``rate_mode``, ``latency_ms``,
  ``time_zone``, ``now`` (a frozen clock) and ``token_lifetime`` (with ``token``).
"""
