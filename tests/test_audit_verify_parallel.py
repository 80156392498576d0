"""`audit verify` in worker processes (SQLite) says exactly what the walk in one process says.

A long SQLite chain is proved by one process per core, each over its own range of links;
these tests force that path on a short chain (three workers, no minimum length) and check
each verdict against `workers=1` on the same database: an intact chain, an altered body,
a removed link, forged and missing checkpoints, and breaks on either side of a boundary
between two workers' ranges. On PostgreSQL the walk stays in one process, and must still
give the same answers.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from datetime import datetime

import pytest
import sqlalchemy as sa
from test_audit import (
    CHAIN,
    CHECKPOINT,
    EVENT,
    KEY,
    bodies,
    execute,
    links,
    record_rows,
    runtime_checkpointing_every,
    seal,
    unguard,
)

from referral_engine.audit import log as audit
from referral_engine.runtime import Runtime

EVERY = 5
ROWS = 40
# What `_split` gives three workers over 40 links; the boundaries are 13|14 and 26|27.
RANGES = [(1, 13), (14, 26), (27, 40)]


@pytest.fixture
def rt(db_url, clock, tmp_path):
    """A Runtime with a checkpoint every 5 links and a sealed chain of 40."""
    runtime = runtime_checkpointing_every(EVERY, db_url, clock, tmp_path)
    record_rows(runtime, ROWS)
    seal(runtime)
    yield runtime
    runtime.stop()


@pytest.fixture
def workers_started(monkeypatch) -> list[list[dict]]:
    """The jobs handed to worker processes, one list per parallel verification."""
    started: list[list[dict]] = []
    run = audit._run_workers

    def spy(jobs, progress):
        started.append(jobs)
        return run(jobs, progress)

    monkeypatch.setattr(audit, "_run_workers", spy)
    return started


def in_parallel(rt: Runtime, **kw) -> audit.Verification:
    return audit.verify(rt.db.engine, KEY, EVERY, workers=3, parallel_min_rows=1, **kw)


def in_one_process(rt: Runtime) -> audit.Verification:
    return audit.verify(rt.db.engine, KEY, EVERY, workers=1)


def verdict(v: audit.Verification) -> dict:
    return v.as_dict()


def same_verdict(rt: Runtime, workers_started: list) -> audit.Verification:
    """Verify both ways; they must agree, and on SQLite the parallel path must have run."""
    before = len(workers_started)
    parallel = in_parallel(rt)
    ran = workers_started[before:]
    if rt.db.is_postgres:
        assert ran == [], "PostgreSQL verifies in one process"
    else:
        assert len(ran) == 1 and any(ran[0]), "the parallel path did not run"
    single = in_one_process(rt)
    assert verdict(parallel) == verdict(single)
    return parallel


def link_at(rt: Runtime, seq: int):
    return next(link for link in links(rt) if link.seq == seq)


def alter_bodies(rt: Runtime, *seqs: int) -> list[int]:
    """Change the summary in the bodies of these links; their audit row ids."""
    unguard(rt, "audit_event")
    ids = []
    for seq in seqs:
        link = link_at(rt, seq)
        body = bodies(rt)[link.audit_id]
        forged = body.replace(b'"n":', b'"n":1')
        assert forged != body
        execute(rt, EVENT.update().where(EVENT.c.id == link.audit_id).values(body=forged))
        ids.append(link.audit_id)
    return ids


# --- an intact chain -------------------------------------------------------------------


def test_split_covers_every_position_once():
    assert audit._split(ROWS, 3) == RANGES
    assert audit._split(2, 8) == [(1, 1), (2, 2)]
    for rows, workers in ((1, 1), (7, 2), (1_000_003, 8)):
        ranges = audit._split(rows, workers)
        assert ranges[0][0] == 1 and ranges[-1][1] == rows
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))


def test_intact_chain_verifies_in_parallel(rt, workers_started):
    seen: list[int] = []
    v = in_parallel(rt, progress=seen.append)
    assert (v.ok, v.rows, v.checkpoints, v.pending) == (True, ROWS, ROWS // EVERY, 0), v.reason
    assert seen and seen[-1] == ROWS
    assert seen == sorted(seen)
    same_verdict(rt, workers_started)
    if not rt.db.is_postgres:
        # Each worker starts where the range before it ends, counting to the checkpoint
        # due after the last one before its start.
        jobs = workers_started[0]
        assert [(j["first"], j["last"]) for j in jobs] == RANGES
        assert [j["due"] for j in jobs] == [5, 15, 30]
        assert jobs[0]["head"] == bytes(32).hex()
        assert jobs[1]["head"] == bytes(link_at(rt, 13).hash).hex()


def test_short_chains_and_postgres_walk_in_one_process(rt, workers_started):
    v = audit.verify(rt.db.engine, KEY, EVERY, workers=3, parallel_min_rows=ROWS + 1)
    assert (v.ok, v.rows) == (True, ROWS)
    assert workers_started == []
    assert in_one_process(rt).ok and workers_started == []


def test_workers_that_cannot_run_leave_the_proof_to_this_process(rt, monkeypatch):
    """A worker that fails (here: it cannot open the file) proves nothing; the walk in this
    process still gives the right answer, intact or not."""
    monkeypatch.setattr(audit, "_sqlite_file", lambda conn: "/nonexistent/audit.db")
    assert (in_parallel(rt).ok, in_parallel(rt).rows) == (True, ROWS)
    [audit_id] = alter_bodies(rt, 20)
    v = in_parallel(rt)
    assert (v.ok, v.first_broken_seq, v.first_broken_audit_id) == (False, 20, audit_id)


# --- tampering is named as the walk in one process names it ----------------------------


@pytest.mark.parametrize("seq", [1, 7, 13, 14, 20, 26, 27, 40])
def test_altered_body_is_named_in_any_range_and_at_each_boundary(rt, workers_started, seq):
    [audit_id] = alter_bodies(rt, seq)
    v = same_verdict(rt, workers_started)
    assert (v.ok, v.first_broken_seq, v.first_broken_audit_id) == (False, seq, audit_id)
    assert v.reason == f"audit row {audit_id} was altered"


def test_two_broken_ranges_name_the_earlier_row(rt, workers_started):
    _, earlier = alter_bodies(rt, 33, 18)
    v = same_verdict(rt, workers_started)
    assert (v.first_broken_seq, v.first_broken_audit_id) == (18, earlier)


@pytest.mark.parametrize("seq", [13, 14, 20])
def test_removed_link_is_named(rt, workers_started, seq):
    unguard(rt, "audit_chain")
    execute(rt, CHAIN.delete().where(CHAIN.c.seq == seq))
    v = same_verdict(rt, workers_started)
    assert (v.ok, v.first_broken_seq) == (False, seq)
    assert v.reason == f"chain link {seq} is missing"


def test_removed_audit_row_is_named(rt, workers_started):
    link = link_at(rt, 14)
    unguard(rt, "audit_event")
    execute(rt, EVENT.delete().where(EVENT.c.id == link.audit_id))
    v = same_verdict(rt, workers_started)
    assert (v.ok, v.first_broken_seq, v.first_broken_audit_id) == (False, 14, link.audit_id)


def test_a_range_rewritten_from_its_boundary_does_not_join_the_one_before(rt, workers_started):
    """Rewrite every link from 14 on from a made-up previous hash: the second range is
    consistent in itself, but does not start where the first one ended."""
    unguard(rt, "audit_event", "audit_chain")
    head = b"\x01" * 32
    stored, chain = bodies(rt), links(rt)
    with rt.db.engine.begin() as conn:
        for link in chain[13:]:
            new = hashlib.sha256(head + stored[link.audit_id]).digest()
            conn.execute(
                CHAIN.update().where(CHAIN.c.seq == link.seq).values(prev_hash=head, hash=new)
            )
            head = new
    v = same_verdict(rt, workers_started)
    assert (v.ok, v.first_broken_seq) == (False, 14)
    assert v.reason == "the link does not follow the previous one"


def forge_checkpoints(rt: Runtime, seqs: list[int], key: bytes) -> None:
    unguard(rt, "audit_checkpoint")
    chain = links(rt)
    with rt.db.engine.begin() as conn:
        conn.execute(CHECKPOINT.delete().where(CHECKPOINT.c.seq.in_(seqs)))
        for seq in seqs:
            head = bytes(chain[seq - 1].hash)
            following = (seq // EVERY + 1) * EVERY
            mac = hmac.new(key, f"{seq}:{following}:".encode() + head, hashlib.sha256).digest()
            conn.execute(CHECKPOINT.insert().values(
                seq=seq, next_seq=following, hash=head, mac=mac,
                at=datetime.now().astimezone(),
            ))  # fmt: skip


@pytest.mark.parametrize("seq", [10, 15, 25, 40])
def test_forged_checkpoint_is_named(rt, workers_started, seq):
    forge_checkpoints(rt, [seq], b"not-the-audit-key-0123456789abcdef0123456789abcd")
    v = same_verdict(rt, workers_started)
    assert (v.ok, v.first_broken_seq) == (False, seq)
    assert v.reason == f"checkpoint at {seq} is not genuine"


@pytest.mark.parametrize("seq", [5, 15, 30, 35])
def test_missing_due_checkpoint_is_named(rt, workers_started, seq):
    """15 and 30 are where the second and third ranges start their count to the next due
    checkpoint; a gap there must be found by the range that reaches it."""
    unguard(rt, "audit_checkpoint")
    execute(rt, CHECKPOINT.delete().where(CHECKPOINT.c.seq == seq))
    v = same_verdict(rt, workers_started)
    assert (v.ok, v.first_broken_seq) == (False, seq)
    assert v.reason.startswith(f"checkpoint {seq} is missing")


def test_checkpoint_disagreeing_with_the_chain_is_named(rt, workers_started):
    unguard(rt, "audit_checkpoint")
    execute(rt, CHECKPOINT.update().where(CHECKPOINT.c.seq == 25).values(hash=b"\x02" * 32))
    v = same_verdict(rt, workers_started)
    # The MAC covers the hash, so the edited checkpoint is first of all not genuine.
    assert (v.ok, v.first_broken_seq) == (False, 25)
    assert "checkpoint at 25" in v.reason


def test_truncated_tail_and_rows_outside_the_log_are_caught(rt, workers_started):
    unguard(rt, "audit_event", "audit_chain")
    last = link_at(rt, ROWS)
    execute(rt, CHAIN.delete().where(CHAIN.c.seq == ROWS))
    execute(rt, EVENT.delete().where(EVENT.c.id == last.audit_id))
    v = same_verdict(rt, workers_started)
    assert (v.ok, v.first_broken_seq) == (False, ROWS)
    assert v.reason == f"checkpoint {ROWS} is past the chain's end"


def test_a_row_added_outside_the_log_is_caught(rt, workers_started):
    unguard(rt, "audit_event")
    row = sa.select(EVENT).order_by(EVENT.c.id.desc()).limit(1)
    with rt.db.engine.begin() as conn:
        newest = conn.execute(row).one()._asdict()
        newest["id"] += 1000
        conn.execute(EVENT.insert().values(**newest))
    v = same_verdict(rt, workers_started)
    assert (v.ok, v.rows, v.first_broken_seq) == (False, ROWS, None)
    assert "added or removed outside the log" in v.reason
