"""The journal archive with real Redis, SQL and files: after Redis trimmed every committed
entry, the archive alone restores the usage table from a backup (twice, idempotently); a
crash between the SQL commit and the archive write, or between the archive write and the
acknowledgement, loses nothing and replays nothing twice; a corrupted block is skipped by
replay and named by verify."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from ingest.services import operations
from ingest.services.drain import drain, reconcile
from tests.integration.test_operations import _backup, post, usage_table

INGEST = str(Path(sys.executable).parent / "ingest")


def drain_archiving(rt):
    return drain(rt.queue, rt.committer, "test", 50, 0.01, 10, archive=rt.archive)


def segment_files(rt) -> list[Path]:
    return sorted(Path(rt.settings.journal_archive_dir).rglob("*.seg"))


def test_the_archive_alone_restores_the_usage_table_after_redis_trimmed(client, runtime, demo, tmp_path):
    for i in range(5):
        post(client, demo, demo.resource, cpu_hours=str(i), ram_gb=str(10 + i))
    drain_archiving(runtime)
    restore = _backup(runtime, tmp_path)
    taken = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    for i in range(5, 12):
        post(client, demo, demo.resource if i % 2 else demo.resource2, cpu_hours=str(i))
    post(client, demo, demo.resource2, ram_gb="77")
    drain_archiving(runtime)
    expected = usage_table(runtime.engine)
    assert runtime.queue.trim(0) == 12  # all committed but the newest: only the archive has them
    assert runtime.queue.journal_length() == 1  # the stream keeps its last entry id
    restore()
    assert usage_table(runtime.engine) != expected

    plan = operations.plan_replay(runtime, taken)
    assert plan.entries >= 8 and plan.changes
    for _ in range(2):  # idempotent
        outcome = operations.replay(runtime, taken)
        assert usage_table(runtime.engine) == expected
    assert len(outcome.skipped) >= 8 and not outcome.committed


def test_a_crash_before_the_archive_write_or_before_the_ack_archives_each_report_once(client, runtime, demo):
    ids = [post(client, demo, demo.resource, cpu_hours=str(i))["id"] for i in range(4)]
    claimed = runtime.queue.claim("crashed", 10, 0)
    assert len(claimed) == 4
    # one worker committed the first two to SQL and died before the archive write ...
    runtime.committer.commit(claimed[:2], fresh=True)
    # ... another archived the other two and died before the acknowledgement
    runtime.committer.commit(claimed[2:], fresh=True)
    runtime.archive.append(claimed[2:])
    assert runtime.queue.pending_count() == 4
    summary = reconcile(
        runtime.queue, runtime.committer, "reconciler", 0.0, 50, 600, 0, True, archive=runtime.archive
    )
    assert summary["reclaimed"] == 4 and summary["skipped"] == 4  # final in SQL: not again
    assert runtime.queue.pending_count() == 0
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    runtime.queue.trim(0)
    archived = [e.entry_id for e in runtime.archive.read()]
    assert archived == [e.entry_id for e in claimed]  # the two appended twice come once
    seen = [r.id for _e, r in operations.journal_window(runtime, since, None, None, None)]
    assert seen == ids


def test_a_corrupted_block_is_named_by_verify_and_skipped_by_replay(client, runtime, demo, tmp_path):
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    for i, resource in enumerate((demo.resource, demo.resource2, demo.resource)):
        post(client, demo, resource, cpu_hours=str(i))
        drain_archiving(runtime)  # one block each
    runtime.queue.trim(0)  # Redis keeps the newest entry only
    files = segment_files(runtime)
    assert len(files) == 1, "one worker, one hour: one segment"
    target = files[0]
    data = bytearray(target.read_bytes())
    data[50] ^= 0xFF  # inside the first block's payload (its header is 44 bytes)
    target.write_bytes(bytes(data))

    env = {
        **os.environ,
        "DATABASE_URL": runtime.settings.database_url,
        "REDIS_URL": runtime.settings.redis_url,
        "REDIS_PREFIX": runtime.settings.redis_prefix,
        "JOURNAL_ARCHIVE_DIR": runtime.settings.journal_archive_dir,
    }

    def ingest(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([INGEST, *argv], env=env, capture_output=True, text=True, timeout=60)

    verify = ingest("archive", "verify")
    assert verify.returncode == 1 and str(target) in verify.stderr
    assert "problem" in verify.stdout
    replay = ingest("replay", "--since", since.isoformat())
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert str(target) in replay.stderr and "archive verify" in replay.stderr
    assert "replayed 2 report(s)" in replay.stdout  # the blocks that read are replayed
    stats = ingest("archive", "stats", "--json")
    assert stats.returncode == 0 and '"segments"' in stats.stdout
