"""Backup and restore: `referral-engine db backup PATH` copies a SQLite database while
it is being written (the online backup API); the copy opens, is consistent, and its audit
chain verifies. On PostgreSQL the command refuses and names pg_dump; the documented
pg_dump / pg_restore commands are run here and the restored database verified.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PG_URL, make_settings

from referral_engine.cli.ops import PG_DUMP_HELP
from referral_engine.runtime import Runtime
from referral_engine.storage.models import (
    AuditEvent,
    Case,
    CaseHistory,
    Referral,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def keep_busy(runtime, refer, fire, stop: threading.Event, made: list[int]) -> None:
    """Referrals and events, one after another, until told to stop."""
    while not stop.is_set():
        case_id = refer()["case_id"]
        fire(case_id, "officer", "screen", {"rag": "green", "rationale": "Busy day"})
        made.append(case_id)


def consistent(rt: Runtime) -> tuple[int, int]:
    """Every case's version is its number of history rows; returns (cases, audit rows)."""
    with rt.db.reading() as s:
        cases = s.execute(sa.select(Case.id, Case.version)).all()
        counts = dict(
            s.execute(
                sa.select(CaseHistory.case_id, sa.func.count()).group_by(CaseHistory.case_id)
            ).all()
        )
        referrals = s.execute(sa.select(sa.func.count()).select_from(Referral)).scalar_one()
        audit = s.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar_one()
    for case_id, version in cases:
        assert counts.get(case_id) == version, (case_id, version, counts.get(case_id))
    assert referrals == len(cases)
    return len(cases), audit


def test_backup_under_load_restores_and_verifies(
    backend, runtime, refer, fire, cli, tmp_path, clock
):
    if backend == "postgres":
        return pg_dump_and_restore(runtime, refer, fire, cli, tmp_path, clock)
    stop, made = threading.Event(), []
    writer = threading.Thread(target=keep_busy, args=(runtime, refer, fire, stop, made))
    writer.start()
    try:
        while len(made) < 3:  # the load is really running when the copy starts
            stop.wait(0.05)
        target = tmp_path / "backups" / "copy.db"
        result = cli("db", "backup", str(target))
    finally:
        stop.set()
        writer.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert "integrity ok" in result.stdout
    assert cli("db", "backup", str(target)).returncode == 2  # never overwrites a copy
    assert not list(target.parent.glob("*.partial"))

    with sqlite3.connect(target) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    restored = Runtime.build(make_settings(f"sqlite:///{target}"), clock)
    try:
        cases, audit_rows = consistent(restored)
        assert 3 <= cases <= len(made) + 1
        verified = restored.verify_audit(deep=True)
        assert verified.ok, verified.reason
        assert verified.rows == audit_rows
    finally:
        restored.db.engine.dispose()
    # the original carried on and recorded the backup
    with runtime.db.reading() as s:
        backups = s.execute(
            sa.select(sa.func.count()).where(AuditEvent.action == "cli:db:backup")
        ).scalar_one()
    assert backups == 1
    assert runtime.verify_audit().ok


def pg_dump_and_restore(runtime, refer, fire, cli, tmp_path, clock) -> None:
    refused = cli("db", "backup", str(tmp_path / "copy.db"))
    assert refused.returncode == 2
    assert "pg_dump --format=custom" in refused.stderr and "pg_restore" in refused.stderr
    assert not (tmp_path / "copy.db").exists()

    # the server's own version's tools (Debian's /usr/bin wrappers pick a cluster)
    tools = PG_BIN if (PG_BIN / "pg_dump").exists() else Path(shutil.which("pg_dump") or "").parent
    pg_dump, pg_restore = tools / "pg_dump", tools / "pg_restore"
    if not pg_dump.exists():
        pytest.fail("pg_dump is not installed; .ci/run installs the postgresql package")
    for _ in range(3):
        case_id = refer()["case_id"]
        fire(case_id, "officer", "screen", {"rag": "green", "rationale": "Backed up"})
    runtime.audit.seal(runtime.db.engine)
    url = runtime.settings.database_url
    dump = tmp_path / "referral.dump"
    # the commands PG_DUMP_HELP documents
    assert "pg_dump --format=custom --file" in PG_DUMP_HELP
    subprocess.run([str(pg_dump), "--format=custom", "--file", str(dump), url], check=True)
    name = f"re_restore_{uuid.uuid4().hex[:10]}"
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        restored_url = sa.engine.make_url(PG_URL).set(database=name)
        restored_url = restored_url.render_as_string(hide_password=False)
        subprocess.run(
            [str(pg_restore), "--no-owner", "--dbname", restored_url, str(dump)], check=True
        )
        restored = Runtime.build(make_settings(restored_url), clock)
        cases, audit_rows = consistent(restored)
        assert cases == 3
        verified = restored.verify_audit(deep=True)
        assert verified.ok, verified.reason
        assert verified.rows == audit_rows
        restored.db.engine.dispose()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
