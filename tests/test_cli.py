"""The `referral-engine` console script (DESIGN.md, "Public interface"), run as a user runs
it: a subprocess with settings in the environment, on a fresh SQLite file and, where
REFERRAL_ENGINE_TEST_PG_URL names a server, a fresh PostgreSQL database.

Most tests share one migrated database per backend (module scope) because every CLI call
starts a Python process; each test compares before and after, so their order does not
matter. Tests that break or serve a database get their own copy.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import PG_URL, _pg_admin, _pg_url

from referral_engine.ops.demo import DEMO_USERS, SPECIALIST, STORIES
from referral_engine.pathways.definitions import Workflows
from referral_engine.policies.policy import load_policy
from referral_engine.settings import PROJECT_ROOT
from referral_engine.storage.db import normalise_url
from referral_engine.storage.migrate import alembic_config
from referral_engine.storage.models import (
    AuditChain,
    AuditEvent,
    Case,
    CaseHistory,
    Deadline,
    Outbox,
    Referral,
    User,
    UserRole,
)

CLI = Path(sys.executable).parent / "referral-engine"
SECRET = "cli-test-secret-key-0123456789abcdef0123456789ab"
AUDIT_KEY = "cli-test-audit-key-0123456789abcdef0123456789abc"
assert len(SECRET) == len(AUDIT_KEY) == 48
GOOD_PASSWORD = "a perfectly long passphrase"
POLICY = load_policy(PROJECT_ROOT / "policies")
WORKFLOWS = Workflows(PROJECT_ROOT / "workflows", POLICY)

EVENT = AuditEvent.__table__
CHAIN = AuditChain.__table__


# --- running the command ---------------------------------------------------------------


def cli_env(url: str, **overrides: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("REFERRAL_ENGINE_") and k != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=url,
        REFERRAL_ENGINE_SECRET_KEY=SECRET,
        REFERRAL_ENGINE_AUDIT_KEY=AUDIT_KEY,
        REFERRAL_ENGINE_PASSWORD_HASHER="argon2-fast",
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@dataclass
class Call:
    args: tuple[str, ...]
    stdin: str | None = None
    env: dict[str, str | None] | None = None


def start(url: str, call: Call, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CLI), *call.args],
        env=cli_env(url, **(call.env or {})),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def run_all(url: str, cwd: Path, *calls: Call) -> list[subprocess.CompletedProcess]:
    """Run independent commands side by side (each CLI call costs a Python start-up)."""
    procs = [start(url, call, cwd) for call in calls]
    done = []
    for call, proc in zip(calls, procs, strict=True):
        out, err = proc.communicate(call.stdin, timeout=180)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def run(url: str, cwd: Path, *args: str, stdin: str | None = None, **env: str | None):
    return run_all(url, cwd, Call(args, stdin, env))[0]


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result


# --- databases -------------------------------------------------------------------------


@dataclass
class Database:
    url: str
    backend: str
    cwd: Path
    first_upgrade: subprocess.CompletedProcess | None = None
    first_demo: subprocess.CompletedProcess | None = None

    def engine(self) -> sa.Engine:
        return sa.create_engine(normalise_url(self.url), poolclass=sa.pool.NullPool)

    def rows(self, statement) -> list[Any]:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return conn.execute(statement).all()
        finally:
            engine.dispose()

    def count(self, table) -> int:
        return self.rows(sa.select(sa.func.count()).select_from(table))[0][0]

    def run(self, *args: str, stdin: str | None = None, **env: str | None):
        return run(self.url, self.cwd, *args, stdin=stdin, **env)

    def run_all(self, *calls: Call):
        return run_all(self.url, self.cwd, *calls)


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _need_pg(backend: str) -> None:
    if backend == "postgres" and not PG_URL:
        pytest.skip("no PostgreSQL server: set REFERRAL_ENGINE_TEST_PG_URL (CI always does)")


@pytest.fixture(scope="module", params=BACKENDS)
def shared(request, tmp_path_factory) -> Iterator[Database]:
    """A brand-new database migrated by `db upgrade` and loaded by `demo`, shared by the
    module's tests on this backend."""
    backend = request.param
    _need_pg(backend)
    cwd = tmp_path_factory.mktemp(f"cli-{backend}")
    name = None
    if backend == "sqlite":
        url = f"sqlite:///{cwd / 'cli.db'}"
    else:
        name = f"re_cli_{uuid.uuid4().hex[:12]}"
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = _pg_url(name)
    db = Database(url, backend, cwd)
    try:
        db.first_upgrade = ok(db.run("db", "upgrade"))
        db.first_demo = ok(db.run("demo"))
        yield db
    finally:
        if name:
            with _pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def fresh(request, tmp_path) -> Iterator[Database]:
    """A database of its own, migrated (a copy of the suite's template)."""
    backend = request.param
    _need_pg(backend)
    if backend == "sqlite":
        path = tmp_path / "own.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield Database(f"sqlite:///{path}", backend, tmp_path)
        return
    template = request.getfixturevalue("pg_template")
    name = f"re_cli_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield Database(_pg_url(name), backend, tmp_path)
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- db upgrade ------------------------------------------------------------------------


