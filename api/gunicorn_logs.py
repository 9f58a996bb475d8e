"""gunicorn's own lines (the master's "Listening at", "Booting worker", a worker's timeout) in
our format (LOG_FORMAT, LOG_LEVEL), like every other line of the service: gunicorn's logger
keeps its level but hands its records to the root handler that ingest.logs installs."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from ingest import logs
from ingest.config import load


class GunicornLogger(Logger):  # type: ignore[misc]
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        settings = load()
        logs.configure(settings.log_level, settings.log_format)
        for logger in (self.error_log, self.access_log):
            logger.handlers[:] = []
            logger.propagate = True
