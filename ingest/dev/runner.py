"""``ingest run``: everything a fresh machine needs to serve, in one command.

Starts the embedded Redis (AOF on) when REDIS_URL is unset, migrates the database, loads the
demo catalog, prints a copy-paste example, then runs the process formation (the Procfile
shipped in this package, ``ingest/dev/Procfile``, unless ``--procfile`` names another) as one
process tree that it stops in order (see ingest.dev.supervisor). Everything it writes goes
under ``var/`` of the working directory.

With ``waldur_demo`` it also starts a fake Waldur (ingest.dev.fake_waldur) holding the demo
catalog, points WALDUR_URL/WALDUR_TOKEN at it, syncs the catalog from it instead of loading
the file, and runs the forwarder: usage pushed to us shows up in the fake Waldur.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from ingest import bootstrap, config
from ingest.config import EMBEDDED_REDIS_PORT, Settings
from ingest.services import catalog_file

DEMO = Path(__file__).parent / "demo" / "catalog.json"


def packaged_procfile() -> str:
    """The process formation shipped with the package (the same as the repo's Procfile)."""
    return resources.files("ingest.dev").joinpath("Procfile").read_text()


def procfile_processes(text: str) -> dict[str, str]:
    """process type -> command, in Procfile order."""
    from honcho.environ import parse_procfile

    return dict(parse_procfile(text).processes)


def run(
    settings: Settings,
    embedded: bool,
    demo: bool,
    procfile: str,
    formation: dict[str, int],
    redis_port: int = EMBEDDED_REDIS_PORT,
    waldur_demo: WaldurDemo | None = None,
) -> int:
    """Serve until a stop signal (exit 0 when everything stopped cleanly) or until a child
    dies (the rest are stopped; one line on stderr names it; exit 1)."""
    from honcho.environ import expand_processes

    from ingest.dev.supervisor import Supervisor

    processes = procfile_processes(procfile)
    sup = Supervisor()
    previous = sup.install_signal_handlers()
    problems: list[str] = []
    reason: str | None = None
    try:
        env = config.child_environment()
        if sys.stdout.isatty():  # the children write to a pipe: say that a person reads it
            env.setdefault("LOG_FORMAT", "text")
        var = Path("var").resolve()
        if embedded:
            from ingest.dev import embedded_redis

            data = var / "redis"
            sup.adopt("redis", "redis", embedded_redis.start(redis_port, data, settings.appendfsync))
            settings = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{redis_port}/0")
            env["REDIS_URL"] = settings.redis_url
            print(f"embedded Redis on 127.0.0.1:{redis_port} (AOF in {data})", flush=True)
        if waldur_demo is not None and not sup.stop_requested:
            settings = waldur_demo.start(sup, settings, env)
            demo = False  # the catalog comes from the fake Waldur
        if not sup.stop_requested:
            prepare_database(settings, demo)
            if waldur_demo is not None:
                waldur_demo.sync(env)
                print(waldur_demo.example(settings.port), flush=True)
            if demo:
                print(
                    example(
                        settings.port,
                        settings.redis_url if embedded and redis_port != EMBEDDED_REDIS_PORT else None,
                    ),
                    flush=True,
                )
        env.setdefault("PORT", str(settings.port))
        prom = var / "prometheus"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(prom))
        # the Procfile names gunicorn and celery: find them next to this interpreter
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        if not settings.bridge_enabled:  # standalone: nothing to forward
            formation = {"forwarder": 0, **formation}
        expanded = expand_processes(processes, concurrency=formation, env=env, port=settings.port)
        sup.width = max([sup.width, *(len(p.name) for p in expanded)])
        for p in expanded:
            if sup.stop_requested:
                break
            sup.start(p.name, p.name.split(".")[0], p.cmd, p.env)
        reason = sup.wait()
        if reason is None:
            sup.say(f"{sup.stop_signal}: stopping {sup.order()}")
        else:
            sup.say(f"{reason}: stopping the rest")
    finally:
        problems = sup.stop()
        sup.restore_signal_handlers(previous)
    if reason or problems:
        print(f"ingest: error: {'; '.join(([reason] if reason else []) + problems)}", file=sys.stderr)
        return 1
    return 0


WALDUR_DEMO_TOKEN = "demo-waldur-token"


