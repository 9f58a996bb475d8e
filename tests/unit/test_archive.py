"""The journal archive adapter on real files (tmp_path): exact round trips, acceptance order,
duplicates, lookups, damage (a flipped bit, a torn write, a bad header), pruning, stats, fork
safety and rotation."""

from __future__ import annotations

import datetime as dt
import os
import random
import time
import uuid
from pathlib import Path
from typing import BinaryIO

import jwt
import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.adapters.archive import FileArchive, reader, records
from ingest.adapters.archive.blocks import HEADER_SIZE, Block, Header
from ingest.adapters.archive.segments import BAD_HEADER, TORN
from ingest.services.archive_ports import ArchiveProblem
from ingest.services.ports import Delivery
from schemas import queue as wire

SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-32ch"
HOUR = 3_600_000
T0 = 1_764_000_000_000 - 1_764_000_000_000 % HOUR  # the start of an hour, in ms


def envelope(
    at_ms: int,
    resource: str | None = None,
    token: str | None = None,
    claims: bytes | None = None,
    report_id: str | None = None,
    plan_period: str | None = None,
) -> bytes:
    """A v1 envelope as intake writes it, with a real PyJWT HS256 token."""
    resource = resource or str(uuid.uuid4())
    date = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).isoformat()
    usages = [{"type": "cpu_hours", "amount": "12.50"}, {"type": "ram_gb", "amount": "3.00"}]
    payload = {"resource": resource, "date": date, "usages": usages}
    if token is None:
        token = jwt.encode(payload, SECRET, algorithm="HS256")
    report = wire.QueuedReport(
        id=report_id or f"{at_ms:012x}{random.getrandbits(80):020x}",
        customer=str(uuid.uuid4()),
        resource=resource,
        plan_period=plan_period,
        billing_period=date[:8] + "01",
        date=date,
        accepted_at=at_ms / 1000,
        usages=tuple(wire.UsageLine(u["type"], u["amount"]) for u in usages),
        token=token,
        claims=orjson.dumps(payload) if claims is None else claims,
    )
    return wire.encode(report)


def entries(start_ms: int, count: int, step_ms: int = 7, seq: int = 1) -> list[Delivery]:
    return [
        Delivery(f"{start_ms + i * step_ms}-{i % 2}", seq + i, envelope(start_ms + i * step_ms))
        for i in range(count)
    ]


def order(items: list[Delivery]) -> list[Delivery]:
    def key(d: Delivery) -> tuple[int, int, int]:
        ms, n = d.entry_id.split("-")
        return int(ms), int(n), d.seq

    return sorted(items, key=key)


def segment_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.seg"))


def report_id(raw: bytes) -> str:
    return wire.decode(raw).id


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def non_canonical(segment: str) -> str:
    """The same bytes to a lenient decoder: the last character's unused low bit set."""
    assert len(segment) % 4 in (2, 3)
    return segment[:-1] + ALPHABET[ALPHABET.index(segment[-1]) | 1]


def odd_raws() -> dict[str, bytes]:
    at = T0 + 1000
    good = jwt.encode({"resource": "rr", "date": "d", "usages": []}, SECRET, algorithm="HS256")
    h, p, s = good.split(".")
    assert len(p) % 4 in (2, 3)
    return {
        "plain": envelope(at),
        "with a plan period": envelope(at, plan_period=str(uuid.uuid4())),
        "padded payload": envelope(at, token=f"{h}.{p}{'=' * (-len(p) % 4) or '=='}.{s}"),
        "non-canonical base64": envelope(at, token=f"{h}.{non_canonical(p)}.{s}"),
        "standard alphabet": envelope(at, token=f"{h}.{p}+/.{s}"),
        "padded signature": envelope(at, token=f"{h}.{p}.{s}="),
        "not a jws": envelope(at, token="not-a-jws"),
        "four segments": envelope(at, token=f"{h}.{p}.{s}.x"),
        "empty token": envelope(at, token=""),
        "token with non-ascii": envelope(at, token=f"{h}.{p}.sïg"),
        "claims not the payload": envelope(at, token=good, claims=b'{"other":1}'),
        "empty claims": envelope(at, token=good, claims=b""),
        "large claims (bin 16)": envelope(at, claims=b"x" * 70_000),
        "medium claims (bin 16)": envelope(at, claims=b"y" * 300),
        "upper-case id": envelope(at, report_id="ABCDEF0123456789ABCDEF0123456789"),
        "non-hex id": envelope(at, report_id="report-one"),
        "odd-length hex id": envelope(at, report_id="abc"),
        "id repeated in the token": envelope(at, report_id="eyJ", token=good),
        "not msgpack": b"\xc1\xc1 poison",
        "empty": b"",
        "another struct": msgspec.msgpack.encode({"v": "v2", "id": "x"}),
    }


