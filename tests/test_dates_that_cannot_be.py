"""Dates that cannot be (issue 18): a MARAC hearing before its meeting, a Channel review or
a gang-exit follow-up before it is due, an NRM decision dated before its referral, and
`tick --now` ahead of real time breaching deadlines that have not passed.

The guards are pure and tested on a snapshot without a database; the workflow YAML that
lists them, the NRM event and the tick command run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import START

from referral_engine.access.rules import Actor
from referral_engine.pathways.definitions import Workflows
from referral_engine.pathways.guards import GUARDS
from referral_engine.pathways.snapshot import Context, DeadlineView, Snapshot
from referral_engine.policies.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
POLICY = load_policy(ROOT / "policies")
ACTOR = Actor(1, "x", "X", ("marac_coordinator",), None, None, None, ())


def context(attributes=None, deadlines=None, data=None, now=START, received=START) -> Context:
    snap = Snapshot(
        case_id=1, pathway="p", state="s", version=1, workflow_version="1",
        attributes=attributes or {}, rag=None, opened_at=received, received_at=received,
        subject={}, is_child=False, person_id=None, referral_id=None, referrer_id=None,
        agency_id=None, allocated_to_id=None, assigned_to_id=None, deadlines=deadlines or {},
    )  # fmt: skip
    return Context(snap, "e", data or {}, ACTOR, now, POLICY, frozenset())


def run(name: str, params: dict, ctx: Context):
    guard = GUARDS[name]
    return guard.check(ctx, guard.params.model_validate(params))


# --- pure guards -----------------------------------------------------------------------


def test_a_hearing_waits_for_its_meeting_day_on_the_uk_calendar():
    params = {"attribute": "meeting_date", "what": "The meeting"}
    day_before = context({"meeting_date": "2026-11-26"})  # START is 25 November, 10:00
    assert run("date_reached", params, day_before) == (
        "event", "The meeting is on 26 November 2026; record it on or after that day",
    )  # fmt: skip
    assert run("date_reached", params, context({"meeting_date": "2026-11-25"})) is None
    # 00:30 on the 26th in summer time is still the 25th in UTC: the UK day counts.
    bst = datetime(2027, 6, 25, 23, 30, tzinfo=UTC)
    assert run("date_reached", params, context({"meeting_date": "2027-06-26"}, now=bst)) is None


def test_reviews_and_follow_ups_wait_until_they_are_due():
    due6 = DeadlineView("review_6m", "Channel review six months after exit", START, "open")
    due12 = DeadlineView("review_12m", "Channel review twelve months after exit",
                         START + timedelta(days=180), "open")  # fmt: skip
    params = {"deadlines": ["review_6m", "review_12m"], "count": "reviews"}
    early = context(deadlines={"review_6m": due6, "review_12m": due12}, now=START - timedelta(1))
    field, reason = run("deadline_reached", params, early)
    assert field == "event"
    assert reason == "the channel review six months after exit is not due until 25 November 2026"
    on_time = context(deadlines={"review_6m": due6, "review_12m": due12})
    assert run("deadline_reached", params, on_time) is None
    # After the first review, the second waits for its own deadline.
    second = context({"reviews": [{}]}, deadlines={"review_12m": due12})
    assert "not due until" in run("deadline_reached", params, second)[1]
    # Reminded by tick (no longer open): due.
    assert run("deadline_reached", params, context({"reviews": [{}]})) is None


def test_a_decision_date_is_not_before_the_referral_nor_an_earlier_decision():
    params = {"field": "decided_on", "after": "rg_on", "after_what": "the reasonable grounds"}
    assert run("date_in_range", params, context(data={"decided_on": "2026-11-24"})) == (
        "decided_on", "cannot be before the referral was received (25 November 2026)",
    )  # fmt: skip
    assert run("date_in_range", params, context(data={"decided_on": "2026-11-25"})) is None
    when = {"now": START + timedelta(days=40), "received": START - timedelta(days=3)}
    later = context({"rg_on": "2026-11-25"}, data={"decided_on": "2026-11-25"}, **when)
    assert run("date_in_range", params, later) is None
    earlier = context({"rg_on": "2026-11-25"}, data={"decided_on": "2026-11-23"}, **when)
    assert run("date_in_range", params, earlier)[1] == (
        "cannot be before the reasonable grounds (25 November 2026)"
    )


def test_the_workflows_guard_the_dated_events():
    workflows = Workflows(ROOT / "workflows", POLICY)

    def guards(pathway: str, event: str) -> list[str]:
        return [g for g, _ in workflows.get(pathway).definition.events[event].guards]

    assert "date_reached" in guards("marac", "hear")
    assert "deadline_reached" in guards("channel", "review")
    assert "deadline_reached" in guards("gang_exit", "follow_up")
    assert "date_in_range" in guards("nrm", "record_reasonable_grounds")
    assert "date_in_range" in guards("nrm", "record_conclusive_grounds")


# --- through the engine and the command line ---------------------------------------------


def test_an_nrm_decision_dated_before_its_referral_is_a_clear_422(users):
    responder = users["responder"]
    body = {
        "pathway": "nrm", "subject": {"given_name": "Ana", "family_name": "Pop",
                                      "date_of_birth": "2010-02-02"},
        "concerns": ["modern_slavery"], "summary": "Found working in a car wash.",
        "consent": "not_sought", "consent_reason": "A child",
    }  # fmt: skip
    made = responder.post("/api/referrals", json=body)
    assert made.status_code == 201, made.text
    case_id = made.json()["case_id"]

    def fire(event: str, data: dict):
        version = responder.get(f"/api/cases/{case_id}").json()["version"]
        return responder.post(
            f"/api/cases/{case_id}/events",
            json={"event": event, "data": data, "expected_version": version},
        )

    assert fire("submit_referral", {"exploitation_types": ["labour"]}).status_code == 200
    r = fire("record_reasonable_grounds", {"decision": "positive", "decided_on": "2026-11-01"})
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == "decided_on"
    assert error["reason"] == "cannot be before the referral was received (25 November 2026)"
    ok = fire("record_reasonable_grounds", {"decision": "positive", "decided_on": "2026-11-25"})
    assert ok.status_code == 200, ok.text


def test_tick_in_the_future_is_refused_unless_asked_for_and_then_says_so(cli):
    ahead = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    refused = cli("tick", "--now", ahead)
    assert refused.returncode == 2
    assert "ahead of the real time" in refused.stderr and "--allow-future" in refused.stderr
    assert refused.stdout == ""
    allowed = cli("tick", "--now", ahead, "--allow-future")
    assert allowed.returncode == 0, allowed.stderr
    assert "ahead of the real time: deadlines due before then are breached now" in allowed.stderr
    assert json.loads(allowed.stdout)["failed"] == []
    past = cli("tick", "--now", (datetime.now(UTC) - timedelta(hours=1)).isoformat())
    assert past.returncode == 0 and past.stderr == ""
