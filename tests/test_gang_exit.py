"""Gang exit through the API: a gang worker refers straight into the pathway, checks
eligibility, assesses, agrees a plan across the person's needs, records progress, and the
person exits (follow-ups at 3 and 6 months raised by `tick`) or is found ineligible or
disengages. The pathway clock can be paused and resumed; paused time does not count and
the pause history is kept.

Each test runs on SQLite and on PostgreSQL (the `runtime` fixture).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, START, Team, referral_body
from dateutil.relativedelta import relativedelta

from referral_engine.storage.models import Outbox

YOUTH = {
    "given_name": "Tyrese",
    "family_name": "Walker",
    "date_of_birth": "2009-02-14",
    "gender": "male",
    "address": "12 Canal Row",
    "postcode": "AB3 4EF",
}
PLAN = {"needs": ["housing", "education_employment"], "goals": "College place; move away."}
NEEDS = {"housing", "education_employment", "health", "substance_misuse", "relocation", "family"}


# --- helpers ---------------------------------------------------------------------------


def ok(r, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def error_fields(r) -> set[str]:
    return {e["field"] for e in r.json().get("errors") or []}


def at(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    assert t.tzinfo is not None, value
    return t


def refresh(*people) -> None:
    """Sign in again: tokens expire after 30 minutes of the product's clock."""
    for p in people:
        r = p.client.post("/api/auth/token", data={"username": p.username, "password": PASSWORD})
        p.token = ok(r)["access_token"]


@pytest.fixture
def users(runtime, client) -> Team:
    return Team(runtime, client)


def view(person, case_id: int) -> dict[str, Any]:
    return ok(person.get(f"/api/cases/{case_id}"))


def fire(person, case_id: int, event: str, data: dict | None = None):
    version = view(person, case_id)["version"]
    body = {"event": event, "data": data or {}, "expected_version": version}
    return person.post(f"/api/cases/{case_id}/events", json=body)


def step(person, case_id: int, event: str, data: dict | None = None) -> dict[str, Any]:
    return ok(fire(person, case_id, event, data))


def refer(person, **overrides) -> dict[str, Any]:
    body = referral_body(
        pathway="gang_exit", subject=dict(YOUTH), concerns=["gang_involvement"],
        summary="Wants out of the gang after a stabbing.", **overrides,
    )  # fmt: skip
    return ok(person.post("/api/referrals", json=body), 201)


def deadline(case: dict[str, Any], name: str) -> dict[str, Any]:
    (d,) = [d for d in case["deadlines"] if d["name"] == name]
    return d


def walk_to(gangs, state: str) -> int:
    """A new gang-exit case moved to `state` along the happy path."""
    case_id = refer(gangs)["case_id"]
    path = [
        ("eligibility", "check_eligibility", {}),
        ("assessment", "start_assessment", {}),
        ("intervention", "agree_plan", PLAN),
        ("exited", "exit", {"reason": "Moved to college out of town."}),
    ]
    for target, event, data in path:
        if view(gangs, case_id)["state"] == state:
            break
        assert step(gangs, case_id, event, data)["state"] == target
    assert view(gangs, case_id)["state"] == state
    return case_id


def reminders(runtime, case_id: int) -> list[str]:
    """The deadline names of the reminders queued for this case, in order."""
    with runtime.db.reading() as s:
        rows = s.execute(
            sa.select(Outbox.payload)
            .where(Outbox.case_id == case_id, Outbox.kind == "deadline_reminder")
            .order_by(Outbox.id)
        ).scalars()
        return [p["deadline"] for p in rows]


# --- who may refer ---------------------------------------------------------------------


def test_only_a_gang_worker_refers_straight_into_gang_exit(users):
    body = referral_body(pathway="gang_exit", subject=dict(YOUTH), concerns=["gang_involvement"])
    for who in ("teacher", "constable", "officer", "manager", "prevent"):
        r = users[who].post("/api/referrals", json=body)
        assert r.status_code == 403, (who, r.text)
        assert "gang_exit" in r.json()["detail"]
    created = refer(users["gangs"])
    assert created["pathway"] == "gang_exit" and created["state"] == "referred"
    case = view(users["gangs"], created["case_id"])
    assert case["pathway"] == "gang_exit" and case["state"] == "referred"
    assert case["referral"]["agency_kind"] == "local_authority"
    # The MASH cannot see a gang-exit case: it is not theirs to know.
    assert users["officer"].get(f"/api/cases/{created['case_id']}").status_code == 404


# --- the happy path --------------------------------------------------------------------


