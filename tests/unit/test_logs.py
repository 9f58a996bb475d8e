"""Logs an operator can watch: INFO carries what needs acting on, routine ticks are DEBUG.

Celery's own loggers are driven in-process with Celery's own message templates; the real
worker + beat processes are watched in tests/integration/test_quiet_logs.py."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

from ingest import config, logs
from ingest.domain.errors import Backpressure
from ingest.services.drain import reconcile
from ingest.services.pressure import MemoryReading, Pressure
from tests.unit.fakes import FakeJournal, FakeMetrics, FakeStore
from tests.unit.test_commit import delivery, make


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards (configure replaces its handlers)."""
    logger = logging.getLogger()
    handlers, level, chosen = list(logger.handlers), logger.level, list(logs._chosen)
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logs._chosen[:] = chosen


def configured(root: logging.Logger, level: str = "INFO", fmt: str = "json") -> io.StringIO:
    logs.configure(level, fmt)
    out = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    return out


def celery_tick(n: int) -> None:
    """What beat, the worker's strategy and the trace log for one drain, as Celery logs it."""
    task_id = f"0000000{n}-aaaa-bbbb-cccc-dddddddddddd"
    logging.getLogger("celery.beat").info(
        "Scheduler: Sending due task %s (%s)", "drain", "workers.tasks.drain"
    )
    context = {"id": task_id, "name": "workers.tasks.drain"}
    logging.getLogger("celery.worker.strategy").info(LOG_RECEIVED, context, extra={"data": context})
    done = {**context, "runtime": 0.01 * n, "return_value": {"committed": 0}}
    logging.getLogger("celery.app.trace").info(LOG_SUCCESS, done, extra={"data": done})


def shape(line: str) -> str:
    """A line without its time, ids and numbers: equal shapes are the same message repeated."""
    doc = json.loads(line)
    return f"{doc['level']} {doc['logger']} " + re.sub(r"[0-9a-f-]{8,}|\d+(\.\d+)?", "#", doc["msg"])


def test_celery_routine_lines_do_not_repeat_at_info_per_tick(root):
    out = configured(root)
    for n in range(5):
        celery_tick(n)
    logging.getLogger("celery.app.trace").error(
        "Task %s raised unexpected: %s", "workers.tasks.drain", "boom"
    )
    logging.getLogger("celery.worker.consumer").warning("consumer: Connection to broker lost")
    lines = out.getvalue().splitlines()
    shapes = [shape(line) for line in lines]
    assert len(shapes) == len(set(shapes)), lines  # nothing repeats per tick
    assert [json.loads(line)["level"] for line in lines] == ["INFO", "ERROR", "WARNING"]
    assert "Sending due task drain" in lines[0]  # the first send shows the schedule works


def test_at_debug_the_routine_lines_are_all_there_as_debug(root):
    out = configured(root, "DEBUG")
    for n in range(3):
        celery_tick(n)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(docs) == 9
    assert [d["level"] for d in docs] == ["INFO"] + ["DEBUG"] * 8
    assert sum("succeeded in" in d["msg"] for d in docs) == 3


def test_other_celery_info_lines_pass(root):
    out = configured(root)
    logging.getLogger("celery.apps.worker").info("%s ready.", "worker.8000@host")
    logging.getLogger("celery.beat").info("beat: Starting...")
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == [
        "worker.8000@host ready.",
        "beat: Starting...",
    ]


def test_json_is_the_default_off_a_terminal_and_text_on_one():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format("", io.StringIO()) == "json"
    assert logs.resolve_format("", Tty()) == "text"
    assert logs.resolve_format("json", Tty()) == "json"
    assert config.load({}).log_format == ""
    assert config.load({"LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(config.SettingsError, match="LOG_FORMAT"):
        config.load({"LOG_FORMAT": "xml"})


def test_both_formats_carry_a_utc_time_and_the_report_id(root):
    out = configured(root, fmt="json")
    logging.getLogger("ingest.x").warning("quarantined", extra={"report_id": "r1"})
    doc = json.loads(out.getvalue())
    assert doc["report_id"] == "r1" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["t"])
    out = configured(root, fmt="text")
    logging.getLogger("ingest.x").warning("quarantined", extra={"report_id": "r1"})
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING ingest\.x: quarantined report_id=r1\n",
        out.getvalue(),
    )


