"""One entry can never wedge a batch (real Redis, SQLite and PostgreSQL).

Two ways a report fails in a batch of 50: Redis handed out its acceptance sequence again
(lost the last second of its AOF, or a failover) so it collides with a committed report's;
or the database refuses one of its values (a trigger standing in for a constraint -- on
PostgreSQL a deferred one, so the whole transaction fails at COMMIT). Every other report of
the batch commits, the culprit is quarantined with a clear reason, the entries are
acknowledged, the journal trims, and a second reconciler pass finds nothing.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from ingest.adapters.sql import read_model as queries
from ingest.services import operations
from ingest.services.drain import drain, reconcile

pytestmark = pytest.mark.timeout(120)
SET_USAGE = "/api/marketplace-public-api/set_usage/"


def post(client, demo, resource, amount, component="cpu_hours"):
    body = demo.body({"resource": resource, "usages": [{"type": component, "amount": amount}]})
    resp = client.simulate_post(SET_USAGE, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json


def states(engine):
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT id, state FROM usage_reports")).all())


def post_batch(client, demo, n=50, poison_at=None):
    """n reports over two resources and two components (each key every 4th report); the
    one at ``poison_at`` carries the amount the database refuses (place it among the last
    four, or a newer report of the batch supersedes it before it reaches the database)."""
    receipts = []
    for i in range(n):
        resource = (demo.resource, demo.resource2)[i % 2]
        component = ("cpu_hours", "ram_gb")[(i // 2) % 2]
        amount = "13.13" if i == poison_at else f"{i + 1}"
        receipts.append(post(client, demo, resource, amount, component))
    return receipts


def journal_left(runtime):
    """Entries still in the journal (a trim keeps the group's last delivered entry)."""
    return runtime.queue.client.xlen(runtime.queue.stream)


def assert_settled(runtime, receipts, culprits, reason):
    found = states(runtime.engine)
    for r in receipts:
        want = ("quarantined",) if r["id"] in culprits else ("committed", "superseded")
        assert found.get(r["id"]) in want, (r, found.get(r["id"]))
    quarantined = {q["id"]: q for q in queries.quarantined(runtime.engine)}
    for culprit in culprits:
        assert quarantined[culprit]["reason_code"] == reason, quarantined[culprit]
        assert quarantined[culprit]["reason"]
        assert quarantined[culprit]["envelope"]  # replay has what it needs
    q = runtime.queue
    assert q.pending_count() == 0 and q.backlog() == 0  # every entry acknowledged


def lose_the_last_second(runtime) -> None:
    """Stand for a Redis that lost what it had handed out, with a clock far behind (the
    clock sequence and the journal floor normally make reuse impossible; this isolation is
    the defence behind them): the next reports are handed sequences 1, 2, ... again."""
    q = runtime.queue
    q.floor_hint = 0
    q.client.xtrim(q.stream, maxlen=0)  # no journal entry left to floor on
    q.client.set(q.seq_key, 0)


def test_reused_sequences_are_quarantined_and_the_rest_commits(client, runtime, demo):
    runtime.queue.clock_origin_ms = 10**14  # the clock far behind: sequences are last + 1
    first = [post(client, demo, demo.resource, str(100 + i), "cpu_hours") for i in range(3)]
    drain(runtime.queue, runtime.committer, "w", 50, 0.01, 10)
    before = states(runtime.engine)
    assert all(before[r["id"]] in ("committed", "superseded") for r in first)
    # Redis loses the last second of its AOF: its sequence goes back, and the next reports
    # are handed sequences 1..3 again
    lose_the_last_second(runtime)
    receipts = post_batch(client, demo)
    reused = {r["id"] for r in receipts if r["sequence"] <= 3}
    assert len(reused) == 3
    stats = drain(runtime.queue, runtime.committer, "w", 50, 0.01, 10)
    assert stats.quarantined == 3 and stats.committed + stats.superseded == 47
    assert_settled(runtime, receipts, reused, "sequence_reused")
    for r in first:  # the first owners of the sequences are untouched
        assert queries.report(runtime.engine, r["id"])["state"] == before[r["id"]]
    culprit = sorted(reused)[0]
    assert "sequence" in queries.report(runtime.engine, culprit)["reason"]

    # the quarantine commands still work on such a record; replay cannot commit it (its
    # sequence still belongs to another report) and says so, without raising
    rows = queries.quarantined(runtime.engine, ids=[culprit])
    outcome = operations.replay_quarantined(runtime, rows)
    assert outcome.quarantined == [culprit] and outcome.reasons == ["sequence_reused"]

    summary = reconcile(runtime.queue, runtime.committer, "r", 0.0, 50, 0, runtime.committed_sequence(), True)
    assert summary["reclaimed"] == 0 and journal_left(runtime) <= 1  # the journal trims


def refuse_amount(engine, amount="13.13"):
    """A database-side refusal of one value: a constraint trigger on the usage table. On
    PostgreSQL it is DEFERRABLE INITIALLY DEFERRED: the transaction fails at COMMIT."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    "CREATE FUNCTION refuse_amount() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'amount % refused', NEW.amount USING ERRCODE = '23514'; END $$"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE CONSTRAINT TRIGGER refuse_amount AFTER INSERT OR UPDATE ON component_usages "
                    f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.amount = {amount}) "
                    "EXECUTE FUNCTION refuse_amount()"
                )
            )
        else:
            for event in ("INSERT", "UPDATE"):
                conn.execute(
                    sa.text(
                        f"CREATE TRIGGER refuse_amount_{event.lower()} BEFORE {event} ON component_usages "
                        f"WHEN NEW.amount = '{amount}' BEGIN SELECT RAISE(ABORT, 'amount refused'); END"
                    )
                )


def test_a_value_the_database_refuses_is_quarantined_and_the_rest_commits(client, runtime, demo):
    refuse_amount(runtime.engine)
    receipts = post_batch(client, demo, poison_at=46)
    stats = drain(runtime.queue, runtime.committer, "w", 50, 0.01, 10)
    assert stats.quarantined == 1 and stats.committed + stats.superseded == 49
    assert_settled(runtime, receipts, {receipts[46]["id"]}, "commit_failed")
    assert "refused" in queries.report(runtime.engine, receipts[46]["id"])["reason"]
    summary = reconcile(runtime.queue, runtime.committer, "r", 0.0, 50, 0, 0, True)
    assert summary["reclaimed"] == 0 and journal_left(runtime) <= 1


def test_the_reconciler_re_drives_a_wedged_batch_and_finishes_its_pass(client, runtime, demo):
    """The measured wedge: a worker claimed the batch and failed on it; the reconciler takes
    it over, quarantines the culprits, acknowledges everything and trims."""
    runtime.queue.clock_origin_ms = 10**14  # the clock far behind: sequences are last + 1
    post(client, demo, demo.resource, "1", "cpu_hours")
    drain(runtime.queue, runtime.committer, "w", 50, 0.01, 10)
    lose_the_last_second(runtime)  # the next report reuses sequence 1
    refuse_amount(runtime.engine)
    receipts = post_batch(client, demo, poison_at=47)
    claimed = runtime.queue.claim("dead-worker", 50, 0)  # claimed, never acknowledged
    assert len(claimed) == 50
    summary = reconcile(runtime.queue, runtime.committer, "r", 0.0, 50, 0, 0, True)
    assert summary["reclaimed"] == 50 and summary["quarantined"] == 2
    assert summary["committed"] + summary["superseded"] == 48
    found = {q["id"]: q["reason_code"] for q in queries.quarantined(runtime.engine)}
    assert found == {receipts[0]["id"]: "sequence_reused", receipts[47]["id"]: "commit_failed"}
    assert runtime.queue.pending_count() == 0 and journal_left(runtime) <= 1
    again = reconcile(runtime.queue, runtime.committer, "r", 0.0, 50, 0, 0, True)
    assert again["reclaimed"] == 0 and again["quarantined"] == 0


def test_quarantine_record_keeps_replay_working_after_the_refusal_is_lifted(client, runtime, demo):
    refuse_amount(runtime.engine)
    receipts = post_batch(client, demo, n=4, poison_at=1)
    drain(runtime.queue, runtime.committer, "w", 50, 0.01, 10)
    culprit = receipts[1]["id"]
    assert states(runtime.engine)[culprit] == "quarantined"
    with runtime.engine.begin() as conn:
        if runtime.engine.dialect.name == "postgresql":
            conn.execute(sa.text("DROP TRIGGER refuse_amount ON component_usages"))
        else:
            conn.execute(sa.text("DROP TRIGGER refuse_amount_insert"))
            conn.execute(sa.text("DROP TRIGGER refuse_amount_update"))
    outcome = operations.replay_quarantined(runtime, queries.quarantined(runtime.engine, ids=[culprit]))
    assert outcome.committed == [culprit]
    values = queries.usage_rows(runtime.engine, uuid.UUID(demo.resource2))
    assert ("cpu_hours", "13.13") in [(v["component"], v["amount"]) for v in values]
