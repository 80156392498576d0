"""Signed heads that leave the database, and verifying against them (issue 17).

A head (`audit head`, or appended by `serve`, `tick` and `db upgrade` to
REFERRAL_ENGINE_AUDIT_HEAD_LOG) is kept where the database administrator cannot reach;
`audit verify --head FILE` then catches what the chain alone cannot: a tail cut off with
the triggers dropped and the checkpoints deleted, or a chain rewritten by someone who
also holds the audit key. An inspector checks a backup the same way.
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import sqlalchemy as sa
from conftest import AUDIT_KEY, make_settings
from test_audit import (
    CHAIN,
    CHECKPOINT,
    EVENT,
    KEY,
    links,
    record_rows,
    reguard,
    seal,
    unguard,
)

from referral_engine.audit.chainproof import link_mac
from referral_engine.audit.heads import Head, HeadFileError, parse_head, read_kept
from referral_engine.runtime import Runtime


def kept_head(rt: Runtime, path) -> Head:
    """What a partnership does: keep the current signed head in a file of its own."""
    head = rt.audit.signed_head(rt.db.engine)
    with open(path, "a", encoding="utf-8") as f:
        f.write(head.line() + "\n")
    return head


def truncate_after(rt: Runtime, seq: int) -> None:
    """Cut the log back to link `seq`: triggers dropped, rows, links and checkpoints
    after it deleted, triggers put back. Nothing in the database shows it."""
    unguard(rt, "audit_event", "audit_chain", "audit_checkpoint")
    with rt.db.engine.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.select(CHAIN.c.audit_id).where(CHAIN.c.seq > seq))]
        conn.execute(CHAIN.delete().where(CHAIN.c.seq > seq))
        conn.execute(EVENT.delete().where(EVENT.c.id.in_(ids)))
        conn.execute(CHECKPOINT.delete().where(CHECKPOINT.c.seq > seq))
    reguard(rt)


def test_audit_head_prints_one_signed_json_line(cli, runtime):
    record_rows(runtime, 4)
    got = cli("audit", "head")
    assert got.returncode == 0, got.stderr
    (line,) = got.stdout.splitlines()
    doc = json.loads(line)
    assert set(doc) == {"seq", "hash", "at", "mac"}
    assert doc["seq"] == len(links(runtime)) == 4
    assert doc["hash"] == bytes(links(runtime)[-1].hash).hex()
    assert parse_head(line).genuine(KEY)
    assert not parse_head(line).genuine(b"another-key")
    assert doc["at"].endswith("+00:00")


def test_tail_truncated_to_before_a_kept_head_is_caught(cli, runtime, tmp_path):
    heads = tmp_path / "heads.jsonl"
    record_rows(runtime, 6)
    seal(runtime)
    kept_head(runtime, heads)  # at link 6
    record_rows(runtime, 5, start=6)
    head = kept_head(runtime, heads)  # at link 11: the last one counts
    assert head.seq == 11
    truncate_after(runtime, 6)  # the end of a sequencer batch, so its MAC is kept
    # The database alone no longer shows it: what is left is a sealed, intact chain.
    assert runtime.verify_audit().ok
    v = runtime.verify_audit(head=read_kept(heads))
    assert not v.ok
    assert v.first_broken_seq == 7
    assert "links 7 to 11 are missing" in v.reason
    got = cli("audit", "verify", "--head", str(heads))
    assert got.returncode == 1
    assert "links 7 to 11 are missing" in got.stdout


def test_a_tail_cut_mid_batch_is_caught_without_a_head(runtime):
    """Cut inside a sequencer batch (PostgreSQL), the last link left carries no MAC."""
    record_rows(runtime, 6)
    seal(runtime)
    if not runtime.db.is_postgres:
        pytest.skip("on SQLite every link is a batch of its own")
    truncate_after(runtime, 4)
    v = runtime.verify_audit()
    assert not v.ok
    assert v.first_broken_seq <= 4 and "cut off" in v.reason


def test_a_chain_rewritten_with_the_key_differs_from_the_kept_head(runtime, tmp_path):
    """Someone holding the database and the audit key can rewrite a consistent chain;
    only a head kept elsewhere shows it (SECURITY.md: what the audit cannot prove)."""
    record_rows(runtime, 5)
    head = kept_head(runtime, tmp_path / "heads.jsonl")
    unguard(runtime, "audit_event", "audit_chain", "audit_checkpoint")
    old = links(runtime)
    prev = bytes(old[1].hash)
    with runtime.db.engine.begin() as conn:
        conn.execute(CHECKPOINT.delete())
        for link in old[2:]:
            body = bytes(
                conn.execute(
                    sa.select(EVENT.c.body).where(EVENT.c.id == link.audit_id)
                ).scalar_one()
            )
            body = body.replace(b'"summary":{', b'"summary":{"rewritten":true,')
            new = hashlib.sha256(prev + body).digest()
            conn.execute(EVENT.update().where(EVENT.c.id == link.audit_id).values(body=body))
            conn.execute(
                CHAIN.update()
                .where(CHAIN.c.seq == link.seq)
                .values(prev_hash=prev, hash=new, mac=link_mac(KEY, link.seq, new))
            )
            prev = new  # fmt: skip
    reguard(runtime)
    assert runtime.verify_audit().ok
    v = runtime.verify_audit(head=head)
    assert not v.ok
    assert v.first_broken_seq == 5
    assert "differs from the head kept" in v.reason


def test_a_head_not_signed_by_the_audit_key_is_refused(runtime, tmp_path):
    record_rows(runtime, 3)
    head = kept_head(runtime, tmp_path / "h")
    forged = Head(head.seq + 2, head.hash, head.at, head.mac)
    v = runtime.verify_audit(head=forged)
    assert not v.ok and "not signed by the audit key" in v.reason


def test_an_unreadable_head_file_is_named_by_line(cli, runtime, tmp_path):
    path = tmp_path / "heads.jsonl"
    path.write_text('{"seq": 1}\n', encoding="utf-8")
    got = cli("audit", "verify", "--head", str(path))
    assert got.returncode == 2
    assert f"{path} line 1: hash must be 64 hexadecimal digits" in got.stderr
    with pytest.raises(HeadFileError, match="holds no head"):
        read_kept(tmp_path / "empty") if (tmp_path / "empty").write_text("\n") else None


def test_tick_appends_the_new_head_to_the_head_log(cli, runtime, tmp_path, monkeypatch):
    log = tmp_path / "heads.jsonl"
    monkeypatch.setenv("REFERRAL_ENGINE_AUDIT_HEAD_LOG", str(log))
    record_rows(runtime, 3)
    assert cli("tick").returncode in (0, 1)
    first = read_kept(log)
    assert first.genuine(KEY) and first.seq >= 3
    assert runtime.verify_audit(head=first).ok
    record_rows(runtime, 2, start=3)
    cli("tick")
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and read_kept(log).seq > first.seq


def test_db_upgrade_keeps_the_first_head(cli, runtime, tmp_path, monkeypatch):
    log = tmp_path / "heads.jsonl"
    monkeypatch.setenv("REFERRAL_ENGINE_AUDIT_HEAD_LOG", str(log))
    assert cli("db", "upgrade").returncode == 0
    assert read_kept(log).genuine(KEY)


def test_a_running_server_keeps_heads_on_a_timer_and_at_shutdown(db_url, clock, tmp_path):
    log = tmp_path / "heads.jsonl"
    settings = make_settings(db_url, audit_head_log=log, audit_head_interval_seconds=0.2)
    rt = Runtime.build(settings, clock)
    rt.start()
    try:
        assert read_kept(log).seq == 0  # sealed at first start, before any write
        record_rows(rt, 3)
        deadline = time.monotonic() + 10
        while read_kept(log).seq < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_kept(log).seq == 3, "the timer kept no head after the writes"
        record_rows(rt, 2, start=3)
    finally:
        rt.stop()
    assert read_kept(log).seq == 5, "shutdown kept no head for the last writes"
    lines = [parse_head(x) for x in log.read_text(encoding="utf-8").splitlines()]
    assert all(h.genuine(AUDIT_KEY.encode()) for h in lines)
    assert [h.seq for h in lines] == sorted(h.seq for h in lines)


def test_an_inspector_checks_a_backup_against_kept_heads(cli, runtime, tmp_path, monkeypatch):
    """SECURITY.md, "Checking a backup": restore or copy it, point DATABASE_URL at the
    copy, and run `audit verify --head` with the heads kept outside the database."""
    heads = tmp_path / "heads.jsonl"
    record_rows(runtime, 4)
    while len(links(runtime)) < 4:  # a batch that ends at link 4 (PostgreSQL)
        runtime.audit.run_sequencer(runtime.db.engine)
    record_rows(runtime, 2, start=4)
    kept_head(runtime, heads)
    copy_url = _backup(cli, runtime, tmp_path)
    monkeypatch.setenv("DATABASE_URL", copy_url)
    got = cli("audit", "verify", "--head", str(heads))
    assert got.returncode == 0, got.stdout + got.stderr
    assert "agrees with the head kept at link 6" in got.stdout
    # A backup cut short (the tamperer's copy) fails against the same heads.
    inspector = Runtime.build(make_settings(copy_url), runtime.clock)
    truncate_after(inspector, 4)
    got = cli("audit", "verify", "--head", str(heads))
    assert got.returncode == 1
    assert "links 5 to 6 are missing" in got.stdout
    inspector.db.engine.dispose()


def _backup(cli, runtime, tmp_path) -> str:
    """`db backup` on SQLite; on PostgreSQL, pg_dump restored into a new database."""
    if not runtime.db.is_postgres:
        target = tmp_path / "backup.db"
        got = cli("db", "backup", str(target))
        assert got.returncode == 0, got.stderr
        return f"sqlite:///{target}"
    import shutil
    import subprocess
    import uuid

    from conftest import _pg_admin, _pg_url

    dump = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
    restore = shutil.which("pg_restore") or "/usr/lib/postgresql/15/bin/pg_restore"
    url = sa.engine.make_url(runtime.settings.database_url)
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"re_backup_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    target = _pg_url(name)
    archive = tmp_path / "backup.dump"
    subprocess.run([dump, "-Fc", "-f", str(archive), libpq], check=True)
    to = sa.engine.make_url(target).set(drivername="postgresql")
    subprocess.run(
        [restore, "-d", to.render_as_string(hide_password=False), str(archive)], check=True
    )
    return target