def test_db_upgrade_migrates_a_new_database_and_is_idempotent(shared):
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(shared.url))
    head = script.get_current_head()
    first = shared.first_upgrade.stdout
    # An empty database: says what it did, every migration by revision, oldest first.
    assert f"upgraded an empty database to revision {head}" in first
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    listed = re.findall(r"^  (\w+) ", first, flags=re.MULTILINE)
    assert listed == revisions
    assert f"{len(revisions)} migrations applied" in first
    tables = set(sa.inspect(shared.engine()).get_table_names())
    assert {"audit_event", "audit_chain", "audit_checkpoint", "cases", "app_user"} <= tables
    users = shared.count(User.__table__)

    again = ok(shared.run("db", "upgrade"))
    assert again.stdout.strip() == (
        f"database is already up to date (revision {head}); nothing to do"
    )
    assert shared.rows(sa.text("SELECT version_num FROM alembic_version")) == [(head,)]
    assert set(sa.inspect(shared.engine()).get_table_names()) == tables
    assert shared.count(User.__table__) == users, "upgrading again must not touch data"


# --- users add -------------------------------------------------------------------------


def test_users_add(shared):
    name = f"alice{uuid.uuid4().hex[:6]}"
    taken = DEMO_USERS[0]["username"]  # loaded by `demo` when the database was made
    added, bad_role, short, duplicate = shared.run_all(
        Call(("users", "add", name, "--role", "mash_officer", "--role", "auditor",
              "--agency", "Riverside Trust", "--agency-kind", "health", "--password-stdin"),
             GOOD_PASSWORD + "\n"),
        Call(("users", "add", "bob" + name, "--role", "wizard", "--password-stdin"),
             GOOD_PASSWORD + "\n"),
        Call(("users", "add", "carol" + name, "--role", "idva", "--password-stdin"), "short1\n"),
        Call(("users", "add", taken, "--role", "idva", "--password-stdin"),
             GOOD_PASSWORD + "\n"),
    )  # fmt: skip
    ok(added)
    assert name in added.stdout
    rows = shared.rows(sa.select(User.id, User.password_hash).where(User.username == name))
    assert len(rows) == 1
    user_id, password_hash = rows[0]
    assert GOOD_PASSWORD not in password_hash
    roles = shared.rows(sa.select(UserRole.role).where(UserRole.user_id == user_id))
    assert {r[0] for r in roles} == {"mash_officer", "auditor"}
    kind = shared.rows(
        sa.text(
            "SELECT agency.kind FROM app_user JOIN agency ON agency.id = app_user.agency_id "
            "WHERE app_user.id = :u"
        ).bindparams(u=user_id)
    )
    assert kind == [("health",)]
    audit = shared.rows(sa.select(EVENT.c.body).where(EVENT.c.action == "cli:user:add"))
    docs = [json.loads(bytes(b[0])) for b in audit]
    assert any(d["target"] == f"user:{user_id}" and d["outcome"] == "allowed" for d in docs)
    assert all(GOOD_PASSWORD.encode() not in bytes(b[0]) for b in audit)

    assert bad_role.returncode != 0
    assert "wizard" in bad_role.stderr
    assert short.returncode != 0
    minimum = POLICY.rules.sign_in.password_min_length
    assert "password" in short.stderr and f"at least {minimum} characters" in short.stderr
    assert duplicate.returncode != 0
    assert taken in duplicate.stderr and "taken" in duplicate.stderr
    for result in (bad_role, short, duplicate):
        assert "Traceback" not in result.stderr
        assert GOOD_PASSWORD not in result.stdout + result.stderr
    failed = [f"bob{name}", f"carol{name}"]
    assert shared.rows(sa.select(User.id).where(User.username.in_(failed))) == []
    assert len(shared.rows(sa.select(User.id).where(User.username == taken))) == 1


