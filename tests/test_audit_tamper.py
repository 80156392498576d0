"""What a dishonest database administrator can do to the audit tables, behind the
application's back, and what the ordinary `audit verify` says about it (issue 17).

Each test does the attack with raw SQL, on SQLite and PostgreSQL, and checks that verify
fails naming what changed; where the attack can be undone, that undoing it makes verify
pass again, so it was this attack that was caught.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import sqlalchemy as sa
from test_audit import (
    AUDIT_TABLES,
    CHAIN,
    EVENT,
    execute,
    fetch,
    links,
    record_rows,
    reguard,
    seal,
    unguard,
)

from referral_engine.audit.guards import POSTGRES_GUARDS, SQLITE_GUARDS
from referral_engine.storage.models import CaseHistory

HISTORY = CaseHistory.__table__


@pytest.fixture
def chain(runtime):
    """A runtime with a short, sealed, intact chain of ten rows."""
    record_rows(runtime, 10)
    seal(runtime)
    assert runtime.verify_audit().ok
    return runtime


# --- the append-only triggers ----------------------------------------------------------


@pytest.mark.parametrize("table", AUDIT_TABLES)
def test_dropped_triggers_are_named(chain, table):
    unguard(chain, table)
    v = chain.verify_audit()
    assert not v.ok
    assert "triggers" in v.reason
    guards = POSTGRES_GUARDS if chain.db.is_postgres else SQLITE_GUARDS
    dropped = [g for g in guards if g.startswith(table) and g in v.reason]
    assert dropped, v.reason
    assert not [g for g in guards if not g.startswith(table) and g in v.reason]
    reguard(chain)
    assert chain.verify_audit().ok


def test_a_disabled_trigger_on_postgres_is_named(chain):
    if not chain.db.is_postgres:
        pytest.skip("ALTER TABLE ... DISABLE TRIGGER is PostgreSQL's")
    execute(chain, sa.text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
    v = chain.verify_audit()
    assert not v.ok and "audit_event_append_only" in v.reason
    execute(chain, sa.text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only"))
    assert chain.verify_audit().ok


def test_a_trigger_replaced_by_one_that_refuses_nothing_is_named(chain):
    if chain.db.is_postgres:
        execute(chain, sa.text("DROP TRIGGER audit_chain_append_only ON audit_chain"))
        execute(chain, sa.text(
            "CREATE FUNCTION let_through() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN OLD; END $$"))  # fmt: skip
        execute(chain, sa.text(
            "CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain "
            "FOR EACH ROW EXECUTE FUNCTION let_through()"))  # fmt: skip
        name = "audit_chain_append_only"
    else:
        execute(chain, sa.text("DROP TRIGGER audit_chain_no_delete"))
        execute(chain, sa.text(
            "CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain "
            "BEGIN SELECT 1; END"))  # fmt: skip
        name = "audit_chain_no_delete"
    v = chain.verify_audit()
    assert not v.ok and name in v.reason


# --- REPLACE INTO ----------------------------------------------------------------------


def _row(rt, audit_id: int):
    return fetch(rt, sa.select(EVENT).where(EVENT.c.id == audit_id))[0]


def test_replace_into_an_audit_table_is_refused(chain):
    target = links(chain)[4]
    row = _row(chain, target.audit_id)
    if chain.db.is_postgres:
        attacks = [
            "INSERT INTO audit_event (id, at, actor_id, action, outcome, body) "
            "VALUES (:id, :at, NULL, 'test:row:none', 'allowed', :body) "
            "ON CONFLICT (id) DO UPDATE SET action = EXCLUDED.action"
        ]
    else:
        attacks = [
            f"{verb} INTO audit_event (id, at, actor_id, action, outcome, body) "
            "VALUES (:id, :at, NULL, 'test:row:none', 'allowed', :body)"
            for verb in ("REPLACE", "INSERT OR REPLACE")
        ]
    for sql in attacks:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            execute(chain, sa.text(sql), {"id": row.id, "at": row.at, "body": row.body})
    assert _row(chain, target.audit_id).action == row.action
    for verb in ("REPLACE", "INSERT OR REPLACE"):
        if chain.db.is_postgres:
            break
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            execute(chain, sa.text(
                f"{verb} INTO audit_chain (seq, audit_id, prev_hash, hash) "
                "VALUES (:seq, :aid, :p, :h)"),
                {"seq": target.seq, "aid": target.audit_id, "p": b"x", "h": b"y"})  # fmt: skip
    assert chain.verify_audit().ok


def test_replace_into_with_the_guard_dropped_is_caught(chain):
    """SQLite: with its no_replace trigger dropped, REPLACE INTO rewrites a row without
    firing the DELETE trigger; verify names the row and the missing trigger."""
    if chain.db.is_postgres:
        pytest.skip("REPLACE INTO is SQLite's")
    target = links(chain)[4]
    row = _row(chain, target.audit_id)
    execute(chain, sa.text("DROP TRIGGER audit_event_no_replace"))
    execute(chain, sa.text(
        "REPLACE INTO audit_event (id, at, actor_id, action, outcome, case_id, person_id, body) "
        "VALUES (:id, :at, :actor, 'test:row:hidden', :outcome, NULL, NULL, :body)"),
        {"id": row.id, "at": row.at, "actor": row.actor_id, "outcome": row.outcome,
         "body": row.body})  # fmt: skip
    v = chain.verify_audit()
    assert not v.ok
    assert (v.first_broken_seq, v.first_broken_audit_id) == (target.seq, target.audit_id)
    assert "column action" in v.reason
    execute(chain, sa.text(
        "REPLACE INTO audit_event (id, at, actor_id, action, outcome, case_id, person_id, body) "
        "VALUES (:id, :at, :actor, :action, :outcome, NULL, NULL, :body)"),
        {"id": row.id, "at": row.at, "actor": row.actor_id, "outcome": row.outcome,
         "action": row.action, "body": row.body})  # fmt: skip
    v = chain.verify_audit()
    assert not v.ok and "audit_event_no_replace" in v.reason


# --- a row of the wrong type -----------------------------------------------------------


def test_a_row_stored_as_text_is_named_not_crashed_on(chain):
    target = links(chain)[3]
    unguard(chain, "audit_event")
    if chain.db.is_postgres:
        # Someone with database access can change the column's type itself.
        execute(chain, sa.text(
            "ALTER TABLE audit_event ALTER COLUMN body TYPE text "
            "USING convert_from(body, 'UTF8')"))  # fmt: skip
    else:
        execute(chain, sa.text("UPDATE audit_event SET body = CAST(body AS TEXT) WHERE id = :i"),
                {"i": target.audit_id})  # fmt: skip
    v = chain.verify_audit()
    assert not v.ok
    first = 1 if chain.db.is_postgres else target.seq  # on PostgreSQL every row is text now
    assert v.first_broken_seq == first
    assert "malformed" in v.reason and "str, not bytes" in v.reason
    assert str(links(chain)[first - 1].audit_id) in v.reason


def test_a_body_that_is_not_json_is_named(chain):
    """A body of bytes that hash correctly but are not JSON (an attacker with the key
    could not do better; without it the MAC fails first, so check the message here)."""
    from referral_engine.audit.chainproof import columns_disagree

    assert columns_disagree(b"\xff\xfe", (None,) * 6) == "its hashed record is not readable JSON"
    assert "not a JSON object" in columns_disagree(b"[1]", (None,) * 6)


# --- the case history has its audit rows -----------------------------------------------


def test_a_case_history_entry_without_its_audit_row_is_named(runtime, refer):
    case_id = refer()["case_id"]
    assert runtime.verify_audit().ok
    entry = fetch(runtime, sa.select(HISTORY).where(HISTORY.c.case_id == case_id))[0]
    execute(runtime, HISTORY.insert().values(
        case_id=case_id, version=entry.version + 50, event="close", from_state=entry.to_state,
        to_state="closed", actor_id=None, actor_name="Nobody", at=entry.at.replace(year=2020),
        data={}))  # fmt: skip
    v = runtime.verify_audit()
    assert not v.ok
    assert f"case {case_id}, version {entry.version + 50}" in v.reason
    assert "no audit row" in v.reason


# --- forged appends and re-linked tails (no key) ---------------------------------------


def _forge_append(rt, action: str = "test:case:view") -> int:
    """A correctly linked row appended with plain SHA-256, triggers untouched."""
    last = links(rt)[-1]
    before = _row(rt, last.audit_id)
    template = json.loads(bytes(before.body))
    doc = {**template, "action": action, "summary": {"forged": True}}
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with rt.db.engine.begin() as conn:
        audit_id = conn.execute(
            EVENT.insert().values(at=before.at, actor_id=doc["actor"]["id"],
                                  action=action, outcome=doc["outcome"], case_id=doc["case_id"],
                                  person_id=doc["person_id"], body=body).returning(EVENT.c.id)
        ).scalar_one()  # fmt: skip
        head = bytes(last.hash)
        conn.execute(CHAIN.insert().values(
            seq=last.seq + 1, audit_id=audit_id, prev_hash=head,
            hash=hashlib.sha256(head + body).digest()))  # fmt: skip
    return last.seq + 1


def test_a_forged_correctly_linked_appended_row_is_caught(chain):
    seq = _forge_append(chain)
    v = chain.verify_audit()
    assert not v.ok
    assert v.first_broken_seq == seq
    assert "no MAC" in v.reason and "appended outside the application" in v.reason


def test_edit_and_relink_of_the_tail_is_caught(chain):
    """The rows after the last checkpoint, edited and re-linked with plain SHA-256."""
    record_rows(chain, 3, start=10)
    while len(links(chain)) < 13:  # linked (PostgreSQL's sequencer), not checkpointed
        chain.audit.run_sequencer(chain.db.engine)
    tail = links(chain)[-3:]
    assert [link.seq for link in tail] == [11, 12, 13]
    unguard(chain, "audit_event", "audit_chain")
    head = bytes(tail[0].prev_hash)
    with chain.db.engine.begin() as conn:
        for link in tail:
            body = bytes(
                conn.execute(
                    sa.select(EVENT.c.body).where(EVENT.c.id == link.audit_id)
                ).scalar_one()
            )
            body = body.replace(b'"summary":{', b'"summary":{"edited":true,')
            new = hashlib.sha256(head + body).digest()
            conn.execute(EVENT.update().where(EVENT.c.id == link.audit_id).values(body=body))
            conn.execute(
                CHAIN.update()
                .where(CHAIN.c.seq == link.seq)
                .values(prev_hash=head, hash=new, mac=None)
            )
            head = new  # fmt: skip
    reguard(chain)
    v = chain.verify_audit()
    assert not v.ok
    assert v.first_broken_seq >= tail[0].seq
    assert "MAC" in v.reason