# -- the record transform -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(odd_raws()))
def test_records_restore_exactly(name: str) -> None:
    raw = odd_raws()[name]
    assert records.unpack(*records.pack(raw)) == raw


def test_records_take_the_compact_form_only_when_exact() -> None:
    raws = odd_raws()
    kind = {name: records.pack(raw).kind for name, raw in raws.items()}
    assert kind["plain"] == records.SPLIT_TOKEN | records.CLAIMS_PAYLOAD
    assert kind["claims not the payload"] == records.SPLIT_TOKEN
    assert kind["non-canonical base64"] == records.SPLIT_ID
    assert kind["padded payload"] == records.SPLIT_ID
    assert kind["standard alphabet"] == records.SPLIT_ID
    assert kind["not a jws"] == records.SPLIT_ID
    assert kind["non-hex id"] & records.ID_TEXT
    assert kind["upper-case id"] & records.ID_TEXT
    for name in ("not msgpack", "empty", "another struct"):
        assert kind[name] == records.VERBATIM | records.ID_TEXT
        assert records.pack(raws[name]).head == raws[name]
    assert len(records.pack(raws["plain"]).report_id) == 16


def test_non_canonical_payload_is_not_decoded() -> None:
    good = jwt.encode({"a": 1}, SECRET, algorithm="HS256")
    h, p, s = good.split(".")
    odd = non_canonical(p)
    assert jwt.utils.base64url_decode(odd) == jwt.utils.base64url_decode(p)
    raw = envelope(T0, token=f"{h}.{odd}.{s}", claims=b'{"a":1}')
    record = records.pack(raw)
    assert record.kind == records.SPLIT_ID
    assert records.unpack(*record) == raw


_TOKEN_CHARS = st.text(alphabet="AQgwBx-_+/=.abc0ï", max_size=40)


@settings(max_examples=200, deadline=None)
@given(token=_TOKEN_CHARS, claims=st.binary(max_size=300), rid=st.text(max_size=34))
def test_records_round_trip_any_envelope(token: str, claims: bytes, rid: str) -> None:
    raw = envelope(T0, token=token, claims=claims, report_id=rid or "0")
    assert records.unpack(*records.pack(raw)) == raw


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_records_round_trip_any_bytes(raw: bytes) -> None:
    assert records.unpack(*records.pack(raw)) == raw


# -- append and read ------------------------------------------------------------------------


def test_round_trip_through_files_is_exact(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path / "archive")
    raws = list(odd_raws().values())
    items = [Delivery(f"{T0 + 5 * i}-0", 100 + i, raw) for i, raw in enumerate(raws)]
    archive.append(items)
    assert list(archive.read()) == items
    check = archive.verify()
    assert (check.segments, check.blocks, check.entries, check.problems) == (1, 1, len(items), [])