# --- demo ------------------------------------------------------------------------------


def _demo_counts(db: Database) -> dict[str, int]:
    tables = {"users": User, "referrals": Referral, "cases": Case, "history": CaseHistory}
    return {k: db.count(t.__table__) for k, t in tables.items()}


def test_demo_is_idempotent(shared):
    everything = len(STORIES) + len(SPECIALIST)
    assert f"{everything} new, 0 already loaded" in shared.first_demo.stdout
    names = {r[0] for r in shared.rows(sa.select(User.username))}
    assert {u["username"] for u in DEMO_USERS} <= names
    keys = shared.rows(
        sa.select(Referral.idempotency_key).where(Referral.idempotency_key.like("demo-%"))
    )
    assert len(keys) == everything
    before = _demo_counts(shared)

    again = ok(shared.run("demo"))
    assert f"0 new, {everything} already loaded" in again.stdout
    assert _demo_counts(shared) == before


def test_demo_scale_adds_consistent_synthetic_cases(shared):
    top = shared.rows(sa.select(sa.func.coalesce(sa.func.max(Case.id), 0)))[0][0]
    before = shared.count(Case.__table__)
    ok(shared.run("demo", "--scale", "300", "--seed", "3", "--quiet"))
    assert shared.count(Case.__table__) == before + 300

    cases = shared.rows(sa.select(Case).where(Case.id > top).order_by(Case.id))
    assert len(cases) == 300
    history: dict[int, list[Any]] = {}
    for h in shared.rows(
        sa.select(CaseHistory)
        .where(CaseHistory.case_id > top)
        .order_by(CaseHistory.case_id, CaseHistory.version)
    ):
        history.setdefault(h.case_id, []).append(h)
    assert {c.pathway for c in cases} == set(WORKFLOWS.current), "every pathway gets cases"
    for case in cases:
        wf = WORKFLOWS.current[case.pathway]
        steps = history.get(case.id, [])
        where = f"synthetic case {case.id} ({case.pathway}, {case.state}, v{case.version})"
        assert [h.version for h in steps] == list(range(1, case.version + 1)), where
        assert (steps[0].from_state, steps[0].to_state) == (None, wf.definition.initial), where
        for prev, h in itertools.pairwise(steps):
            assert h.from_state == prev.to_state, where
            assert h.event in wf.machine.get_triggers(h.from_state), where
            assert h.to_state in wf.definition.states, where
        assert steps[-1].to_state == case.state, where
        assert case.closed == wf.is_terminal(case.state), where
        assert case.referral_id is not None and case.person_id is not None, where
    loads = shared.rows(sa.select(EVENT.c.body).where(EVENT.c.action == "cli:demo:bulk_load"))
    summaries = [json.loads(bytes(b[0]))["summary"] for b in loads]
    assert sum(s["cases"] for s in summaries if s["seed"] == 3) >= 300


# --- tick ------------------------------------------------------------------------------


def test_tick_twice_notifies_nobody_again(shared):
    # far enough ahead that every demo deadline has come due, whatever ran before
    now = (datetime.now(UTC) + timedelta(days=90)).isoformat()
    outbox_before = shared.count(Outbox.__table__)
    first = ok(shared.run("tick", "--now", now, "--allow-future"))
    result = json.loads(first.stdout)
    assert result["breached"] + result["reminded"] + result["fired"] > 0, result
    assert result["failed"] == []
    outbox_after_first = shared.count(Outbox.__table__)
    assert outbox_after_first > outbox_before, "a breach escalates to someone"
    due = Deadline.due_at <= datetime.fromisoformat(now)
    assert shared.rows(sa.select(Deadline.id).where(Deadline.status == "open", due)) == []

    second = ok(shared.run("tick", "--now", now, "--allow-future"))
    assert json.loads(second.stdout) == {
        "breached": 0, "warned": 0, "reminded": 0, "fired": 0, "failed": [],
        # no mail server configured: email waits, the notices are in the app
        "emails": {"sent": 0, "retrying": 0, "failed": 0, "skipped": 0},
    }  # fmt: skip
    assert shared.count(Outbox.__table__) == outbox_after_first


def test_tick_with_a_time_without_offset_does_not_crash(shared):
    """`--now 2031-06-01T10:00` (no offset) is what a person types: either take it as UK
    or UTC time, or say what is wrong with it; never a traceback."""
    result = shared.run("tick", "--now", "2031-06-01T10:00", "--allow-future")
    assert "Traceback" not in result.stderr, result.stderr[-800:]
    if result.returncode != 0:
        assert "--now" in result.stderr


