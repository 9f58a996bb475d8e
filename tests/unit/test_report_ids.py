"""Report ids: unique within a process, and never shared by a forked child and its parent."""

from __future__ import annotations

import os

from ingest.domain.ids import new_report_id


def test_ids_are_distinct_and_well_formed():
    ids = [new_report_id(1.7e9) for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_a_forked_child_does_not_repeat_the_parents_next_ids():
    new_report_id(1.7e9)  # the parent holds buffered randomness before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        os.write(write, ",".join(new_report_id(1.7e9) for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_report_id(1.7e9) for _ in range(50)}
    assert len(child) == 50 and not child & parent
