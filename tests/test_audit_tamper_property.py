"""A property: whatever audited operations ran, one tampering behind the application's
back is always caught by verify with the last kept head, at or after the row tampered
with (issue 17). Each example gets a fresh database (a copy of the migrated template),
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid

import pytest
import sqlalchemy as sa
from conftest import _pg_admin, _pg_url, make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_audit import CHAIN, EVENT, links, record_rows, reguard, unguard

from referral_engine.runtime import Runtime
from referral_engine.storage.db import dispose_all

# Audited operations: write n rows (each its own transaction), let the sequencer run,
# or seal (a checkpoint) and keep a head.
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 4)),
        st.tuples(st.just("sequence"), st.just(0)),
        st.tuples(st.just("keep"), st.just(0)),
    ),
    min_size=1,
    max_size=8,
)
TAMPERINGS = ("body", "column", "delete_row", "truncate", "relink", "swap", "append", "text")


def _fresh_url(backend: str, request, tmp_path) -> str:
    if backend == "sqlite":
        path = tmp_path / f"{uuid.uuid4().hex}.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    name = f"re_prop_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(
            f'CREATE DATABASE "{name}" TEMPLATE "{request.getfixturevalue("pg_template")}"'
        )
    return _pg_url(name)


def _drop(url: str) -> None:
    dispose_all()
    if url.startswith("postgresql"):
        name = sa.engine.make_url(url).database
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tamper(rt: Runtime, how: str, pick: int) -> int:
    """Do one tampering; returns the chain position it touched first."""
    chain = links(rt)
    target = chain[pick % len(chain)]
    unguard(rt, "audit_event", "audit_chain", "audit_checkpoint")
    touched = target.seq
    with rt.db.engine.begin() as conn:
        where = EVENT.c.id == target.audit_id
        body = bytes(conn.execute(sa.select(EVENT.c.body).where(where)).scalar_one())
        if how == "body":
            conn.execute(EVENT.update().where(where).values(body=body.replace(b"{", b"{ ", 1)))
        elif how == "column":
            conn.execute(EVENT.update().where(where).values(action="test:row:hidden"))
        elif how == "delete_row":
            conn.execute(EVENT.delete().where(where))
        elif how == "truncate":
            ids = [link.audit_id for link in chain[target.seq - 1 :]]
            conn.execute(CHAIN.delete().where(CHAIN.c.seq >= target.seq))
            conn.execute(EVENT.delete().where(EVENT.c.id.in_(ids)))
            conn.execute(sa.text("DELETE FROM audit_checkpoint WHERE seq >= :s"), {"s": target.seq})
        elif how in ("relink", "swap"):
            head = bytes(target.prev_hash)
            for link in chain[target.seq - 1 :]:
                w = EVENT.c.id == link.audit_id
                b = bytes(conn.execute(sa.select(EVENT.c.body).where(w)).scalar_one())
                if how == "relink" or link.seq == target.seq:
                    doc = json.loads(b)
                    doc["summary"] = {"changed": True}
                    b = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
                    conn.execute(EVENT.update().where(w).values(body=b))
                new = hashlib.sha256(head + b).digest()
                conn.execute(CHAIN.update().where(CHAIN.c.seq == link.seq).values(
                    prev_hash=head, hash=new, mac=None))  # fmt: skip
                head = new
        elif how == "append":
            last = chain[-1]
            doc = json.loads(body)
            doc["summary"] = {"forged": True}
            b = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
            row = conn.execute(sa.select(EVENT).where(where)).one()
            new_id = conn.execute(
                EVENT.insert().values(at=row.at, actor_id=row.actor_id, action=row.action,
                                      outcome=row.outcome, case_id=row.case_id,
                                      person_id=row.person_id, body=b).returning(EVENT.c.id)
            ).scalar_one()  # fmt: skip
            head = bytes(last.hash)
            conn.execute(CHAIN.insert().values(seq=last.seq + 1, audit_id=new_id,
                         prev_hash=head, hash=hashlib.sha256(head + b).digest()))  # fmt: skip
            touched = last.seq + 1
        elif how == "text":
            if rt.db.is_postgres:
                conn.exec_driver_sql(
                    "ALTER TABLE audit_event ALTER COLUMN body TYPE text "
                    "USING convert_from(body, 'UTF8')"
                )
                touched = 1  # every row is text now
            else:
                conn.execute(
                    sa.text("UPDATE audit_event SET body = CAST(body AS TEXT) WHERE id = :i"),
                    {"i": target.audit_id},
                )
    reguard(rt)
    return touched


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPERATIONS, how=st.sampled_from(TAMPERINGS), pick=st.integers(0, 10_000))
def test_one_tampering_is_always_caught_at_or_after_it(backend, request, tmp_path, clock, ops,
                                                       how, pick):  # fmt: skip
    if backend == "postgres":
        from conftest import PG_URL

        if not PG_URL:
            pytest.skip("no PostgreSQL server: set REFERRAL_ENGINE_TEST_PG_URL")
    url = _fresh_url(backend, request, tmp_path)
    rt = Runtime.build(make_settings(url), clock)
    try:
        written = 0
        for op, n in [*ops, ("write", 1)]:
            if op == "write":
                record_rows(rt, n, start=written)
                written += n
            elif op == "sequence":
                rt.audit.run_sequencer(rt.db.engine)
            else:
                rt.audit.signed_head(rt.db.engine)
        head = rt.audit.signed_head(rt.db.engine)  # the last kept head
        assert rt.verify_audit(head=head).ok
        touched = _tamper(rt, how, pick)
        v = rt.verify_audit(head=head)
        assert not v.ok, f"{how} at link {touched} was not caught"
        assert v.first_broken_seq is not None, v.reason
        assert v.first_broken_seq >= touched, (how, touched, v.reason)
    finally:
        rt.db.engine.dispose()
        _drop(url)
