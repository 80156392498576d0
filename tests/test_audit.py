"""The audit log (DESIGN.md, "Audit log"), on SQLite and PostgreSQL.

The database itself refuses UPDATE, DELETE (and TRUNCATE) of audit rows; tampering by
someone who can get past that (drops the triggers) is caught by `verify`, which names the
row; reads and refused attempts are audited; each row's bytes are canonical JSON that hash
to the stored link; PostgreSQL rows wait for the sequencer; keyed checkpoints every N links.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import re
import shutil
import threading
import time
import warnings
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from conftest import AUDIT_KEY, PASSWORD, make_settings

from referral_engine.access.rules import Actor
from referral_engine.audit.log import verify
from referral_engine.errors import DomainError
from referral_engine.runtime import Runtime
from referral_engine.settings import PROJECT_ROOT
from referral_engine.storage.models import (
    AuditChain,
    AuditCheckpoint,
    AuditEvent,
    AuditPending,
)

# The lawful basis and recipient each information request and answer records.
ASKED = {"lawful_basis": "safeguarding", "recipient": "Partner agency leads"}
ANSWERED = {"lawful_basis": "safeguarding", "recipient": "MASH duty desk"}

EVENT = AuditEvent.__table__
CHAIN = AuditChain.__table__
CHECKPOINT = AuditCheckpoint.__table__
PENDING = AuditPending.__table__
AUDIT_TABLES = ("audit_event", "audit_chain", "audit_checkpoint")
TABLES = {"audit_event": EVENT, "audit_chain": CHAIN, "audit_checkpoint": CHECKPOINT}
PRIMARY_KEY = {"audit_event": "id", "audit_chain": "seq", "audit_checkpoint": "seq"}
KEY = AUDIT_KEY.encode()
GENESIS = bytes(32)

# --- helpers ---------------------------------------------------------------------------


def fetch(rt: Runtime, statement) -> list[Any]:
    with rt.db.engine.connect() as conn:
        return conn.execute(statement).all()


def execute(rt: Runtime, statement, params: dict | list | None = None) -> None:
    with rt.db.engine.begin() as conn:
        conn.execute(statement, params) if params is not None else conn.execute(statement)


def count(rt: Runtime, table: sa.Table) -> int:
    return fetch(rt, sa.select(sa.func.count()).select_from(table))[0][0]


def links(rt: Runtime) -> list[Any]:
    return fetch(rt, sa.select(CHAIN).order_by(CHAIN.c.seq))


def bodies(rt: Runtime) -> dict[int, bytes]:
    return {r.id: bytes(r.body) for r in fetch(rt, sa.select(EVENT.c.id, EVENT.c.body))}


def seq_of(rt: Runtime, audit_id: int) -> int:
    return fetch(rt, sa.select(CHAIN.c.seq).where(CHAIN.c.audit_id == audit_id))[0][0]


def row_id(rt: Runtime, action: str, **where: Any) -> int:
    query = sa.select(EVENT.c.id).where(EVENT.c.action == action).order_by(EVENT.c.id)
    for column, value in where.items():
        query = query.where(EVENT.c[column] == value)
    found = fetch(rt, query)
    assert found, f"no audit row with action {action!r} {where}"
    return found[0][0]


def unguard(rt: Runtime, *tables: str) -> None:
    """What a tamperer with database access does first: drop the append-only triggers."""
    with rt.db.engine.begin() as conn:
        for table in tables:
            if rt.db.is_postgres:
                conn.exec_driver_sql(f"DROP TRIGGER {table}_append_only ON {table}")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER {table}_no_update")
                conn.exec_driver_sql(f"DROP TRIGGER {table}_no_delete")


def reguard(rt: Runtime) -> None:
    """Put back the triggers `unguard` dropped, as a careful tamperer would: then only
    the chain and the kept heads can tell (the ordinary verify names missing triggers)."""
    with rt.db.engine.begin() as conn:
        for table in AUDIT_TABLES:
            if rt.db.is_postgres:
                conn.exec_driver_sql(
                    f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE "
                    f"ON {table} FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
                )
                continue
            for verb in ("update", "delete"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb.upper()} "
                    f"ON {table} BEGIN SELECT RAISE(ABORT, 'audit table {table} is "
                    f"append-only: {verb.upper()} refused'); END"
                )


def seal(rt: Runtime) -> None:
    rt.audit.seal(rt.db.engine)


def subject(given: str, family: str, dob: str = "2012-05-01") -> dict[str, str]:
    return {"given_name": given, "family_name": family, "date_of_birth": dob}


def busy_day(runtime: Runtime, refer, fire, staff) -> dict[str, int]:
    """Referrals, a whole MASH path, reads, a refusal and a deadline tick."""
    a = refer(subject=subject("Amy", "Stone"))
    b = refer("constable", subject=subject("Ben", "Hart", "2010-02-03"))
    ca, cb = a["case_id"], b["case_id"]
    fire(ca, "officer", "screen", {"rag": "amber", "rationale": "Needs checks"})
    fire(
        ca,
        "officer",
        "request_checks",
        {
            "agencies": ["police", "health"],
            "lawful_basis": "safeguarding",
            "recipient": "Partner agency leads",
        },
    )
    fire(ca, "officer", "record_check",
         {"agency": "police", "summary": "Known to police", "risk_found": True,
          **ANSWERED})  # fmt: skip
    fire(ca, "officer", "complete_checks")
    fire(ca, "manager", "decide", {
        "outcome": "early_help", "onward": [], "rationale": "Support will help",
        "feedback_to_referrer": "Early help has been offered."})  # fmt: skip
    fire(cb, "officer", "screen", {"rag": "red", "rationale": "Danger tonight"})
    officer = staff["officer"].actor
    runtime.cases.view(officer, ca)
    runtime.cases.history(officer, ca)
    runtime.cases.queue(officer)
    person = runtime.cases.view(officer, cb)["person_id"]
    runtime.cases.person(officer, person)
    with pytest.raises(DomainError):
        fire(cb, "officer", "decide", {"outcome": "early_help", "onward": [],
             "rationale": "x", "feedback_to_referrer": "y"})  # fmt: skip
    runtime.clock.advance(timedelta(days=10))
    assert runtime.scheduler.tick().breached, "the red case's deadline should have passed"
    seal(runtime)
    return {"a": ca, "b": cb, "person_b": person}


def rewrite_from(rt: Runtime, start: int) -> list[Any]:
    """A wholesale rewrite without the key: change every body from link `start` on and
    recompute every hash from there consistently. Returns the new links."""
    unguard(rt, "audit_event", "audit_chain")
    old = links(rt)
    stored = bodies(rt)
    head = bytes(old[start - 2].hash) if start > 1 else GENESIS
    with rt.db.engine.begin() as conn:
        for link in old[start - 1 :]:
            doc = json.loads(stored[link.audit_id])
            doc["summary"] = {"rewritten": True, **doc["summary"]}
            body = json.dumps(doc, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()  # fmt: skip
            new = hashlib.sha256(head + body).digest()
            conn.execute(EVENT.update().where(EVENT.c.id == link.audit_id).values(body=body))
            conn.execute(
                CHAIN.update().where(CHAIN.c.seq == link.seq).values(prev_hash=head, hash=new)
            )
            head = new
    new_links = links(rt)
    # The rewrite itself is consistent: without checkpoints, every link checks out.
    head, stored = GENESIS, bodies(rt)
    for link in new_links:
        assert bytes(link.prev_hash) == head
        head = hashlib.sha256(head + stored[link.audit_id]).digest()
        assert bytes(link.hash) == head
    return new_links


def writer_actor(rt: Runtime, name: str = "Tester") -> Actor:
    return rt.access.actor(user_id=None, username="tester", display_name=name, roles=[],
                           source="test")  # fmt: skip


def record_rows(rt: Runtime, n: int, *, start: int = 0) -> list[int]:
    ids = []
    for i in range(start, start + n):
        with rt.db.transaction() as s:
            ids.append(rt.audit.record(s, writer_actor(rt), "test:row:write", summary={"n": i}))
    return ids


def runtime_checkpointing_every(every: int, db_url, clock, tmp_path) -> Runtime:
    """A started Runtime whose policy says rules.audit.checkpoint_every = `every`."""
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    rules = policies / "rules.yaml"
    text = rules.read_text(encoding="utf-8")
    changed = re.sub(r"(checkpoint_every:\s*)\d+", rf"\g<1>{every}", text)
    assert changed != text
    rules.write_text(changed, encoding="utf-8")
    rt = Runtime.build(make_settings(db_url, policies_dir=policies), clock)
    assert rt.audit.checkpoint_every == every
    rt.start()
    return rt


@pytest.fixture
def small_runtime(db_url, clock, tmp_path):
    rt = runtime_checkpointing_every(3, db_url, clock, tmp_path)
    yield rt
    rt.stop()


# --- the database refuses changes ------------------------------------------------------


EDITS = {
    "audit_event": "UPDATE audit_event SET action = 'api:case:nothing' WHERE id = :k",
    "audit_chain": "UPDATE audit_chain SET hash = :junk WHERE seq = :k",
    "audit_checkpoint": "UPDATE audit_checkpoint SET mac = :junk WHERE seq = :k",
}


@pytest.mark.parametrize("table", AUDIT_TABLES)
def test_database_refuses_changes_to_audit_rows(runtime, refer, table):
    """UPDATE and DELETE of one row, and wiping the table: TRUNCATE on PostgreSQL, an
    unqualified DELETE on SQLite (its truncate optimisation must not bypass the trigger)."""
    refer()
    assert runtime.verify_audit().ok  # also seals: a checkpoint row exists
    t, pk = TABLES[table], PRIMARY_KEY[table]
    before = fetch(runtime, sa.select(t).order_by(t.c[pk]))
    assert before, f"{table} should have rows to attack"
    key = before[0]._mapping[pk]
    wipe = sa.text(f"TRUNCATE {table}") if runtime.db.is_postgres else t.delete()
    for attack in (sa.text(EDITS[table]), t.delete().where(t.c[pk] == key), wipe):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            execute(runtime, attack, {"k": key, "junk": b"\x00" * 32})
        assert fetch(runtime, sa.select(t).order_by(t.c[pk])) == before, str(attack)
    assert runtime.verify_audit().ok


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)  # fmt: skip
def test_postgres_refuses_truncating_all_audit_tables_at_once(runtime, refer):
    refer()
    assert runtime.verify_audit().ok
    counts = [count(runtime, t) for t in (EVENT, CHAIN, CHECKPOINT)]
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        execute(runtime, sa.text("TRUNCATE audit_event, audit_chain, audit_checkpoint CASCADE"))
    assert [count(runtime, t) for t in (EVENT, CHAIN, CHECKPOINT)] == counts


# --- tampering is caught and named -----------------------------------------------------


def test_edited_body_is_caught_and_named(runtime, refer, fire, staff):
    busy_day(runtime, refer, fire, staff)
    assert runtime.verify_audit().ok
    chain = links(runtime)
    unguard(runtime, "audit_event")
    for link in (chain[0], chain[len(chain) // 2], chain[-1]):
        body = bodies(runtime)[link.audit_id]
        assert b'"outcome":"allowed"' in body
        forged = body.replace(b'"outcome":"allowed"', b'"outcome":"refused"')
        execute(runtime, EVENT.update().where(EVENT.c.id == link.audit_id).values(body=forged))

        v = verify(runtime.db.engine, KEY, runtime.audit.checkpoint_every)
        assert not v.ok
        assert (v.first_broken_seq, v.first_broken_audit_id) == (link.seq, link.audit_id)
        assert str(link.audit_id) in v.reason
        # `verify_audit` (seal, then verify) says the same.
        again = runtime.verify_audit()
        assert (again.ok, again.first_broken_audit_id) == (False, link.audit_id)
        # put it back: the chain verifies again, so it was this edit that was caught
        execute(runtime, EVENT.update().where(EVENT.c.id == link.audit_id).values(body=body))
        reguard(runtime)
        assert verify(runtime.db.engine, KEY, runtime.audit.checkpoint_every).ok
        unguard(runtime, "audit_event")


def test_a_single_flipped_byte_is_caught(runtime, refer, fire, staff):
    busy_day(runtime, refer, fire, staff)
    link = links(runtime)[3]
    body = bytearray(bodies(runtime)[link.audit_id])
    body[len(body) // 2] ^= 0x01
    unguard(runtime, "audit_event")
    execute(runtime, EVENT.update().where(EVENT.c.id == link.audit_id).values(body=bytes(body)))
    v = runtime.verify_audit()
    assert (v.ok, v.first_broken_seq, v.first_broken_audit_id) == (False, 4, link.audit_id)


def test_verify_endpoint_reports_a_broken_chain(runtime, users):
    r = users["teacher"].post("/api/referrals", json={
        "subject": subject("Cara", "Dunn"), "concerns": ["neglect"], "summary": "Hungry",
        "consent": "given"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert users["auditor"].get("/api/audit/verify").status_code == 200
    target = row_id(runtime, "api:referral:create")
    unguard(runtime, "audit_event")
    execute(runtime, EVENT.update().where(EVENT.c.id == target).values(body=b'{"forged":true}'))
    r = users["auditor"].get("/api/audit/verify")
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["ok"] is False
    assert problem["first_broken_audit_id"] == target
    assert problem["first_broken_seq"] == seq_of(runtime, target)


COLUMN_EDITS = {
    "action": lambda row: {"action": "api:case:list"},
    "outcome": lambda row: {"outcome": "refused"},
    "case_id": lambda row: {"case_id": None},
    "person_id": lambda row: {"person_id": None},
    "actor_id": lambda row: {"actor_id": row.actor_id + 1},
    "at": lambda row: {"at": row.at - timedelta(days=1)},
}


def test_edited_searchable_column_is_caught_by_the_ordinary_verify(runtime, refer, fire, staff):
    cases = busy_day(runtime, refer, fire, staff)
    target = row_id(runtime, "api:case:view", case_id=cases["a"])
    row = fetch(runtime, sa.select(EVENT).where(EVENT.c.id == target))[0]
    assert row.actor_id == staff["officer"].user_id and row.person_id is not None
    assert runtime.verify_audit(deep=True).ok
    seq = seq_of(runtime, target)
    unguard(runtime, "audit_event")
    where = EVENT.c.id == target
    for column, edit in COLUMN_EDITS.items():
        execute(runtime, EVENT.update().where(where).values(**edit(row)))
        assert bytes(fetch(runtime, sa.select(EVENT.c.body).where(where))[0][0]) == bytes(
            row.body
        ), "only the searchable column changed"

        v = runtime.verify_audit()
        assert not v.ok, f"editing {column} was not caught"
        assert (v.first_broken_seq, v.first_broken_audit_id) == (seq, target), column
        assert column in v.reason

        execute(runtime, EVENT.update().where(where).values({column: getattr(row, column)}))
        reguard(runtime)
        assert runtime.verify_audit().ok, column
        unguard(runtime, "audit_event")


def test_deleted_audit_row_is_caught_and_named(runtime, refer, fire, staff):
    busy_day(runtime, refer, fire, staff)
    chain = links(runtime)
    link = chain[len(chain) // 2]
    unguard(runtime, "audit_event")
    execute(runtime, EVENT.delete().where(EVENT.c.id == link.audit_id))
    v = runtime.verify_audit()
    assert not v.ok
    assert (v.first_broken_seq, v.first_broken_audit_id) == (link.seq, link.audit_id)


def test_deleted_chain_link_is_caught_and_named(runtime, refer, fire, staff):
    busy_day(runtime, refer, fire, staff)
    chain = links(runtime)
    link = chain[len(chain) // 2]
    unguard(runtime, "audit_chain")
    execute(runtime, CHAIN.delete().where(CHAIN.c.seq == link.seq))
    v = runtime.verify_audit()
    assert not v.ok
    assert v.first_broken_seq == link.seq


def test_deleted_last_link_is_caught(runtime, refer, fire, staff):
    busy_day(runtime, refer, fire, staff)
    last = links(runtime)[-1]
    unguard(runtime, "audit_chain")
    execute(runtime, CHAIN.delete().where(CHAIN.c.seq == last.seq))
    v = runtime.verify_audit()
    assert not v.ok


def test_truncated_tail_is_caught_by_the_seal_checkpoint(runtime, refer, fire, staff):
    """Remove the last rows entirely (event and link): the seal's checkpoint still counts
    them."""
    busy_day(runtime, refer, fire, staff)
    chain = links(runtime)
    assert runtime.verify_audit().ok
    head = fetch(runtime, sa.select(sa.func.max(CHECKPOINT.c.seq)))[0][0]
    assert head == chain[-1].seq, "verify seals the head with a checkpoint"
    unguard(runtime, "audit_event", "audit_chain")
    for link in chain[-2:]:
        execute(runtime, CHAIN.delete().where(CHAIN.c.seq == link.seq))
        execute(runtime, EVENT.delete().where(EVENT.c.id == link.audit_id))
    v = runtime.verify_audit()
    assert not v.ok
    assert v.first_broken_seq == head


def test_wholesale_rewrite_is_caught_by_the_checkpoint(small_runtime):
    rt = small_runtime
    record_rows(rt, 14)
    seal(rt)
    assert rt.verify_audit().ok
    new = rewrite_from(rt, 5)
    v = verify(rt.db.engine, KEY, rt.audit.checkpoint_every)
    assert not v.ok
    # On SQLite every link is its own batch and carries the key's MAC: the first rewritten
    # link is caught. On PostgreSQL the first checkpoint at or after the rewrite (link 6)
    # catches it, if no batch ended at link 5.
    assert v.first_broken_seq in (5, 6)
    assert v.first_broken_audit_id == new[v.first_broken_seq - 1].audit_id
    assert "checkpoint" in v.reason or "MAC" in v.reason


def test_checkpoints_forged_with_another_key_are_caught(small_runtime):
    rt = small_runtime
    record_rows(rt, 14)
    seal(rt)
    new = rewrite_from(rt, 5)
    unguard(rt, "audit_checkpoint")
    forged_key = b"not-the-audit-key-0123456789abcdef0123456789abcd"
    with rt.db.engine.begin() as conn:
        seqs = [
            r[0] for r in conn.execute(sa.select(CHECKPOINT.c.seq).where(CHECKPOINT.c.seq >= 5))
        ]
        assert seqs == [6, 9, 12, 14]
        conn.execute(CHECKPOINT.delete().where(CHECKPOINT.c.seq >= 5))
        for seq in seqs:
            head = bytes(new[seq - 1].hash)
            following = (seq // 3 + 1) * 3
            message = f"{seq}:{following}:".encode() + head
            mac = hmac.new(forged_key, message, hashlib.sha256).digest()
            row = {"seq": seq, "next_seq": following, "hash": head, "mac": mac,
                   "at": datetime.now().astimezone()}  # fmt: skip
            conn.execute(CHECKPOINT.insert().values(**row))
    v = verify(rt.db.engine, KEY, rt.audit.checkpoint_every)
    assert not v.ok
    assert v.first_broken_seq in (5, 6)  # the link MAC at 5 (SQLite) or checkpoint 6
    assert "checkpoint" in v.reason or "MAC" in v.reason


def test_rewrite_that_removes_the_checkpoints_is_caught(small_runtime):
    """Deleting the checkpoints that would expose a rewrite must not make it verify: the
    policy says a checkpoint exists every N links, so a missing one is a broken chain."""
    rt = small_runtime
    record_rows(rt, 14)
    seal(rt)
    rewrite_from(rt, 5)
    unguard(rt, "audit_checkpoint")
    execute(rt, CHECKPOINT.delete().where(CHECKPOINT.c.seq >= 5))
    v = rt.verify_audit()
    assert not v.ok, "a rewrite that deleted the periodic checkpoints 6, 9 and 12 verified"
    assert v.first_broken_seq in (5, 6)


def test_a_stray_pending_marker_is_dropped_not_crashed_on(settings, clock):
    """audit_pending has no guard (the sequencer deletes from it): a marker for a row that
    is already linked, or for no row at all, is dropped by the sequencer; it must not
    crash verification, and the log itself is intact. (A Runtime without the background
    sequencer, so the test controls when sealing happens.)"""
    rt = Runtime.build(settings, clock)
    record_rows(rt, 3)
    seal(rt)
    linked = links(rt)[0].audit_id
    execute(rt, PENDING.insert().values(audit_id=linked))
    try:
        v = rt.verify_audit()
    except sa.exc.SQLAlchemyError as exc:
        pytest.fail(f"verify_audit raised instead of reporting: {type(exc).__name__}")
    assert (v.ok, v.rows, v.pending) == (True, 3, 0)


def test_verify_closes_its_cursor_when_it_stops_at_a_broken_row(runtime, refer, fire, staff):
    busy_day(runtime, refer, fire, staff)
    link = links(runtime)[2]
    unguard(runtime, "audit_event")
    execute(runtime, EVENT.update().where(EVENT.c.id == link.audit_id).values(body=b"{}"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = verify(runtime.db.engine, KEY, runtime.audit.checkpoint_every)
        gc.collect()
    assert (v.ok, v.first_broken_audit_id) == (False, link.audit_id)
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == [], "verify() left a database cursor open"


# --- an intact chain -------------------------------------------------------------------


def test_intact_chain_after_many_operations_verifies(runtime, refer, fire, staff):
    busy_day(runtime, refer, fire, staff)
    for i in range(5):
        refer(subject=subject("Kid", f"Number{i}", "2011-01-0" + str(i + 1)))
    v = runtime.verify_audit(deep=True)
    assert v.ok, v.reason
    total = count(runtime, EVENT)
    assert total > 20
    assert (v.rows, v.pending) == (total, 0)
    assert v.checkpoints >= 1
    chain = links(runtime)
    assert [link.seq for link in chain] == list(range(1, total + 1))
    assert sorted(link.audit_id for link in chain) == sorted(bodies(runtime))
    assert count(runtime, PENDING) == 0


def test_rows_are_canonical_json_hashed_into_the_chain(runtime, refer, fire, staff):
    busy_day(runtime, refer, fire, staff)
    with runtime.db.transaction() as s:  # a name that canonical JSON keeps as UTF-8
        user = runtime.accounts.add_user(
            s, username="sian", password=PASSWORD, roles=["mash_officer"],
            agency="Cyngor Sir", agency_kind="local_authority", display_name="Siân Ó'Brien",
        )  # fmt: skip
        sian = runtime.accounts.actor_for_user(s, user.id, source="api", request_id="r-1")
    runtime.cases.queue(sian)
    seal(runtime)

    rows = {r.id: r for r in fetch(runtime, sa.select(EVENT))}
    head = GENESIS
    chain = links(runtime)
    assert len(chain) == len(rows)
    for link in chain:
        row = rows[link.audit_id]
        body = bytes(row.body)
        doc = json.loads(body.decode("utf-8"))
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert canonical.encode("utf-8") == body, f"audit row {row.id} is not canonical JSON"
        assert bytes(link.prev_hash) == head
        head = hashlib.sha256(head + body).digest()
        assert bytes(link.hash) == head, f"link {link.seq} does not hash its row"
        # the searchable columns say what the hashed record says
        assert doc["action"] == row.action and doc["outcome"] == row.outcome
        assert doc["case_id"] == row.case_id and doc["person_id"] == row.person_id
        assert doc["actor"]["id"] == row.actor_id
        assert datetime.fromisoformat(doc["at"]) == row.at
        assert set(doc) >= {"actor", "request_id", "action", "target", "outcome", "summary"}
    sian_row = next(r for r in rows.values() if b"Si\xc3\xa2n" in bytes(r.body))
    assert json.loads(bytes(sian_row.body))["actor"]["name"] == "Siân Ó'Brien"
    assert json.loads(bytes(sian_row.body))["request_id"] == "r-1"

    checkpoints = fetch(runtime, sa.select(CHECKPOINT))
    assert checkpoints
    for cp in checkpoints:
        assert bytes(cp.hash) == bytes(chain[cp.seq - 1].hash)
        message = f"{cp.seq}:{cp.next_seq}:".encode() + bytes(cp.hash)
        expected = hmac.new(KEY, message, hashlib.sha256)
        assert hmac.compare_digest(bytes(cp.mac), expected.digest())


def test_checkpoints_every_n_links_and_at_each_seal(small_runtime):
    rt = small_runtime
    record_rows(rt, 10)
    seal(rt)
    seqs = sorted(r[0] for r in fetch(rt, sa.select(CHECKPOINT.c.seq)))
    assert seqs == [3, 6, 9, 10]
    record_rows(rt, 2, start=10)
    v = rt.verify_audit()
    assert (v.ok, v.rows, v.checkpoints) == (True, 12, 5)
    seqs = sorted(r[0] for r in fetch(rt, sa.select(CHECKPOINT.c.seq)))
    assert seqs == [3, 6, 9, 10, 12]
    chain = links(rt)
    for cp in fetch(rt, sa.select(CHECKPOINT)):
        assert bytes(cp.hash) == bytes(chain[cp.seq - 1].hash)
        assert cp.next_seq == (cp.seq // 3 + 1) * 3
        message = f"{cp.seq}:{cp.next_seq}:".encode() + bytes(cp.hash)
        assert bytes(cp.mac) == hmac.new(KEY, message, hashlib.sha256).digest()
    assert (
        verify(
            rt.db.engine, b"another-key-0123456789abcdef0123456789abcdef", rt.audit.checkpoint_every
        ).ok
        is False
    )


def test_rows_written_at_a_local_time_verify_deep(runtime, refer):
    """`tick --now 2027-06-01T11:00:00+01:00` is a UK summer time: its audit rows must
    still pass deep verification (the column is stored in UTC; the time is the same)."""
    refer()
    summer = datetime(2027, 6, 1, 11, 0, tzinfo=ZoneInfo("Europe/London"))
    assert runtime.scheduler.tick(summer).breached
    v = runtime.verify_audit(deep=True)
    assert v.ok, v.reason


# --- reads and refusals are audited ----------------------------------------------------


def audit_rows_for(rt: Runtime, request_id: str) -> list[dict[str, Any]]:
    out = []
    for row in fetch(rt, sa.select(EVENT).order_by(EVENT.c.id)):
        doc = json.loads(bytes(row.body))
        if doc["request_id"] == request_id:
            out.append({**doc, "_row": row})
    return out


def only_row(rt: Runtime, response, action: str) -> dict[str, Any]:
    rows = [
        d for d in audit_rows_for(rt, response.headers["x-request-id"]) if d["action"] == action
    ]
    assert len(rows) == 1, f"expected one {action} row for this request, got {len(rows)}"
    doc = rows[0]
    assert doc["_row"].action == action
    return doc


def test_reads_are_audited(runtime, users):
    teacher, officer, auditor = users["teacher"], users["officer"], users["auditor"]
    made = teacher.post("/api/referrals", json={
        "subject": subject("Dan", "Eve"), "concerns": ["neglect"], "summary": "Tired",
        "consent": "given"})  # fmt: skip
    assert made.status_code == 201, made.text
    referral_id, case_id = made.json()["id"], made.json()["case_id"]

    r = officer.get(f"/api/cases/{case_id}")
    assert r.status_code == 200
    person_id = r.json()["person_id"]
    doc = only_row(runtime, r, "api:case:view")
    assert (doc["_row"].actor_id, doc["actor"]["username"]) == (officer.user_id, "officer")
    assert (doc["_row"].case_id, doc["_row"].person_id) == (case_id, person_id)
    assert (doc["outcome"], doc["target"]) == ("allowed", f"case:{case_id}")

    r = officer.get(f"/api/cases/{case_id}/history")
    assert r.status_code == 200
    doc = only_row(runtime, r, "api:case:history")
    assert (doc["_row"].actor_id, doc["_row"].case_id) == (officer.user_id, case_id)
    assert doc["summary"]["entries"] == len(r.json()["history"]) >= 1

    r = officer.get(f"/api/people/{person_id}")
    assert r.status_code == 200
    doc = only_row(runtime, r, "api:person:view")
    assert (doc["_row"].actor_id, doc["_row"].person_id) == (officer.user_id, person_id)
    assert doc["summary"]["cases"] == [case_id]

    r = officer.get("/api/cases")
    assert r.status_code == 200
    doc = only_row(runtime, r, "api:case:list")
    assert doc["_row"].actor_id == officer.user_id and doc["_row"].case_id is None
    assert case_id in doc["summary"]["listed"]

    r = teacher.get(f"/api/referrals/{referral_id}")
    assert r.status_code == 200
    doc = only_row(runtime, r, "api:referral:view")
    assert (doc["_row"].actor_id, doc["_row"].case_id) == (teacher.user_id, case_id)
    assert doc["target"] == f"referral:{referral_id}"

    r = teacher.get("/api/referrals")
    assert r.status_code == 200
    doc = only_row(runtime, r, "api:referral:list")
    assert doc["_row"].actor_id == teacher.user_id
    assert doc["summary"]["listed"] == [referral_id]

    r = auditor.get(f"/api/audit?case_id={case_id}")
    assert r.status_code == 200
    doc = only_row(runtime, r, "api:audit:search")
    assert (doc["_row"].actor_id, doc["_row"].case_id) == (auditor.user_id, case_id)
    assert runtime.verify_audit(deep=True).ok


def test_refused_attempts_are_audited(runtime, users):
    teacher, officer, auditor = users["teacher"], users["officer"], users["auditor"]
    made = teacher.post("/api/referrals", json={
        "subject": subject("Fay", "Gill"), "concerns": ["neglect"], "summary": "Bruise",
        "consent": "given"})  # fmt: skip
    case_id = made.json()["case_id"]
    version = officer.get(f"/api/cases/{case_id}").json()["version"]

    r = officer.post(f"/api/cases/{case_id}/events", json={
        "event": "decide", "expected_version": version,
        "data": {"outcome": "early_help", "onward": [], "rationale": "x",
                 "feedback_to_referrer": "y"}})  # fmt: skip
    assert r.status_code == 403, r.text
    doc = only_row(runtime, r, "api:case:decide")
    assert (doc["outcome"], doc["_row"].outcome) == ("refused", "refused")
    assert (doc["_row"].actor_id, doc["_row"].case_id) == (officer.user_id, case_id)
    assert doc["summary"]["status"] == r.status_code

    r = officer.post(f"/api/cases/{case_id}/events", json={
        "event": "screen", "expected_version": version + 5,
        "data": {"rag": "green", "rationale": "fine"}})  # fmt: skip
    assert r.status_code == 409
    doc = only_row(runtime, r, "api:case:screen")
    assert doc["_row"].outcome == "refused" and doc["summary"]["status"] == 409

    r = teacher.get(f"/api/cases/{case_id}")  # the referrer may not see the MASH record
    assert r.status_code == 404
    doc = only_row(runtime, r, "api:case:view")
    assert (doc["_row"].outcome, doc["_row"].actor_id) == ("refused", teacher.user_id)
    assert doc["_row"].case_id == case_id

    r = teacher.get("/api/audit")
    assert r.status_code == 403
    doc = only_row(runtime, r, "api:audit:search")
    assert (doc["_row"].outcome, doc["_row"].actor_id) == ("refused", teacher.user_id)

    r = officer.get("/api/audit/verify")
    assert r.status_code == 403
    assert only_row(runtime, r, "api:audit:verify")["_row"].outcome == "refused"

    r = officer.client.post("/api/auth/token", data={"username": "officer", "password": "wrong"})
    assert r.status_code == 401
    doc = only_row(runtime, r, "api:auth:sign_in")
    assert (doc["_row"].outcome, doc["target"]) == ("refused", "user:officer")

    # nothing changed, and the refusals are in the chain like anything else
    assert officer.get(f"/api/cases/{case_id}").json()["version"] == version
    r = auditor.get(f"/api/audit?case_id={case_id}&outcome=refused")
    assert r.status_code == 200
    actions = Counter(item["action"] for item in r.json()["items"])
    assert actions == {"api:case:decide": 1, "api:case:screen": 1, "api:case:view": 1}
    assert runtime.verify_audit(deep=True).ok


# --- the sequencer (PostgreSQL) and inline linking (SQLite) ----------------------------


def test_rows_wait_for_the_sequencer_on_postgres_and_link_inline_on_sqlite(settings, clock):
    rt = Runtime.build(settings, clock)  # not started: no background sequencer
    ids = record_rows(rt, 4)
    assert count(rt, EVENT) == 4
    if rt.db.is_postgres:
        assert rt.audit.link_inline is False
        assert count(rt, PENDING) == 4 and count(rt, CHAIN) == 0
        before = verify(rt.db.engine, KEY, rt.audit.checkpoint_every)
        assert (before.ok, before.rows, before.pending) == (True, 0, 4)
    else:
        assert rt.audit.link_inline is True
        assert count(rt, PENDING) == 0
        assert [link.audit_id for link in links(rt)] == ids
    v = rt.verify_audit()  # seals what is pending first
    assert (v.ok, v.rows, v.pending) == (True, 4, 0)
    assert [link.audit_id for link in links(rt)] == ids
    assert count(rt, PENDING) == 0
    assert fetch(rt, sa.select(CHECKPOINT.c.seq))[0][0] == 4


def test_background_sequencer_links_pending_rows(runtime):
    ids = record_rows(runtime, 5)
    deadline = time.monotonic() + 10
    while count(runtime, CHAIN) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count(runtime, PENDING) == 0
    assert sorted(link.audit_id for link in links(runtime)) == sorted(ids)
    assert verify(runtime.db.engine, KEY, runtime.audit.checkpoint_every).ok


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)  # fmt: skip
def test_a_runtime_started_again_sequences_again(runtime):
    """A test server's shutdown stops the shared runtime; the next one starts it again."""
    runtime.stop()
    runtime.start()
    ids = record_rows(runtime, 3)
    deadline = time.monotonic() + 10
    while count(runtime, CHAIN) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(link.audit_id for link in links(runtime)) == sorted(ids)
    assert count(runtime, PENDING) == 0


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)  # fmt: skip
def test_one_sequencer_at_a_time_on_postgres(settings, clock):
    from referral_engine.audit.log import SEQUENCER_LOCK_ID

    rt = Runtime.build(settings, clock)
    record_rows(rt, 3)
    with rt.db.engine.connect() as other:
        other.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": SEQUENCER_LOCK_ID})
        assert rt.audit.run_sequencer(rt.db.engine) is None
        assert count(rt, PENDING) == 3 and count(rt, CHAIN) == 0
        sealed = []
        sealer = threading.Thread(target=lambda: sealed.append(rt.audit.seal(rt.db.engine)))
        sealer.start()
        time.sleep(0.3)
        assert not sealed, "seal must wait for the busy sequencer"
        other.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": SEQUENCER_LOCK_ID})
        other.commit()
        sealer.join(timeout=10)
    assert sealed == [3]
    assert rt.verify_audit().ok


def test_concurrent_writers_make_one_intact_chain(runtime):
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            record_rows(runtime, 15, start=n * 100)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    v = runtime.verify_audit(deep=True)
    assert v.ok, v.reason
    assert v.rows == count(runtime, EVENT) == 90
    assert len({link.audit_id for link in links(runtime)}) == 90
