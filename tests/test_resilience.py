"""Reliability under concurrency and crashes, over real HTTP, on SQLite and PostgreSQL.

- Parallel requests through a real uvicorn server: N events at one case version, exactly
  one applied and the rest 409; N identical referrals with one Idempotency-Key, one made.
  (tests/test_engine.py races `Engine.fire` itself in threads; these go through HTTP.)
- Several `referral-engine tick` processes at once: each deadline fires once, each
  notification is written once.
- Two `referral-engine serve` processes on one database, clients racing across both;
  one is killed with SIGKILL under load and restarted: every event acknowledged with 200
  is in the history, nothing is half-applied, and the audit chain verifies.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from conftest import AUDIT_KEY, PASSWORD, SECRET, START, free_port, referral_body
from test_cli import CLI, cli_env

from referral_engine.storage.models import (
    AuditEvent,
    Case,
    CaseHistory,
    Deadline,
    Outbox,
    Referral,
)

THREADS = 8


# --- HTTP without a framework client ---------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def call(
    base: str, method: str, path: str, *, token: str | None = None, json_body: Any = None,
    form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Reply:  # fmt: skip
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    sent = dict(headers or {})
    body = None
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if json_body is not None:
        body, sent["Content-Type"] = json.dumps(json_body), "application/json"
    if form is not None:
        body = urllib.parse.urlencode(form)
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=sent)
        r = conn.getresponse()
        raw = r.read()
        got = {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()
    parsed = json.loads(raw) if raw and "json" in got.get("content-type", "") else raw
    return Reply(r.status, got, parsed)


def sign_in(base: str, username: str) -> str:
    r = call(base, "POST", "/api/auth/token", form={"username": username, "password": PASSWORD})
    assert r.status == 200, r.body
    return r.body["access_token"]


def race(n: int, attempt) -> list[Any]:
    """Run attempt(i) for i in range(n) in threads released at the same moment."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except Exception as exc:  # recorded, then asserted on
            results[i] = exc

    workers = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers)
    return results


def rows(rt, model, *where) -> list[Any]:
    with rt.db.reading() as s:
        return list(s.execute(sa.select(model).where(*where)).scalars())


def audit_docs(rt, *where) -> list[dict[str, Any]]:
    with rt.db.reading() as s:
        bodies = s.execute(sa.select(AuditEvent.body).where(*where).order_by(AuditEvent.id))
        return [json.loads(bytes(b)) for b in bodies.scalars()]


# --- parallel requests through one server ----------------------------------------------


def test_parallel_events_at_one_version_over_http_exactly_one_applies(runtime, users, live):
    made = users["teacher"].post("/api/referrals", json=referral_body())
    assert made.status_code == 201, made.text
    case_id = made.json()["case_id"]
    token = users["officer"].token
    rags = ["red", "amber", "green"]

    def attempt(i: int) -> Reply:
        return call(live, "POST", f"/api/cases/{case_id}/events", token=token, json_body={
            "event": "screen", "expected_version": 1,
            "data": {"rag": rags[i % 3], "rationale": f"by client {i}"},
        })  # fmt: skip

    replies = race(THREADS, attempt)
    assert all(isinstance(r, Reply) for r in replies), replies
    statuses = Counter(r.status for r in replies)
    assert statuses == {200: 1, 409: THREADS - 1}, [(r.status, r.body) for r in replies]
    (winner,) = [i for i, r in enumerate(replies) if r.status == 200]
    for r in replies:
        if r.status == 409:
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.body["status"] == 409
    assert replies[winner].body["version"] == 2

    history = rows(runtime, CaseHistory, CaseHistory.case_id == case_id)
    assert sorted((h.version, h.event) for h in history) == [(1, "open"), (2, "screen")]
    assert [h.data["rationale"] for h in history if h.event == "screen"] == [f"by client {winner}"]
    (case,) = rows(runtime, Case, Case.id == case_id)
    assert (case.version, case.rag) == (2, rags[winner % 3])
    screens = audit_docs(runtime, AuditEvent.case_id == case_id,
                         AuditEvent.action == "api:case:screen")  # fmt: skip
    assert Counter(d["outcome"] for d in screens) == {"allowed": 1, "refused": THREADS - 1}
    assert runtime.verify_audit().ok


