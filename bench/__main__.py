"""``python -m bench [--quick] ...``; ``python -m bench --bridge ...`` is bench/bridge.py,
``python -m bench --archive ...`` bench/archive.py."""

from __future__ import annotations

import argparse
import sys

from bench import configure, run


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if "--bridge" in args:  # make bench ARGS=--bridge: the Waldur bridge benchmark (bench/bridge.py)
        from bench import bridge

        return bridge.main([a for a in args if a != "--bridge"])
    if "--archive" in args:  # make bench ARGS=--archive: the journal archive benchmark (bench/archive.py)
        from bench import archive

        return archive.main([a for a in args if a != "--archive"])
    parser = configure(argparse.ArgumentParser(prog="python -m bench", description="ingest bench (issue 5)"))
    try:
        return run(parser.parse_args(args))
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
