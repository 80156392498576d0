"""Audit actions are a closed vocabulary; free text never enters the log (issue 17).

An event name no pathway has, typed by any signed-in user, and a username no account
has, typed at sign-in, are recorded as `unknown_event` / `unknown:<hash>` with a keyed
hash of the text, never the text; a lone surrogate is a clean 4xx and an audited refusal.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from conftest import AUDIT_KEY
from test_audit import EVENT, fetch

from referral_engine.audit.vocabulary import event_action, keyed_hash, unknown_username

PLANTED = "Jo Bloggs 1 High Street AB1 2CD"


def audit_bodies(rt) -> list[bytes]:
    return [bytes(r[0]) for r in fetch(rt, sa.select(EVENT.c.body).order_by(EVENT.c.id))]


def test_known_and_unknown_events_as_actions():
    key = AUDIT_KEY.encode()
    assert event_action(key, "api", "screen", {"screen"}) == (
        "api:case:screen",
        {"event": "screen"},
    )
    action, summary = event_action(key, "api", PLANTED, {"screen"})
    assert action == "api:case:unknown_event"
    assert summary == {"event_hmac": keyed_hash(key, PLANTED)}
    assert keyed_hash(key, PLANTED) != keyed_hash(b"another key", PLANTED)
    assert len(keyed_hash(key, "\ud800")) == 64  # a lone surrogate hashes, never raises
    assert unknown_username(key, "hunter2").startswith("unknown:")


def test_an_unknown_event_is_recorded_by_a_keyed_hash_not_its_text(runtime, users, refer):
    case = refer()
    officer = users["officer"]
    r = officer.post(
        f"/api/cases/{case['case_id']}/events",
        json={"event": PLANTED, "data": {}, "expected_version": 1},
    )
    assert r.status_code == 409, r.text
    rows = [json.loads(b) for b in audit_bodies(runtime)]
    refused = [d for d in rows if d["action"] == "api:case:unknown_event"]
    assert len(refused) == 1 and refused[0]["outcome"] == "refused"
    assert refused[0]["summary"]["event_hmac"] == keyed_hash(AUDIT_KEY.encode(), PLANTED)
    assert not any(PLANTED.encode() in b for b in audit_bodies(runtime))
    assert not fetch(runtime, sa.select(EVENT.c.id).where(EVENT.c.action.contains("Bloggs")))
    assert runtime.verify_audit().ok


def test_a_lone_surrogate_event_is_a_clean_refusal_and_audited(runtime, users, refer):
    case = refer()
    officer = users["officer"]
    body = '{"event": "\\ud800", "data": {}, "expected_version": 1}'
    r = officer.client.post(
        f"/api/cases/{case['case_id']}/events", content=body,
        headers={**officer.headers, "Content-Type": "application/json"},
    )  # fmt: skip
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    rows = [json.loads(b) for b in audit_bodies(runtime)]
    refused = [d for d in rows if d["action"] == "api:case:unknown_event"]
    assert len(refused) == 1 and refused[0]["outcome"] == "refused"
    assert refused[0]["summary"]["event_hmac"] == keyed_hash(AUDIT_KEY.encode(), "\ud800")
    assert runtime.verify_audit().ok


def test_a_failed_sign_in_for_an_unknown_username_keeps_a_keyed_hash(runtime, client, staff):
    typed = "correct horse battery staple"  # a password typed into the username box
    r = client.post("/api/auth/token", data={"username": typed, "password": "x"})
    assert r.status_code == 401
    assert not any(typed.encode() in b for b in audit_bodies(runtime))
    rows = [json.loads(b) for b in audit_bodies(runtime)]
    (failed,) = [d for d in rows if d["action"] == "api:auth:sign_in"]
    assert failed["outcome"] == "refused"
    named = unknown_username(AUDIT_KEY.encode(), typed)
    assert failed["actor"]["username"] == named and failed["target"] == f"user:{named}"
    # A known username with a wrong password is named: it is an account, not free text.
    officer = staff["officer"].username
    client.post("/api/auth/token", data={"username": officer, "password": "wrong"})
    rows = [json.loads(b) for b in audit_bodies(runtime)]
    assert rows[-1]["actor"]["username"] == officer