def test_acceptance_order_across_appends_writers_and_hours(tmp_path: Path) -> None:
    items = entries(T0 - 2000, 40, step_ms=100) + entries(T0 + HOUR + 5, 30, step_ms=3, seq=500)
    shuffled = items[:]
    random.Random(4).shuffle(shuffled)
    one, two = FileArchive(tmp_path, writer="one"), FileArchive(tmp_path, writer="two")
    for i in range(0, len(shuffled), 9):
        (one if i % 2 else two).append(shuffled[i : i + 9])
    assert list(FileArchive(tmp_path).read()) == order(items)
    hours = sorted({p.parent.relative_to(tmp_path).as_posix() for p in segment_files(tmp_path)})
    assert len(hours) == 3  # the hour before T0, T0's and the next one


def test_same_stream_id_orders_by_sequence(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path)
    raw = envelope(T0)
    items = [Delivery(f"{T0}-3", 9, raw), Delivery(f"{T0}-3", 4, raw), Delivery(f"{T0}-1", 20, raw)]
    archive.append(items[:1])
    archive.append(items[1:])
    assert [(d.entry_id, d.seq) for d in archive.read()] == [(f"{T0}-1", 20), (f"{T0}-3", 4), (f"{T0}-3", 9)]


def test_duplicates_are_read_once(tmp_path: Path) -> None:
    items = entries(T0 + 10, 25)
    FileArchive(tmp_path, writer="a").append(items)
    FileArchive(tmp_path, writer="a").append(items[5:15])  # a restart re-appending
    FileArchive(tmp_path, writer="b").append(items[::-1])
    archive = FileArchive(tmp_path)
    assert list(archive.read()) == order(items)
    assert archive.stats()["entries"] == 60  # the stats count what is stored
    assert all(d.deliveries == 1 for d in archive.read())


def test_range_and_start_after(tmp_path: Path) -> None:
    items = order(entries(T0 - 500, 60, step_ms=20))
    archive = FileArchive(tmp_path)
    archive.append(items[30:])
    archive.append(items[:30])

    def ms(d: Delivery) -> int:
        return int(d.entry_id.split("-")[0])

    lo, hi = T0 - 100, T0 + 300
    assert list(archive.read(lo, hi)) == [d for d in items if lo <= ms(d) <= hi]
    assert list(archive.read(start_ms=lo)) == [d for d in items if ms(d) >= lo]
    assert list(archive.read(end_ms=hi)) == [d for d in items if ms(d) <= hi]
    after = items[10]
    assert list(archive.read(start_after=after.entry_id)) == items[11:]
    assert list(archive.read(start_after=after.entry_id, end_ms=hi)) == [d for d in items[11:] if ms(d) <= hi]
    assert list(archive.read(T0 + 10 * HOUR)) == []


def test_the_merge_decodes_a_block_only_when_it_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = FileArchive(tmp_path)
    batches = [entries(T0 + 1000 * b, 4, seq=10 * b) for b in range(8)]
    for batch in reversed(batches):
        archive.append(batch)
    loaded: list[int] = []
    real = reader.load

    def counting(fh: BinaryIO, header: Header) -> Block:
        loaded.append(header.first_ms)
        return real(fh, header)

    monkeypatch.setattr(reader, "load", counting)
    stream = archive.read()
    assert [next(stream) for _ in range(5)] == batches[0] + batches[1][:1]
    assert loaded == [T0, T0 + 1000]
    assert list(stream) == [d for b in batches for d in b][5:]
    assert list(archive.read(T0 + 3000, T0 + 4000)) == batches[3] + batches[4][:1]
    assert len(loaded) == 8 + 2  # a range read decodes only the blocks whose span meets it


def test_a_batch_across_hours_writes_a_block_per_hour(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path)
    items = entries(T0 - 30, 10, step_ms=6)
    archive.append(items)
    files = segment_files(tmp_path)
    assert [f.parent.name for f in files] == [
        time.strftime("%H", time.gmtime(T0 / 1000 - 1)),
        time.strftime("%H", time.gmtime(T0 / 1000)),
    ]
    assert archive.verify().blocks == 2
    assert list(archive.read()) == order(items)


# -- find -----------------------------------------------------------------------------------