# --- audit verify ----------------------------------------------------------------------


def test_audit_verify_passes_an_intact_chain(shared):
    plain, as_json = shared.run_all(
        Call(("audit", "verify")), Call(("audit", "verify", "--deep", "--json"))
    )
    ok(plain)
    assert "intact" in plain.stdout
    result = json.loads(ok(as_json).stdout)
    assert result["ok"] is True
    assert result["pending"] == 0
    assert result["rows"] == shared.count(EVENT) > 0
    assert result["first_broken_seq"] is None and result["first_broken_audit_id"] is None


def _tamper_body(db: Database, audit_id: int) -> None:
    """Drop the append-only trigger and rewrite one row's body, as a DBA could."""
    forged = b'{"action":"nothing to see here"}'
    if db.backend == "sqlite":
        conn = sqlite3.connect(sa.engine.make_url(db.url).database)
        try:
            conn.execute("DROP TRIGGER audit_event_no_update")
            conn.execute("UPDATE audit_event SET body = ? WHERE id = ?", (forged, audit_id))
            conn.commit()
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER audit_event_append_only ON audit_event")
        conn.execute("UPDATE audit_event SET body = %s WHERE id = %s", (forged, audit_id))


def test_audit_verify_names_a_tampered_row(fresh):
    from referral_engine.runtime import Runtime
    from referral_engine.settings import Settings

    rt = Runtime.build(Settings(database_url=fresh.url, secret_key=SECRET, audit_key=AUDIT_KEY))
    actor = rt.access.actor(user_id=None, username="t", display_name="T", roles=[], source="cli")
    for i in range(5):
        with rt.db.transaction() as s:
            rt.audit.record(s, actor, "cli:test:write", summary={"n": i})
    rt.audit.seal(rt.db.engine)
    assert rt.verify_audit().ok
    rt.db.engine.dispose()
    links = fresh.rows(sa.select(CHAIN.c.seq, CHAIN.c.audit_id).order_by(CHAIN.c.seq))
    assert len(links) == 5
    seq, target = links[2]

    _tamper_body(fresh, target)
    plain, as_json = fresh.run_all(Call(("audit", "verify")), Call(("audit", "verify", "--json")))
    assert plain.returncode == 1
    assert "BROKEN" in plain.stdout
    assert f"audit row {target}" in plain.stdout and f"position {seq}" in plain.stdout
    assert as_json.returncode == 1
    result = json.loads(as_json.stdout)
    assert result["ok"] is False
    assert (result["first_broken_seq"], result["first_broken_audit_id"]) == (seq, target)


# --- serve -----------------------------------------------------------------------------


def test_serve_refuses_to_start_without_real_secrets(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    no_secret, no_audit_key = run_all(
        url, tmp_path,
        Call(("serve", "--port", "9"), env={"REFERRAL_ENGINE_SECRET_KEY": None}),
        Call(("serve", "--port", "9"), env={"REFERRAL_ENGINE_AUDIT_KEY": None}),
    )  # fmt: skip
    for result, variable in (
        (no_secret, "REFERRAL_ENGINE_SECRET_KEY"),
        (no_audit_key, "REFERRAL_ENGINE_AUDIT_KEY"),
    ):
        assert result.returncode != 0
        assert variable in result.stderr, result.stderr[-500:]
        assert "Traceback" not in result.stderr
        assert "Uvicorn running" not in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - our own server
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_serve_starts_in_demo_mode(fresh):
    port = _free_port()
    env = {"REFERRAL_ENGINE_DEMO": "1", "REFERRAL_ENGINE_SECRET_KEY": None,
           "REFERRAL_ENGINE_AUDIT_KEY": None}  # fmt: skip
    proc = start(fresh.url, Call(("serve", "--port", str(port)), env=env), fresh.cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = None, b""
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _, body = _get(f"{base}/healthz")
                break
            except OSError:
                time.sleep(0.2)
        assert proc.poll() is None, "the server exited: " + proc.stderr.read()[-2000:]
        assert status == 200
        assert json.loads(body) == {"status": "ok"}
        status, headers, body = _get(f"{base}/api/me")
        assert status == 401
        assert headers["content-type"].startswith("application/problem+json")
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    # uvicorn shuts down gracefully on SIGTERM (running the app's shutdown), then
    # re-raises the signal, so the exit status is 0 or -SIGTERM.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in err
