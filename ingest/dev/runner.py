"""``ingest run``: everything a fresh machine needs to serve, in one command.

Starts the embedded Redis (AOF on) when REDIS_URL is unset, migrates the database, loads the
demo catalog, prints a copy-paste example, then runs the Procfile under honcho.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ingest import bootstrap, config
from ingest.config import EMBEDDED_REDIS_PORT, Settings
from ingest.services import catalog_file

DEMO = Path(__file__).parent / "demo" / "catalog.json"


def run(settings: Settings, embedded: bool, demo: bool, procfile: str, formation: str) -> int:
    env = config.child_environment()
    redis_proc = None
    if embedded:
        from ingest.dev import embedded_redis

        data = Path("var/redis").resolve()
        redis_proc = embedded_redis.start(EMBEDDED_REDIS_PORT, data, settings.appendfsync)
        env["REDIS_URL"] = settings.redis_url
        print(f"embedded Redis on 127.0.0.1:{EMBEDDED_REDIS_PORT} (AOF in {data})")
    try:
        prepare_database(settings, demo)
        if demo:
            print(example(settings.port))
        env.setdefault("PORT", str(settings.port))
        prom = Path("var/prometheus").resolve()
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(prom))
        # the Procfile names gunicorn and celery: find them next to this interpreter
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        return subprocess.call(
            [
                sys.executable,
                "-m",
                "honcho",
                "start",
                "-f",
                procfile,
                "-p",
                str(settings.port),
                "-c",
                formation,
            ],
            env=env,
        )
    except KeyboardInterrupt:
        return 0
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


def prepare_database(settings: Settings, demo: bool) -> None:
    """Migrate the database and, with ``demo``, load the demo catalog -- through bootstrap,
    so its secrets are sealed with SECRET_ENCRYPTION_KEY like any other catalog's."""
    bootstrap.upgrade_database(settings.database_url)
    if demo:
        bootstrap.load_catalog(settings, catalog_file.read(DEMO))


def example(port: int) -> str:
    return f"""
Demo catalog loaded. In another terminal, report usage and read it back:

  .venv/bin/ingest push --url http://127.0.0.1:{port} \\
      --customer 7f3e2a10-0000-4000-8000-000000000001 --secret demo-secret-0001 \\
      --resource 7f3e2a10-0000-4000-8000-0000000000a1 cpu_hours=12.5 ram_gb=4
  .venv/bin/ingest usage show --resource 7f3e2a10-0000-4000-8000-0000000000a1
"""
