"""usage-ingest: Waldur-compatible, event-driven usage intake.

Layers, outermost first (import-linter keeps the directions):
- ``config`` reads the environment, once; ``bootstrap`` builds every adapter and service;
- ``cli/`` and ``dev/`` (``ingest run``) are edges, like ``api/`` and ``workers/`` beside this package;
- ``services/`` holds the use cases over the ports in ``services/ports.py``;
- ``domain/`` holds the rules, with no I/O;
- ``adapters/`` implements the ports (Redis, SQL, Prometheus); only ``bootstrap`` imports them.
"""

__version__ = "0.1.0"
