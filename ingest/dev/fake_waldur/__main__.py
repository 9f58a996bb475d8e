"""``python -m ingest.dev.fake_waldur``: run the fake Waldur until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from ingest.dev.fake_waldur.app import create_app
from ingest.dev.fake_waldur.seed import SeedError, demo_document, generate, merge
from ingest.dev.fake_waldur.server import make_server
from ingest.dev.fake_waldur.store import Config, Store


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ingest.dev.fake_waldur", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    p.add_argument("--token", required=True, help="a staff user's API token")
    p.add_argument("--mode", choices=("8", "7.0.7"), default="8")
    p.add_argument("--rate", type=float, default=None, help="set_usage calls per second (default: no cap)")
    p.add_argument("--rate-mode", choices=("queue", "429"), default="queue")
    p.add_argument("--latency-ms", type=float, default=0.0, help="a fixed delay added to set_usage")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--seed", type=Path, help="a catalog document (JSON or YAML) with fake-only keys")
    source.add_argument("--demo", action="store_true", help="the demo catalog (ingest/dev/demo/catalog.json)")
    source.add_argument("--generate", type=int, metavar="N", help="N resources, deterministically")
    p.add_argument("--time-zone", default="UTC", help="Waldur's TIME_ZONE (billing periods)")
    p.add_argument("--token-lifetime", type=int, default=None, help="idle seconds before the token expires")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> Store:
    store = Store(
        Config(
            mode=args.mode,
            rate=args.rate,
            rate_mode=args.rate_mode,
            latency_ms=args.latency_ms,
            time_zone=args.time_zone,
        )
    )
    staff = {
        "token": args.token,
        "username": "staff",
        "is_staff": True,
        "token_lifetime": args.token_lifetime,
    }
    merge(store, {"users": [staff]})
    store.staff_token = args.token
    if args.seed is not None:
        text = args.seed.read_text(encoding="utf-8")
        if args.seed.suffix.lower() in (".yaml", ".yml"):
            import yaml

            merge(store, yaml.safe_load(text))
        else:
            import json

            merge(store, json.loads(text))
    elif args.demo:
        merge(store, demo_document())
    elif args.generate:
        generate(store, args.generate)
    merge(store, {"users": [staff]})  # the --token user stays staff whatever the seed says
    return store


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        store = build(args)
    except (SeedError, OSError, ValueError) as exc:
        print(f"fake Waldur: cannot load the seed: {exc}", file=sys.stderr)
        return 2
    server = make_server(args.host, args.port, create_app(store))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    worker.start()
    print(f"fake Waldur (mode {args.mode}) listening on http://{args.host}:{server.server_port}/", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    print("fake Waldur stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