def test_find_hit_miss_and_near_an_hour_boundary(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path)
    items = entries(T0 - 3000, 20, step_ms=300)
    archive.append(items)
    for item in items[::5]:
        rid = report_id(item.raw)
        assert archive.find(rid, int(rid[:12], 16)) == item
    # accepted just before the hour, stream id (Redis's clock) just after it
    raw = envelope(T0 - 800)
    late = Delivery(f"{T0 + 1200}-0", 999, raw)
    archive.append([late])
    assert archive.find(report_id(raw), T0 - 800) == late
    assert archive.find(report_id(raw), T0 - 800 - 20_000) is None  # outside the window
    assert archive.find("0" * 32, T0) is None
    assert archive.find("not an id", T0) is None
    poison = Delivery(f"{T0}-9", 1000, b"poison")
    archive.append([poison])
    assert archive.find("", T0) is None


def test_find_text_ids(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path)
    raw = envelope(T0, report_id="ABCDEF0123456789ABCDEF0123456789")
    item = Delivery(f"{T0}-0", 1, raw)
    archive.append([item])
    assert archive.find("ABCDEF0123456789ABCDEF0123456789", T0) == item
    assert archive.find("abcdef0123456789abcdef0123456789", T0) is None


# -- damage ---------------------------------------------------------------------------------


def three_blocks(root: Path) -> tuple[FileArchive, Path, list[list[Delivery]], list[int]]:
    archive = FileArchive(root, writer="w")
    batches = [entries(T0 + 100 * b, 5, seq=10 * b) for b in range(3)]
    offsets = []
    for batch in batches:
        files = segment_files(root)
        offsets.append(files[0].stat().st_size if files else 0)
        archive.append(batch)
    (path,) = segment_files(root)
    return archive, path, batches, offsets


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_flipped_payload_byte_loses_only_its_block(tmp_path: Path) -> None:
    archive, path, batches, offsets = three_blocks(tmp_path)
    flip(path, offsets[1] + HEADER_SIZE + 5)
    check = archive.verify()
    assert check.problems == [ArchiveProblem(str(path), offsets[1], "payload checksum mismatch")]
    assert (check.blocks, check.entries) == (2, 10)
    seen: list[ArchiveProblem] = []
    assert list(archive.read(on_problem=seen.append)) == batches[0] + batches[2]
    assert seen == check.problems
    assert str(path) in str(seen[0])


def test_a_torn_write_is_a_problem_and_the_blocks_before_it_are_read(tmp_path: Path) -> None:
    archive, path, batches, offsets = three_blocks(tmp_path)
    os.truncate(path, path.stat().st_size - 10)
    # just written to: a block being written, not reported (its entries are still pending)
    assert archive.verify().problems == [] and list(archive.read()) == batches[0] + batches[1]
    old = time.time() - 60
    os.utime(path, (old, old))  # a minute later, nobody wrote the rest: a torn write
    check = archive.verify()
    assert check.problems == [ArchiveProblem(str(path), offsets[2], TORN)]
    assert list(archive.read()) == batches[0] + batches[1]
    os.truncate(path, offsets[2] + 20)  # the end of the file in the middle of a header
    os.utime(path, (old, old))
    assert archive.verify().problems == [ArchiveProblem(str(path), offsets[2], TORN)]
    assert archive.stats()["entries"] == 10


def test_a_corrupt_header_resyncs_to_the_next_block(tmp_path: Path) -> None:
    archive, path, batches, offsets = three_blocks(tmp_path)
    flip(path, offsets[1] + 14)  # the payload length: the header's crc no longer checks
    check = archive.verify()
    assert check.problems == [ArchiveProblem(str(path), offsets[1], BAD_HEADER)]
    assert check.blocks == 2
    seen: list[ArchiveProblem] = []
    assert list(archive.read(on_problem=seen.append)) == batches[0] + batches[2]
    assert seen == check.problems
    flip(path, offsets[2])  # the magic of the last block too: nothing left to resync to
    assert list(archive.read()) == batches[0]