def test_parallel_identical_referrals_with_one_key_make_one(runtime, users, live):
    token, body = users["teacher"].token, referral_body(summary="Sent twice by a flaky network")

    def attempt(i: int) -> Reply:
        return call(live, "POST", "/api/referrals", token=token, json_body=body,
                    headers={"Idempotency-Key": "retry-7f1c"})  # fmt: skip

    replies = race(THREADS, attempt)
    assert all(isinstance(r, Reply) for r in replies), replies
    assert {r.status for r in replies} == {201}, [(r.status, r.body) for r in replies]
    assert [r.body["replayed"] for r in replies].count(False) == 1  # the rest are replays
    assert len({(r.body["id"], r.body["case_id"], r.body["reference"]) for r in replies}) == 1
    assert len(rows(runtime, Referral)) == 1
    assert len(rows(runtime, Case)) == 1
    creates = audit_docs(runtime, AuditEvent.action == "api:referral:create")
    assert len(creates) == 1
    received = rows(runtime, Outbox, Outbox.kind == "referral_received")
    assert len(received) == 1
    assert runtime.verify_audit().ok


# --- several tick workers --------------------------------------------------------------


def start_cli(
    url: str, cwd: Path, *args: str, log: Any = subprocess.PIPE, **env: str | None
) -> subprocess.Popen:
    env.setdefault("REFERRAL_ENGINE_SECRET_KEY", SECRET)
    env.setdefault("REFERRAL_ENGINE_AUDIT_KEY", AUDIT_KEY)
    return subprocess.Popen(
        [str(CLI), *args], env=cli_env(url, **env), cwd=cwd, text=True,
        stdout=log, stderr=subprocess.STDOUT if log is not subprocess.PIPE else log,
    )  # fmt: skip


def test_tick_workers_at_once_fire_each_deadline_once(runtime, refer, staff, tmp_path):
    cases = [refer(key=f"k{i}")["case_id"] for i in range(6)]
    due = rows(runtime, Deadline, Deadline.status == "open")
    assert sorted(d.case_id for d in due) == cases
    now = (START + timedelta(days=10)).isoformat()
    workers = [
        start_cli(runtime.settings.database_url, tmp_path, "tick", "--now", now, "--allow-future")
        for _ in range(3)
    ]
    results = []
    for w in workers:
        out, err = w.communicate(timeout=180)
        assert w.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    assert sum(r["breached"] for r in results) == len(due), results
    assert all(r["failed"] == [] for r in results)

    after = rows(runtime, Deadline, Deadline.id.in_([d.id for d in due]))
    assert {d.status for d in after} == {"breached"}
    breaches = audit_docs(runtime, AuditEvent.action == "tick:deadline:breach")
    assert sorted(d["case_id"] for d in breaches) == cases
    notices = rows(runtime, Outbox, Outbox.kind == "deadline_breached")
    per_case = Counter(n.case_id for n in notices)
    managers = len(breaches[0]["summary"]["notified"])
    assert managers >= 1
    assert per_case == dict.fromkeys(cases, managers)
    assert len({(n.case_id, n.recipient_user_id) for n in notices}) == len(notices)
    assert runtime.verify_audit().ok


# --- several servers, and a SIGKILL under load -----------------------------------------


@dataclass
class Server:
    url: str
    cwd: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.cwd / f"serve-{self.port}.log"

    def start(self) -> Server:
        # The server's log goes to a file: a pipe nobody reads would fill and stall it.
        with self.log.open("a") as log:
            self.proc = start_cli(
                self.url, self.cwd, "serve", "--port", str(self.port), log=log,
                REFERRAL_ENGINE_AUDIT_SEAL_INTERVAL_SECONDS="0.2",
            )  # fmt: skip
        return self

    def wait(self) -> Server:
        assert self.proc is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if call(self.base, "GET", "/healthz", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not come up")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def is_paused(case: dict[str, Any]) -> bool:
    return any(d["status"] == "paused" for d in case["deadlines"])


@dataclass
class Load:
    """Client threads pausing and resuming random cases on random servers."""

    servers: list[Server]
    token: str
    cases: list[int]
    acked: list[tuple[int, int, str]] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self, seed: int) -> None:
        rnd = random.Random(seed)
        while not self.stop.is_set():
            server = rnd.choice(self.servers)
            case_id = rnd.choice(self.cases)
            try:
                seen = call(server.base, "GET", f"/api/cases/{case_id}", token=self.token)
                if seen.status != 200:
                    self.statuses[f"view {seen.status}"] += 1
                    continue
                event = "resume" if is_paused(seen.body) else "pause"
                data = {"reason": f"Waiting on housing (client {seed})"} if event == "pause" else {}
                server = rnd.choice(self.servers)
                r = call(server.base, "POST", f"/api/cases/{case_id}/events", token=self.token,
                         json_body={"event": event, "data": data,
                                    "expected_version": seen.body["version"]})  # fmt: skip
            except (OSError, http.client.HTTPException):
                self.statuses["no answer"] += 1  # that server is down: not acknowledged
                time.sleep(0.01)
                continue
            self.statuses[r.status] += 1
            if r.status == 200:
                self.acked.append((case_id, r.body["version"], event))
            elif r.status != 409 or "problem+json" not in r.headers.get("content-type", ""):
                self.statuses[f"unexpected {r.status} {r.body!r:.200}"] += 1


