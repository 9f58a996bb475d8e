"""``ingest push --file``: send a JSON-lines file of reports through the batch endpoint.

Each line is either a signed token (a JSON string) or an object of claims
(``{"resource": ..., "usages": [...]}``) that is signed here with ``--secret``. Chunks are
retried on 429/503 (honouring Retry-After) and on connection errors; nothing is resent once
a chunk got its per-item answer, so a report is never sent twice by this tool.
"""

from __future__ import annotations

import collections
import gzip
import json
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from ingest.cli.context import CliError
from ingest.domain import signing

BATCH_PATH = "/api/marketplace-public-api/set_usages/"


def load_tokens(path: Path, secret: str | None) -> list[str]:
    tokens: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise CliError(f"{path}:{number}: not JSON") from None
        if isinstance(item, str):
            tokens.append(item)
        elif isinstance(item, dict):
            if not secret:
                raise CliError(f"{path}:{number}: unsigned claims need --secret")
            tokens.append(signing.sign(item, secret))
        else:
            raise CliError(f"{path}:{number}: expected a token string or a claims object")
    return tokens


def send_chunk(
    client: httpx.Client, url: str, customer: str, tokens: list[str], dry_run: bool, attempts: int = 8
) -> list[dict[str, Any]]:
    body = gzip.compress(orjson.dumps({"customer": customer, "reports": tokens, "dry_run": dry_run}))
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    delay = 0.5
    for attempt in range(attempts):
        try:
            resp = client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            if attempt == attempts - 1:
                raise CliError(f"cannot reach {url}: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 30)
            continue
        if resp.status_code in (429, 503) and attempt < attempts - 1:
            retry_after = resp.headers.get("Retry-After", "")
            time.sleep(float(retry_after) if retry_after.isdigit() else delay)
            delay = min(delay * 2, 30)
            continue
        if resp.status_code != 207:
            raise CliError(f"{resp.status_code} from {url}: {resp.text[:300]}")
        results: list[dict[str, Any]] = resp.json()["results"]
        return results
    raise CliError(f"gave up on {url} after {attempts} attempts")


def push(
    url: str, customer: str, tokens: list[str], chunk: int, dry_run: bool, timeout: float
) -> tuple[int, collections.Counter[str]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    accepted = 0
    reasons: collections.Counter[str] = collections.Counter()
    target = url.rstrip("/") + BATCH_PATH
    with (
        httpx.Client(timeout=timeout) as client,
        Progress(TextColumn("push"), BarColumn(), MofNCompleteColumn()) as bar,
    ):
        task = bar.add_task("push", total=len(tokens))
        for start in range(0, len(tokens), chunk):
            part = tokens[start : start + chunk]
            for result in send_chunk(client, target, customer, part, dry_run):
                if result["status"] == 201:
                    accepted += 1
                else:
                    reasons[json.dumps(result["errors"], sort_keys=True)] += 1
            bar.update(task, advance=len(part))
    return accepted, reasons