def test_garbage_between_blocks_is_skipped(tmp_path: Path) -> None:
    archive, path, batches, offsets = three_blocks(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: offsets[1]] + b"IJA1 junk" * 50 + data[offsets[1] :])
    assert list(archive.read()) == [d for b in batches for d in b]
    assert [p.reason for p in archive.verify().problems] == [BAD_HEADER]


def test_an_append_after_a_torn_write_goes_to_a_new_file(tmp_path: Path) -> None:
    archive, path, batches, offsets = three_blocks(tmp_path)
    os.truncate(path, offsets[2] + 30)
    more = entries(T0 + 900, 3, seq=900)
    FileArchive(tmp_path, writer="w").append(more)  # the restarted process, same name
    assert len(segment_files(tmp_path)) == 2
    assert list(FileArchive(tmp_path).read()) == order(batches[0] + batches[1] + more)


# -- prune, stats, writers ------------------------------------------------------------------


def test_prune_removes_old_hours_only(tmp_path: Path) -> None:
    now = T0 / 1000
    day = 86_400_000
    archive = FileArchive(tmp_path, keep_days=2, clock=lambda: now)
    old = entries(T0 - 3 * day, 3) + entries(T0 - 2 * day - HOUR - 10, 2)
    kept = entries(T0 - 2 * day + 10, 2) + entries(T0 - 10, 2)
    archive.append(old + kept)
    assert len(segment_files(tmp_path)) == 4
    assert archive.prune() == 2
    assert list(archive.read()) == order(kept)
    assert archive.prune(now) == 0
    days = sorted(p.name for p in tmp_path.iterdir())
    assert len(days) == 2  # the emptied day directory is gone
    assert archive.prune(now + 10 * 86400) == 2
    assert list(tmp_path.iterdir()) == []
    archive.append(entries(T0, 1))  # the writer reopens what it closed
    assert len(list(archive.read())) == 1


def test_stats(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path / "not yet", keep_days=7)
    empty = archive.stats()
    assert (empty["segments"], empty["bytes"], empty["entries"], empty["bytes_per_report"]) == (0, 0, 0, None)
    assert empty["first_accepted_at"] is None and empty["keep_days"] == 7
    assert list(archive.read()) == [] and archive.find("0" * 32, T0) is None
    assert archive.verify().segments == 0 and archive.prune() == 0
    items = entries(T0 + 1, 100, step_ms=50)
    archive.append(items[:60])
    archive.append(items[60:])
    stats = archive.stats()
    size = sum(p.stat().st_size for p in segment_files(tmp_path))
    assert (stats["segments"], stats["entries"], stats["bytes"]) == (1, 100, size)
    assert stats["bytes_per_report"] == round(size / 100, 1)
    assert stats["first_accepted_at"] == "2025-11-24T16:00:00.001+00:00"
    assert stats["last_accepted_at"] == "2025-11-24T16:00:04.951+00:00"
    assert stats["directory"] == str(tmp_path / "not yet")


def test_stats_of_closed_files_come_from_their_summaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = FileArchive(tmp_path, keep_days=7)
    archive.append(entries(T0 + 1, 40, step_ms=50))
    archive.append(entries(T0 + 5000, 30, step_ms=50, seq=100))
    walked = archive.stats()  # the file is open: read from its headers
    archive.close()  # closed for good: its summary is saved next to it
    (segment,) = segment_files(tmp_path)
    assert segment.with_name(segment.name + ".sum").is_file()

    def no_walk(*_args: object) -> object:
        raise AssertionError("stats read the headers of a file with a current summary")

    monkeypatch.setattr(reader, "headers", no_walk)
    assert archive.stats() == walked
    monkeypatch.undo()
    with segment.open("ab") as fh:  # the file changed after its summary: the summary is stale
        fh.write(b"torn")
    stale = archive.stats()
    assert stale["entries"] == 70 and stale["bytes"] == walked["bytes"] + 4
    segment.with_name(segment.name + ".sum").write_text("{not json")
    assert archive.stats()["entries"] == 70
    archive.prune(T0 / 1000 + 30 * 86400)
    assert list(tmp_path.iterdir()) == []  # the summaries go with their hours