def test_happy_path_with_plan_progress_exit_and_follow_ups_at_3_and_6_months(users, runtime, clock):
    gangs = users["gangs"]
    case_id = refer(gangs)["case_id"]
    events = {e["event"] for e in view(gangs, case_id)["available_events"]}
    assert "check_eligibility" in events and "agree_plan" not in events

    # agree_plan is not valid before the assessment.
    assert fire(gangs, case_id, "agree_plan", PLAN).status_code == 409
    assert step(gangs, case_id, "check_eligibility")["state"] == "eligibility"
    assert step(gangs, case_id, "start_assessment")["state"] == "assessment"

    # The plan's needs come from the vocabulary, at least one.
    described = {e["event"]: e for e in view(gangs, case_id)["available_events"]}
    assert set(described["agree_plan"]["data"]["needs"]["choices"]) == NEEDS
    r = fire(gangs, case_id, "agree_plan", {"needs": ["jetpack"], "goals": "g"})
    assert r.status_code == 422 and "needs.0" in error_fields(r), r.text
    r = fire(gangs, case_id, "agree_plan", {"needs": ["housing", "jetpack"], "goals": "g"})
    assert r.status_code == 422 and "needs.1" in error_fields(r), r.text
    r = fire(gangs, case_id, "agree_plan", {"needs": [], "goals": "g"})
    assert r.status_code == 422 and "needs" in error_fields(r), r.text
    r = fire(gangs, case_id, "agree_plan", {"needs": ["housing"]})
    assert r.status_code == 422 and "goals" in error_fields(r), r.text
    assert view(gangs, case_id)["state"] == "assessment"  # refusals changed nothing

    planned = step(gangs, case_id, "agree_plan", PLAN)
    assert planned["state"] == "intervention"
    assert planned["case"]["attributes"]["needs"] == PLAN["needs"]
    assert planned["case"]["attributes"]["goals"] == PLAN["goals"]

    # Progress is repeatable and stays in intervention.
    for summary in ("Attended college induction.", "Housing offer accepted."):
        assert step(gangs, case_id, "record_progress", {"summary": summary})["state"] == (
            "intervention"
        )
    progress = view(gangs, case_id)["attributes"]["progress"]
    assert [p["summary"] for p in progress] == [
        "Attended college induction.", "Housing offer accepted.",
    ]  # fmt: skip
    r = fire(gangs, case_id, "record_progress", {})
    assert r.status_code == 422 and "summary" in error_fields(r)

    exited_at = clock.now()
    exited = step(gangs, case_id, "exit", {"reason": "Completed the programme."})
    assert exited["state"] == "exited"
    case = exited["case"]
    assert case["attributes"]["exit_reason"] == "Completed the programme."
    due_3m, due_6m = exited_at + relativedelta(months=3), exited_at + relativedelta(months=6)
    assert at(deadline(case, "follow_up_3m")["due_at"]) == due_3m
    assert at(deadline(case, "follow_up_6m")["due_at"]) == due_6m

    # Not before three months.
    clock.at = due_3m - timedelta(hours=1)
    assert runtime.scheduler.tick().reminded == []
    assert reminders(runtime, case_id) == []

    # At three months: the first follow-up, and only that one.
    clock.at = due_3m + timedelta(hours=1)
    first = runtime.scheduler.tick()
    assert len(first.reminded) == 1 and first.breached == []
    assert reminders(runtime, case_id) == ["follow_up_3m"]
    assert runtime.scheduler.tick().reminded == []  # idempotent
    refresh(gangs)
    case = view(gangs, case_id)
    assert deadline(case, "follow_up_3m")["status"] == "reminded"
    assert deadline(case, "follow_up_6m")["status"] == "open"
    assert step(gangs, case_id, "follow_up", {"summary": "Settled at college."})["state"] == (
        "follow_up"
    )

    # Not before six months.
    clock.at = due_6m - timedelta(hours=1)
    assert runtime.scheduler.tick().reminded == []
    clock.at = due_6m + timedelta(hours=1)
    assert len(runtime.scheduler.tick().reminded) == 1
    assert reminders(runtime, case_id) == ["follow_up_3m", "follow_up_6m"]
    refresh(gangs)
    closed = step(gangs, case_id, "follow_up", {"summary": "No gang contact since exit."})
    assert closed["state"] == "closed"
    case = view(gangs, case_id)
    assert case["closed"] is True
    assert [f["summary"] for f in case["attributes"]["follow_ups"]] == [
        "Settled at college.", "No gang contact since exit.",
    ]  # fmt: skip
    history = ok(gangs.get(f"/api/cases/{case_id}/history"))["history"]
    assert [h["event"] for h in history] == [
        "open", "check_eligibility", "start_assessment", "agree_plan", "record_progress",
        "record_progress", "exit", "follow_up", "follow_up",
    ]  # fmt: skip
    assert runtime.verify_audit().ok


# --- the other ways out ----------------------------------------------------------------


def test_reject_makes_the_case_ineligible(users):
    gangs = users["gangs"]
    case_id = refer(gangs)["case_id"]
    assert fire(gangs, case_id, "reject", {"reason": "Too early"}).status_code == 409
    step(gangs, case_id, "check_eligibility")
    r = fire(gangs, case_id, "reject", {})
    assert r.status_code == 422 and "reason" in error_fields(r)
    done = step(gangs, case_id, "reject", {"reason": "Lives outside the area."})
    assert done["state"] == "ineligible"
    case = view(gangs, case_id)
    assert case["closed"] is True and case["available_events"] == []
    assert case["attributes"]["ineligible_reason"] == "Lives outside the area."


