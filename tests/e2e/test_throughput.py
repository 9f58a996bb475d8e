"""A small throughput measurement. Printed, never asserted: only correctness is asserted."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ingest.adapters.sql import tables as t
from tests.e2e.conftest import FINAL_STATES, SET_USAGE, Stack

pytestmark = pytest.mark.e2e

REPORTS = 2000
THREADS = 4


def _final_count(stack: Stack) -> int:
    r = t.UsageReport
    with stack.engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(r).where(r.state.in_(FINAL_STATES))).scalar() or 0
        )


def test_throughput_of_signed_reports(stack: Stack) -> None:
    demo = stack.demo
    keys = [
        (demo.resource, "cpu_hours"),
        (demo.resource, "ram_gb"),
        (demo.resource2, "cpu_hours"),
        (demo.resource2, "ram_gb"),
    ]
    plan: list[tuple[tuple[str, str], str, dict[str, Any]]] = []
    for i in range(REPORTS):
        resource, component = keys[i % len(keys)]
        amount = f"{(i * 7919) % 10007}.{i % 100:02d}"  # not monotonic: last must win, not max
        plan.append(
            (
                (resource, component),
                amount,
                stack.body({"resource": resource, "usages": [{"type": component, "amount": amount}]}),
            )
        )
    results: list[tuple[int, Any]] = [(0, None)] * REPORTS

    def send(lane: int) -> None:
        with httpx.Client(base_url=stack.url, timeout=30) as client:  # keep-alive per thread
            for i in range(lane, REPORTS, THREADS):
                resp = client.post(SET_USAGE, json=plan[i][2])
                results[i] = (resp.status_code, resp.json() if resp.status_code == 201 else resp.text)

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(send, range(THREADS)))
    accepted_in = time.perf_counter() - started
    refused = [(i, r) for i, r in enumerate(results) if r[0] != 201]
    assert not refused, refused[:5]

    stack.wait_for(
        f"{REPORTS} reports in a final state",
        lambda: _final_count(stack) >= REPORTS,
        timeout=180,
        interval=0.1,
    )
    committed_in = time.perf_counter() - started
    print(
        f"\n[{stack.engine.dialect.name}] accepted {REPORTS} reports in {accepted_in:.2f} s "
        f"({REPORTS / accepted_in:.0f}/s), committed all in {committed_in:.2f} s"
    )

    receipts = [body for _status, body in results]
    states = stack.states(r["id"] for r in receipts)
    assert len(states) == REPORTS
    assert set(states.values()) <= {"committed", "superseded"}, set(states.values())
    sequences = [r["sequence"] for r in receipts]
    assert len(set(sequences)) == REPORTS

    # per usage key, the report with the highest sequence holds the row
    winners: dict[tuple[str, str], tuple[int, str, str]] = {}
    for (key, amount, _body), receipt in zip(plan, receipts, strict=True):
        if key not in winners or receipt["sequence"] > winners[key][0]:
            winners[key] = (receipt["sequence"], receipt["id"], amount)
    for (resource, component), (seq, report_id, amount) in winners.items():
        row = stack.usage(resource)[component]
        assert (row["amount"], row["sequence"], row["report_id"]) == (amount, seq, report_id)
        assert states[report_id] == "committed"
    stack.assert_healthy()
