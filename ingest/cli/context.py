"""What every command shares: the one user-facing error, the process's runtime and the two
output forms (JSON and a table)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.bootstrap import Runtime

# how a command family registers a command: add(name, fn, help, parent) -> its parser
Add = Callable[..., Any]


class CliError(Exception):
    """A user-facing failure: printed as one line by ``main``, exit status 2."""


def runtime() -> Runtime:
    """This process's runtime (built on first use: commands that need no connection pay
    nothing for it)."""
    from ingest import bootstrap

    return bootstrap.runtime()


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(*columns)
    for r in rows:
        out.add_row(*[str(r.get(c) if r.get(c) is not None else "-") for c in columns])
    Console().print(out)