def test_a_forked_child_writes_its_own_file(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path)
    parent = archive.writer
    archive.append(entries(T0, 3))
    archive._pid = -1  # as if this process were a child forked after the first append
    archive.append(entries(T0 + 100, 3, seq=50))
    assert archive.writer != parent
    names = [p.name for p in segment_files(tmp_path)]
    assert len(names) == 2 and sum(n.startswith(parent) for n in names) == 1
    named = FileArchive(tmp_path, writer="fixed")
    named._pid = -1
    named.append(entries(T0 + 200, 1, seq=80))
    assert named.writer.startswith("fixed-") and named.writer != "fixed"
    assert len(list(archive.read())) == 7


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_really_forked_child_writes_its_own_file(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path)
    archive.append(entries(T0, 2))
    pid = os.fork()
    if pid == 0:  # the child: append, then leave without pytest's teardown
        try:
            archive.append(entries(T0 + 50, 2, seq=40))
            os._exit(0 if archive.writer.split("-")[-2] == str(os.getpid()) else 2)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    archive.append(entries(T0 + 100, 2, seq=80))
    assert len(segment_files(tmp_path)) == 2  # the parent kept its file, the child made one
    assert [d.seq for d in archive.read()] == [1, 2, 40, 41, 80, 81]


def test_size_rotation(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path, writer="w", max_segment_bytes=1)
    for b in range(3):
        archive.append(entries(T0 + 10 * b, 2, seq=10 * b))
    assert [p.name for p in segment_files(tmp_path)] == ["w-0.seg", "w-1.seg", "w-2.seg"]
    assert len(list(archive.read())) == 6


def test_append_raises_oserror_when_the_directory_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OSError):
        FileArchive(blocker / "archive").append(entries(T0, 1))


# -- a measure, not a test: ARCHIVE_MEASURE=1 pytest -s -k measure ----------------------------


@pytest.mark.skipif(not os.environ.get("ARCHIVE_MEASURE"), reason="a measurement; ARCHIVE_MEASURE=1")
def test_measure(tmp_path: Path) -> None:
    rng = random.Random(7)
    resources = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(20_000)]
    customers = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(20)]
    items = []
    for i in range(20_000):
        at_ms = T0 + i // 5
        r = rng.randrange(20_000)
        date = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).isoformat()
        usages = [
            {"type": "cpu_hours", "amount": f"{rng.randrange(100_000) / 100:.2f}"},
            {"type": "ram_gb", "amount": f"{rng.randrange(100_000) / 100:.2f}"},
        ]
        claims = {"resource": resources[r], "date": date, "usages": usages}
        report = wire.QueuedReport(
            id=f"{at_ms:012x}{rng.getrandbits(80):020x}",
            customer=customers[r % 20],
            resource=resources[r],
            plan_period=None,
            billing_period=date[:8] + "01",
            date=date,
            accepted_at=at_ms / 1000,
            usages=tuple(wire.UsageLine(u["type"], u["amount"]) for u in usages),
            token=jwt.encode(claims, SECRET, algorithm="HS256"),
            claims=orjson.dumps(claims),
        )
        items.append(Delivery(f"{at_ms}-{i % 5}", 1000 + i, wire.encode(report)))
    archive = FileArchive(tmp_path)
    started = time.process_time()
    for i in range(0, len(items), 1000):
        archive.append(items[i : i + 1000])
    wrote = time.process_time() - started
    started = time.process_time()
    out = list(archive.read())
    read = time.process_time() - started
    assert out == items
    raw = sum(len(d.raw) for d in items) / len(items)
    print(
        f"\n{len(items)} envelopes of {raw:.0f} bytes: {archive.stats()['bytes_per_report']} bytes a report, "
        f"append {wrote / len(items) * 1e6:.1f} µs, read {read / len(items) * 1e6:.1f} µs a report (CPU)"
    )