@dataclasses.dataclass
class WaldurDemo:
    """The fake Waldur of ``ingest run --waldur-demo``, on 127.0.0.1:``port``."""

    port: int
    mode: str = "8"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, sup: Any, settings: Settings, env: dict[str, str]) -> Settings:
        """Start the fake (a supervised child, stopped with the rest) and wait until it answers;
        return the settings pointed at it."""
        import httpx

        command = (
            f"{shlex.quote(sys.executable)} -m ingest.dev.fake_waldur --host 127.0.0.1 "
            f"--port {self.port} --token {WALDUR_DEMO_TOKEN} --mode {shlex.quote(self.mode)} --demo "
            f"--time-zone {shlex.quote(settings.billing_timezone)}"
        )
        sup.start("waldur", "waldur", command, env)
        deadline = time.monotonic() + 30
        while not sup.stop_requested:
            try:
                httpx.get(f"{self.url}api/version/", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the fake Waldur did not answer on {self.url}") from None
                time.sleep(0.2)
        print(f"fake Waldur (mode {self.mode}) on {self.url}, token {WALDUR_DEMO_TOKEN}", flush=True)
        env["WALDUR_URL"] = self.url
        env["WALDUR_TOKEN"] = WALDUR_DEMO_TOKEN
        env.setdefault("WALDUR_SYNC_INTERVAL", "30")
        if not config.database_url_given():
            env["DATABASE_URL"] = f"sqlite:///{Path('var').resolve() / 'waldur-demo.db'}"
        told = {
            "DATABASE_URL": env["DATABASE_URL"],
            "WALDUR_URL": self.url,
            "WALDUR_TOKEN": WALDUR_DEMO_TOKEN,
        }
        if settings.redis_url != config.Settings().redis_url:
            told["REDIS_URL"] = settings.redis_url
        self.status_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in told.items()) + " "
        return dataclasses.replace(
            settings,
            waldur_url=self.url,
            waldur_token=WALDUR_DEMO_TOKEN,
            database_url=env.get("DATABASE_URL", settings.database_url),
        )

    def sync(self, env: dict[str, str]) -> None:
        """A first full catalog sync, as an operator would run it."""
        done = subprocess.run([*ingest_argv(), "waldur", "sync", "--full"], env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError("the first catalog sync from the fake Waldur failed (see above)")

    status_env: str = ""  # what `ingest waldur status` in another terminal must be told

    def example(self, port: int) -> str:
        ingest = ingest_command()
        resource = "7f3e2a10-0000-4000-8000-0000000000a1"
        return f"""
Catalog synced from the fake Waldur. In another terminal, report usage to us, watch it
being forwarded, and read it back from Waldur:

  {ingest} push --url http://127.0.0.1:{port} \\
      --customer 7f3e2a10-0000-4000-8000-000000000001 --secret demo-secret-0001 \\
      --resource {resource} cpu_hours=12.5 ram_gb=4
  {self.status_env}{ingest} waldur status
  curl -s -H 'Authorization: Token {WALDUR_DEMO_TOKEN}' \\
      '{self.url}api/marketplace-component-usages/?resource_uuid={resource.replace("-", "")}'
"""


def prepare_database(settings: Settings, demo: bool) -> None:
    """Migrate the database and, with ``demo``, load the demo catalog -- through bootstrap,
    so its secrets are sealed with SECRET_ENCRYPTION_KEY like any other catalog's."""
    bootstrap.upgrade_database(settings.database_url)
    if demo:
        bootstrap.load_catalog(settings, catalog_file.read(DEMO))


def ingest_argv() -> list[str]:
    """This installation's ``ingest``, as an argument vector."""
    script = Path(sys.executable).parent / "ingest"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ingest.cli.main"]


def ingest_command() -> str:
    """How the user runs ``ingest`` from here: ``ingest`` when that is on PATH and is this
    installation's, else the path of this installation's script, else ``python -m``."""
    script = Path(sys.executable).parent / "ingest"
    if script.is_file():
        found = shutil.which("ingest")
        if found and os.path.samefile(found, script):
            return "ingest"
        try:
            return shlex.quote(str(script.absolute().relative_to(Path.cwd())))
        except ValueError:
            return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m ingest.cli.main"


def example(port: int, redis_url: str | None = None) -> str:
    ingest = ingest_command()
    if redis_url:  # not the default: the other commands must be told
        ingest = f"REDIS_URL={redis_url} {ingest}"
    return f"""
Demo catalog loaded. In another terminal, report usage and read it back:

  {ingest} push --url http://127.0.0.1:{port} \\
      --customer 7f3e2a10-0000-4000-8000-000000000001 --secret demo-secret-0001 \\
      --resource 7f3e2a10-0000-4000-8000-0000000000a1 cpu_hours=12.5 ram_gb=4
  {ingest} usage show --resource 7f3e2a10-0000-4000-8000-0000000000a1
"""