def test_two_servers_and_a_sigkill_under_load_lose_nothing(runtime, refer, staff, tmp_path):
    cases = [refer(key=f"crash{i}")["case_id"] for i in range(3)]  # few: clients collide
    url = runtime.settings.database_url
    a, b = Server(url, tmp_path).start(), Server(url, tmp_path).start()
    try:
        a.wait()
        b.wait()
        load = Load([a, b], sign_in(a.base, "manager"), cases)
        clients = [threading.Thread(target=load.client, args=(i,)) for i in range(4)]
        for c in clients:
            c.start()
        deadline = time.monotonic() + 60
        while len(load.acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        a.kill()  # mid-load: requests to it are in flight
        acked_at_kill = len(load.acked)
        a.start()  # restarting on the same database while b carries on
        while len(load.acked) < acked_at_kill + 5 and time.monotonic() < deadline:
            time.sleep(0.02)  # b carries on alone
        load.stop.set()
        for c in clients:
            c.join(timeout=60)
        assert not any(c.is_alive() for c in clients)
        assert not [s for s in load.statuses if str(s).startswith("unexpected")], load.statuses
        assert load.statuses[200] >= 25, load.statuses

        a.wait()
        (case_id, version, event) = max(load.acked)
        latest = call(a.base, "GET", f"/api/cases/{case_id}", token=load.token)
        assert latest.status == 200
        follow = "resume" if is_paused(latest.body) else "pause"
        data = {"reason": "After the restart"} if follow == "pause" else {}
        r = call(a.base, "POST", f"/api/cases/{case_id}/events", token=load.token,
                 json_body={"event": follow, "data": data,
                            "expected_version": latest.body["version"]})  # fmt: skip
        assert r.status == 200, r.body
        load.acked.append((case_id, r.body["version"], follow))
    finally:
        a.stop()
        b.stop()

    written = rows(runtime, CaseHistory, CaseHistory.case_id.in_(cases))
    history = {(h.case_id, h.version): h for h in written}
    for case_id, version, event in load.acked:  # every acknowledged event is there
        assert history[(case_id, version)].event == event
    assert len(set(load.acked)) == len(load.acked)  # no version was acknowledged twice
    for case in rows(runtime, Case, Case.id.in_(cases)):  # nothing half-applied
        versions = sorted(v for (c, v) in history if c == case.id)
        assert versions == list(range(1, case.version + 1)), (case.id, case.version, versions)
        last = history[(case.id, case.version)]
        assert case.state == last.to_state
        paused = [d for d in rows(runtime, Deadline, Deadline.case_id == case.id)
                  if d.status == "paused"]  # fmt: skip
        assert bool(paused) == (last.event == "pause"), (case.id, last.event)
    changes = audit_docs(runtime, AuditEvent.case_id.in_(cases), AuditEvent.outcome == "allowed",
                         AuditEvent.action.in_(["api:case:pause", "api:case:resume"]))  # fmt: skip
    audited = Counter((d["case_id"], d["summary"]["version"]) for d in changes)
    expected = {(c, v) for (c, v), h in history.items() if h.event in ("pause", "resume")}
    assert set(audited) == expected and set(audited.values()) == {1}
    verified = runtime.verify_audit(deep=True)
    assert verified.ok, verified.reason
