"""``python -m bench [--quick] ...``"""

from __future__ import annotations

import argparse
import sys

from bench import configure, run


def main(argv: list[str] | None = None) -> int:
    parser = configure(argparse.ArgumentParser(prog="python -m bench", description="ingest bench (issue 5)"))
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
