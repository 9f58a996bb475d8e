"""The ``ingest`` command line against the running stack: push, then read back."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def _push(stack: Stack, *args: str, secret: str | None = None) -> tuple[int, int, str]:
    demo = stack.demo
    done = stack.cli(
        "push",
        "--url",
        stack.url,
        "--customer",
        demo.provider,
        "--secret",
        secret or demo.secret,
        "--resource",
        demo.resource,
        *args,
    )
    status, _, body = done.stdout.strip().partition(" ")
    assert status.isdigit(), f"rc={done.returncode} stdout={done.stdout!r} stderr={done.stderr!r}"
    return done.returncode, int(status), body


def test_ingest_push_round_trip(stack: Stack) -> None:
    demo = stack.demo
    rc, status, body = _push(stack, "cpu_hours=3")
    assert (rc, status) == (0, 201), body
    receipt = json.loads(body)
    assert stack.wait_final([receipt["id"]]) == {receipt["id"]: "committed"}
    row = stack.usage(demo.resource)["cpu_hours"]
    assert (row["amount"], row["sequence"], row["report_id"]) == ("3.00", receipt["sequence"], receipt["id"])

    rc, status, body = _push(stack, "--dry-run", "ram_gb=9")
    assert (rc, status) == (0, 201), body
    assert json.loads(body)["dry_run"] is True

    rc, status, body = _push(stack, "ram_gb=9", secret="wrong-secret-0000")
    assert (rc, status) == (1, 400)
    assert json.loads(body) == {"non_field_errors": ["Signature verification failed."]}

    stack.wait_idle()
    assert set(stack.usage(demo.resource)) == {"cpu_hours"}
    assert stack.queue.journal_length() == 1
    shown = stack.cli("usage", "show", "--resource", demo.resource, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [(r["component"], r["amount"]) for r in json.loads(shown.stdout)] == [("cpu_hours", "3.00")]
    stack.assert_healthy()