def test_a_later_configure_without_a_format_keeps_the_chosen_one(root):
    logs.configure("INFO", "text")
    logs.configure("INFO")  # what bootstrap.runtime() does in a worker child
    assert isinstance(root.handlers[0].formatter, logs.TextFormatter)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_commit_summary_is_one_line_per_interval_and_none_when_idle(caplog):
    clock = Clock()
    summary = logs.Summary(logging.getLogger("t.summary"), logs.commit_line, 60.0, clock)
    with caplog.at_level(logging.INFO, logger="t.summary"):
        for _ in range(29):  # a drain every 2 s for 58 s
            clock.now += 2
            summary.add(batches=1, committed=10, superseded=0, quarantined=0)
        assert caplog.messages == []
        clock.now += 2
        summary.add(batches=1, committed=10, superseded=1, quarantined=0)
        assert caplog.messages == ["committed 300 reports (1 superseded) in 30 batches in the last 60 s"]
        for _ in range(90):  # three idle minutes: no line
            clock.now += 2
            summary.add(batches=0, committed=0, superseded=0, quarantined=0)
        assert len(caplog.messages) == 1
        clock.now += 1
        summary.add(batches=2, committed=5, superseded=0, quarantined=1)
        summary.flush()  # the worker process stops
    assert caplog.messages[1] == "committed 5 reports (1 quarantined) in 2 batches in the last 1 s"
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.INFO]


def test_the_drain_task_feeds_the_summary(monkeypatch, caplog):
    from ingest import bootstrap
    from tests.unit.test_drain import FakeRuntime
    from workers import tasks

    rt = FakeRuntime(
        FakeJournal([delivery(1, cpu="1"), delivery(2, cpu="2")]), make(FakeStore()), FakeMetrics()
    )
    monkeypatch.setattr(bootstrap, "runtime", lambda: rt)
    monkeypatch.setattr(tasks, "commits", logs.Summary(logging.getLogger("t.drain"), logs.commit_line))
    with caplog.at_level(logging.DEBUG):
        tasks.drain()
        assert not [r for r in caplog.records if r.levelno >= logging.INFO]
        tasks.commits.flush()
    assert caplog.messages[-1].startswith("committed 1 reports (1 superseded) in 1 batches")


class Gauges:
    def __init__(self) -> None:
        self.backlog_now = 0

    def memory_reading(self) -> MemoryReading:
        return MemoryReading(0, 0, 0, self.backlog_now, self.backlog_now)

    def set_pending_cap(self, cap: int | None) -> None:
        return None

    def trim(self, retention_seconds: float) -> int:
        return 0


def test_back_pressure_logs_when_it_turns_on_and_off_not_per_request(caplog):
    gauges, clock = Gauges(), Clock()
    pressure = Pressure(gauges, max_backlog=100, high_water=0.8, interval=0.5, clock=clock)
    refused = 0
    with caplog.at_level(logging.DEBUG, logger="ingest.services.pressure"):
        for backlog in [0, 50, 150, 160, 170, 180, 90, 10, 0, 200, 0]:
            gauges.backlog_now = backlog
            for _ in range(20):  # requests between samples
                clock.now += 0.1
                try:
                    pressure.check()
                except Backpressure:
                    refused += 1
    assert refused > 50
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("WARNING", "back-pressure on"),
        ("INFO", "back-pressure off"),
        ("WARNING", "back-pressure on"),
        ("INFO", "back-pressure off"),
    ]
    assert "backlog 150 over 100" in caplog.records[0].getMessage()


def test_back_pressure_sampled_in_the_background_logs_transitions_too(caplog):
    gauges = Gauges()
    pressure = Pressure(gauges, max_backlog=100, high_water=0.8)
    with caplog.at_level(logging.INFO, logger="ingest.services.pressure"):
        for backlog in [0, 500, 500, 500, 0, 0]:
            gauges.backlog_now = backlog
            pressure.sample()
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]


def test_a_reconcile_pass_that_changed_nothing_is_debug(caplog):
    journal = FakeJournal([])
    with caplog.at_level(logging.DEBUG, logger="ingest.services.drain"):
        reconcile(journal, make(FakeStore()), "r", 0.0, 10, 3600, 0, True, FakeMetrics())
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_a_reconcile_pass_that_re_drove_something_is_info(caplog):
    journal = FakeJournal([delivery(1, cpu="1")])
    journal.claim("w", 10, 0)  # claimed by a worker that died
    with caplog.at_level(logging.DEBUG, logger="ingest.services.drain"):
        summary = reconcile(journal, make(FakeStore()), "r", 0.0, 10, 3600, 0, True, FakeMetrics())
    assert summary["reclaimed"] == 1
    assert [r.levelno for r in caplog.records if r.getMessage().startswith("reconcile {")] == [logging.INFO]


def test_the_waldur_clients_request_lines_are_debug_only(root):
    """httpx logs each request at INFO; the forwarder makes tens a second."""
    out = configured(root, "INFO")
    logging.getLogger("httpx").info('HTTP Request: POST http://waldur/api/ "HTTP/1.1 201 Created"')
    logging.getLogger("httpx").warning("a real problem")
    assert "HTTP Request" not in out.getvalue() and "a real problem" in out.getvalue()
    out = configured(root, "DEBUG")
    logging.getLogger("httpx").info('HTTP Request: POST http://waldur/api/ "HTTP/1.1 201 Created"')
    assert "HTTP Request" in out.getvalue()
    logging.getLogger("httpx").setLevel(logging.NOTSET)
