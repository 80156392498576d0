"""MARAC actions as people work them, and what a case page offers (issue 18):

- an action is completed by choosing it from the case's open actions, never by typing
  its id; a completed action stays on the meeting's agenda, shown as done;
- an action's deadline falls on its own due date on the UK calendar (it read a day late:
  the next day's midnight);
- a case offers only the events whose case-only guards pass now ("Pause" on a paused
  case, a hearing before its meeting's day), and says why the others are held back.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from conftest import START
from test_dates_that_cannot_be import context
from test_pages_meetings import TODAY, article, new_meeting, refer_marac

from referral_engine.clock import LONDON
from referral_engine.pathways.effects import EFFECTS, SetDeadline


def test_an_actions_deadline_is_on_its_own_date_in_winter_and_summer():
    effect = EFFECTS["add_actions"]
    for due in ("2026-12-09", "2027-06-10"):
        ctx = context(data={"actions": [{"owner_agency": "police", "description": "Flag it",
                                         "due": due}]})  # fmt: skip
        ops = effect.plan(ctx, effect.params.model_validate({"field": "actions"}))
        (deadline,) = [op for op in ops if isinstance(op, SetDeadline)]
        local = deadline.due_at.astimezone(LONDON)
        assert local.date() == date.fromisoformat(due), local
        # ...and runs to the end of that day.
        assert (local + timedelta(seconds=1)).date() == date.fromisoformat(due) + timedelta(1)


def test_an_action_is_chosen_from_the_open_ones_and_stays_on_the_agenda_done(
    browser_for, runtime, staff, refer, fire
):
    meeting = new_meeting(runtime, staff, TODAY)
    case_id = refer_marac(refer, 1, yes=15)
    fire(case_id, "coordinator", "accept")
    fire(case_id, "coordinator", "list", {"meeting_id": meeting})
    fire(case_id, "coordinator", "hear", {"risks": "Threats to kill", "actions": [
        {"owner_agency": "housing", "description": "Move her to a refuge",
         "due": (TODAY + timedelta(days=10)).isoformat()},
        {"owner_agency": "police", "description": "Flag the address",
         "due": (TODAY + timedelta(days=14)).isoformat()},
    ]})  # fmt: skip
    coordinator = browser_for("coordinator")

    def action_select(html: str) -> str:
        form = html[html.index('id="event-complete_action"') :]
        form = form[: form.index("</form>")]
        found = re.search(r'<select[^>]*name="action_id".*?</select>', form, re.S)
        assert found, "complete_action offers no choice of action"
        return found.group(0)

    offered = action_select(coordinator.get(f"/cases/{case_id}").text)
    assert '<option value="A1">A1: Move her to a refuge</option>' in offered
    assert '<option value="A2">A2: Flag the address</option>' in offered

    fire(case_id, "coordinator", "complete_action", {"action_id": "A2", "outcome": "Flag set"})
    offered = action_select(coordinator.get(f"/cases/{case_id}").text)
    assert "A1: Move her to a refuge" in offered and "A2" not in offered

    block = article(coordinator.get(f"/meetings/{meeting}").text, "Erin Price")
    row = next(r for r in re.findall(r"<tr.*?</tr>", block, re.S) if "Flag the address" in r)
    assert "Done" in row and "Outcome: Flag set" in row
    assert "Move her to a refuge" in block


def test_a_paused_case_offers_resume_not_pause_and_says_why(users):
    manager = users["manager"]
    made = users["teacher"].post(
        "/api/referrals",
        json={"subject": {"given_name": "Jo", "family_name": "Bloggs"}, "concerns": ["neglect"],
              "summary": "Hungry.", "consent": "given"},
    )  # fmt: skip
    case_id = made.json()["case_id"]

    def offers():
        case = manager.get(f"/api/cases/{case_id}").json()
        return (
            {e["event"] for e in case["available_events"]},
            {e["event"]: e["reason"] for e in case["blocked_events"]},
            case["version"],
        )

    events, blocked, version = offers()
    assert "pause" in events and "resume" not in events
    assert blocked["resume"] == "the clock is not paused"
    r = manager.post(f"/api/cases/{case_id}/events", json={
        "event": "pause", "data": {"reason": "Waiting for the police"}, "expected_version": version,
    })  # fmt: skip
    assert r.status_code == 200, r.text
    events, blocked, _ = offers()
    assert "resume" in events and "pause" not in events
    assert blocked == {"pause": "the clock is already paused"}


def test_a_hearing_is_not_offered_before_its_meeting_day(runtime, staff, refer, fire, clock):
    meeting = new_meeting(runtime, staff, TODAY + timedelta(days=7))
    case_id = refer_marac(refer, 2, yes=15)
    fire(case_id, "coordinator", "accept")
    fire(case_id, "coordinator", "list", {"meeting_id": meeting})
    coordinator = staff["coordinator"].actor
    seen = runtime.cases.view(coordinator, case_id)
    assert "hear" not in {e["event"] for e in seen["available_events"]}
    (held,) = seen["blocked_events"]
    assert held["event"] == "hear"
    assert held["reason"] == "The meeting is on 2 December 2026; record it on or after that day"
    clock.at = START + timedelta(days=7)
    seen = runtime.cases.view(coordinator, case_id)
    assert "hear" in {e["event"] for e in seen["available_events"]}
    assert seen["blocked_events"] == []


def test_channel_keeps_a_support_plan_carried_over_to_the_next_panel(
    browser_for, runtime, staff, refer, fire, clock
):
    first = new_meeting(runtime, staff, TODAY, pathway="channel")
    second = new_meeting(runtime, staff, TODAY + timedelta(days=28), pathway="channel")
    case_id = refer(
        "prevent", pathway="channel", concerns=["radicalisation"],
        subject={"given_name": "Sami", "family_name": "Okafor", "date_of_birth": "1999-02-03"},
        summary="Sharing extremist material.",
    )["case_id"]  # fmt: skip
    fire(case_id, "prevent", "start_gateway")
    fire(case_id, "prevent", "pass_to_panel")
    fire(case_id, "chair", "record_vaf", {
        "engagement": "low", "intent": "low", "capability": "none", "factors": [],
        "summary": "Early concern",
    })  # fmt: skip
    fire(case_id, "chair", "list_for_panel", {"meeting_id": first})
    fire(case_id, "chair", "adopt", {"rationale": "Vulnerable; support will help"})
    fire(case_id, "chair", "record_consent", {"consent": True, "by": "subject"})
    due = (TODAY + timedelta(days=7)).isoformat()
    for owner, what in (("education", "Mentor from the college"), ("health", "GP review")):
        fire(case_id, "chair", "add_action",
             {"owner_agency": owner, "description": what, "due": due})  # fmt: skip
    fire(case_id, "chair", "complete_action", {"action_id": "A2", "outcome": "Seen by GP"})

    clock.at = START + timedelta(days=21)  # past due, before the next panel
    chair = browser_for("chair")
    later = chair.get(f"/meetings/{second}").text
    carried = later[later.index('id="carried-over"') :]
    assert "Sami Okafor" in carried and "Mentor from the college" in carried
    assert "GP review" not in carried  # done: nothing to carry
    page = chair.get(f"/cases/{case_id}").text
    form = page[page.index('id="event-complete_action"') :]
    assert (
        '<option value="A1">A1: Mentor from the college</option>' in form[: form.index("</form>")]
    )