@pytest.mark.parametrize("state", ["assessment", "intervention"])
def test_disengage_from_assessment_and_from_intervention(users, state):
    gangs = users["gangs"]
    case_id = walk_to(gangs, state)
    r = fire(gangs, case_id, "disengage", {})
    assert r.status_code == 422 and "reason" in error_fields(r)
    done = step(gangs, case_id, "disengage", {"reason": "Stopped answering calls."})
    assert done["from_state"] == state and done["state"] == "disengaged"
    case = view(gangs, case_id)
    assert case["closed"] is True
    assert case["attributes"]["disengage_reason"] == "Stopped answering calls."


def test_disengage_is_refused_before_the_assessment(users):
    gangs = users["gangs"]
    case_id = walk_to(gangs, "eligibility")
    r = fire(gangs, case_id, "disengage", {"reason": "r"})
    assert r.status_code == 409, r.text
    assert view(gangs, case_id)["state"] == "eligibility"


# --- pausing the clock -----------------------------------------------------------------


def test_pause_and_resume_keep_history_and_paused_time_does_not_count(users, runtime, clock):
    gangs = users["gangs"]
    case_id = walk_to(gangs, "exited")
    exited_at = clock.now()
    original_3m = exited_at + relativedelta(months=3)
    original_6m = exited_at + relativedelta(months=6)

    # Resume when not paused is refused.
    r = fire(gangs, case_id, "resume")
    assert r.status_code == 422, r.text
    assert "not paused" in r.text
    r = fire(gangs, case_id, "pause", {})
    assert r.status_code == 422 and "reason" in error_fields(r)

    clock.advance(timedelta(minutes=5))
    paused_at = clock.now()
    paused = step(gangs, case_id, "pause", {"reason": "Waiting for the housing provider."})
    assert paused["state"] == "exited"  # pausing does not move the case
    case = paused["case"]
    assert case["attributes"]["paused"] is True
    assert deadline(case, "follow_up_3m")["status"] == "paused"

    # Pausing twice is refused, and changes nothing.
    version = view(gangs, case_id)["version"]
    r = fire(gangs, case_id, "pause", {"reason": "again"})
    assert r.status_code == 422, r.text
    assert "already paused" in r.text
    assert view(gangs, case_id)["version"] == version

    # Five days pass while paused.
    clock.advance(timedelta(days=5))
    refresh(gangs)
    resumed_at = clock.now()
    resumed = step(gangs, case_id, "resume")
    assert resumed["state"] == "exited"
    r = fire(gangs, case_id, "resume")
    assert r.status_code == 422 and "not paused" in r.text

    case = view(gangs, case_id)
    assert case["attributes"]["paused"] is False
    for name, original in (("follow_up_3m", original_3m), ("follow_up_6m", original_6m)):
        d = deadline(case, name)
        assert d["status"] == "open", d
        assert at(d["due_at"]) == original + timedelta(days=5), d

    # The history of the pause is kept: why, from when, until when.
    (pause,) = case["attributes"]["pauses"]
    assert pause["reason"] == "Waiting for the housing provider."
    assert at(pause["from"]) == paused_at
    assert at(pause["to"]) == resumed_at

    # The follow-up falls due five days later than it would have.
    clock.at = original_3m + timedelta(hours=1)
    assert runtime.scheduler.tick().reminded == []
    clock.at = original_3m + timedelta(days=5, hours=1)
    assert len(runtime.scheduler.tick().reminded) == 1
    assert reminders(runtime, case_id) == ["follow_up_3m"]

    # A second pause adds to the history rather than replacing it.
    refresh(gangs)
    step(gangs, case_id, "pause", {"reason": "Person in hospital."})
    clock.advance(timedelta(days=1))
    refresh(gangs)
    step(gangs, case_id, "resume")
    pauses = view(gangs, case_id)["attributes"]["pauses"]
    assert [p["reason"] for p in pauses] == [
        "Waiting for the housing provider.", "Person in hospital.",
    ]  # fmt: skip
    assert all(p["to"] is not None for p in pauses)
    assert at(deadline(view(gangs, case_id), "follow_up_6m")["due_at"]) == original_6m + timedelta(
        days=6
    )


def test_the_clock_can_be_paused_in_intervention_before_any_deadline(users, clock):
    gangs = users["gangs"]
    case_id = walk_to(gangs, "intervention")
    assert step(gangs, case_id, "pause", {"reason": "Waiting for probation."})["state"] == (
        "intervention"
    )
    # Work goes on while the clock is paused.
    step(gangs, case_id, "record_progress", {"summary": "Still attending."})
    clock.advance(timedelta(minutes=10))
    step(gangs, case_id, "resume")
    case = view(gangs, case_id)
    assert case["state"] == "intervention" and case["attributes"]["paused"] is False
    (pause,) = case["attributes"]["pauses"]
    assert (at(pause["from"]), at(pause["to"])) == (START, START + timedelta(minutes=10))
    assert pause["reason"] == "Waiting for probation." and pause["by"] == "Gangs"
