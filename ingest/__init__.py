"""usage-ingest: Waldur-compatible, event-driven usage intake."""

__version__ = "0.1.0"
