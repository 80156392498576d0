"""The MARAC pathway through the HTTP API: direct and onward referrals, the DASH and the
referral criteria worked out from it, children in the household referred to MASH,
meetings and their agendas, action plans chased by `tick`, IDVA allocation and
need-to-know, declining, and the whole journey ending in a verified audit chain.

Every test runs on SQLite and on PostgreSQL (conftest's `backend`). `users` is conftest's
`users`, made lazily (as in test_api.py): a test signs up and in only the people it names.
The clock is conftest's FixedClock; after moving it past the tokens' 30 minutes, `refresh`
signs the people in again.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, STAFF, START, Team, referral_body
from dateutil.relativedelta import relativedelta

from referral_engine.storage.models import Outbox

PROBLEM = "application/problem+json"
TODAY = START.date()  # Wednesday 25 November 2026


# --- who calls ---------------------------------------------------------------------------


@pytest.fixture
def users(runtime, client) -> Team:
    return Team(runtime, client)


def refresh(*people) -> None:
    """Sign in again: tokens expire 30 minutes of clock time after they were issued."""
    for person in people:
        r = person.client.post(
            "/api/auth/token", data={"username": person.username, "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        person.token = r.json()["access_token"]


def move_clock(clock, users: Team, to: datetime) -> None:
    clock.at = to
    refresh(*users.values())


# --- helpers -----------------------------------------------------------------------------


def ok(r, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def problem(r, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]
    return r.json()


def error_fields(r) -> set[str]:
    return {e["field"] for e in r.json().get("errors") or []}


def reason_for(r, field: str) -> str:
    return next(e["reason"] for e in r.json()["errors"] if e["field"] == field)


FIRST_NAMES = ["Dana", "Erin", "Freya", "Gwen", "Hana", "Iris", "Jade", "Kerry", "Lara"]


def victim(n: int = 0, **more) -> dict[str, Any]:
    """An adult victim; each `n` is a different person (name and date of birth)."""
    return {
        "given_name": FIRST_NAMES[n],
        "family_name": "Price",
        "date_of_birth": f"19{80 + n}-04-12",
        "gender": "female",
        "address": f"{n + 4} Mill Lane",
        "postcode": "AB2 3CD",
        **more,
    }


def dash(yes: int = 0, items: int = 24, **more) -> dict[str, Any]:
    """DASH answers: the first `yes` items "yes", the rest of `items` "no"."""
    answers = {str(i): ("yes" if i <= yes else "no") for i in range(1, items + 1)}
    return {"answers": answers, **more}


def marac_body(subject: dict | None = None, dash_: dict | None = None, **more) -> dict:
    return referral_body(
        pathway="marac",
        subject=subject or victim(),
        concerns=["domestic_abuse"],
        summary="Partner strangled her last night; she is terrified he will kill her.",
        consent="not_sought",
        consent_reason="High risk: referring without consent would not put her at more risk",
        victim_aware=False,
        victim_aware_reason="Telling her now could alert the abuser",
        dash=dash_ if dash_ is not None else dash(0),
        **more,
    )


def refer_marac(person, subject: dict | None = None, dash_: dict | None = None, **more) -> dict:
    created = ok(person.post("/api/referrals", json=marac_body(subject, dash_, **more)), 201)
    assert created["pathway"] == "marac" and created["state"] == "referred"
    return created


def case(person, case_id: int) -> dict[str, Any]:
    return ok(person.get(f"/api/cases/{case_id}"))


def fire(person, case_id: int, event: str, data: dict | None = None, version: int | None = None):
    if version is None:
        version = case(person, case_id)["version"]
    body = {"event": event, "data": data or {}, "expected_version": version}
    return person.post(f"/api/cases/{case_id}/events", json=body)


def new_meeting(coordinator, days_ahead: int, capacity: int = 5) -> dict[str, Any]:
    day = (TODAY + timedelta(days=days_ahead)).isoformat()
    return ok(
        coordinator.post(
            "/api/meetings", json={"pathway": "marac", "date": day, "capacity": capacity}
        ),
        201,
    )


def agenda(person, meeting_id: int) -> dict[str, Any]:
    return ok(person.get(f"/api/meetings/{meeting_id}"))


def action(owner: str, description: str, due: date) -> dict[str, str]:
    return {"owner_agency": owner, "description": description, "due": due.isoformat()}


def accepted(coordinator, case_id: int, data: dict | None = None) -> dict[str, Any]:
    return ok(fire(coordinator, case_id, "accept", data or {}))


def listed(coordinator, case_id: int, meeting_id: int | None = None) -> dict[str, Any]:
    data = {} if meeting_id is None else {"meeting_id": meeting_id}
    return ok(fire(coordinator, case_id, "list", data))


def heard(coordinator, case_id: int, actions: list[dict]) -> dict[str, Any]:
    return ok(
        fire(
            coordinator,
            case_id,
            "hear",
            {"risks": "Strangulation; threats to kill", "actions": actions},
        )
    )


def high_risk_case(coordinator, referrer=None, n: int = 0) -> int:
    """A MARAC case referred with a DASH of 14 (visible high risk), accepted."""
    case_id = refer_marac(referrer or coordinator, victim(n), dash(14))["case_id"]
    accepted(coordinator, case_id)
    return case_id


def outbox(runtime, case_id: int, kind: str) -> list[Outbox]:
    with runtime.db.reading() as s:
        return list(
            s.execute(
                sa.select(Outbox)
                .where(Outbox.case_id == case_id, Outbox.kind == kind)
                .order_by(Outbox.id)
            ).scalars()
        )


def deadlines(person, case_id: int) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in case(person, case_id)["deadlines"]}


def to_mash_decision(users, subject: dict, dash_: dict, outcome: str, feedback: str):
    """The teacher refers into MASH with a DASH; the MASH sends it onward to MARAC."""
    teacher, officer, manager = users["teacher"], users["officer"], users["manager"]
    referral = ok(
        teacher.post(
            "/api/referrals",
            json=referral_body(
                subject=subject,
                concerns=["domestic_abuse"],
                dash=dash_,
                summary="Mum has bruises and says he will kill her.",
            ),
        ),
        201,
    )
    mash_id = referral["case_id"]
    ok(fire(officer, mash_id, "screen", {"rag": "red", "rationale": "threats to kill"}))
    ok(fire(officer, mash_id, "refer_for_decision", {"rationale": "cannot wait for checks"}))
    decided = ok(
        fire(
            manager,
            mash_id,
            "decide",
            {
                "outcome": outcome,
                "onward": ["marac"],
                "rationale": "High-risk domestic abuse",
                "feedback_to_referrer": feedback,
            },
        )
    )
    assert decided["state"] == "closed"
    # A MASH manager may not see MARAC cases, so the new case is not named to them;
    # the coordinator finds it in their queue.
    assert decided["opened_cases"] == []
    queue = ok(users["coordinator"].get("/api/cases", params={"pathway": "marac"}))["items"]
    (marac_id,) = [c["id"] for c in queue if c["person_id"] == decided["case"]["person_id"]]
    return referral, mash_id, marac_id


# --- referring into MARAC ----------------------------------------------------------------


class TestReferring:
    def test_police_idva_and_coordinator_refer_directly(self, users):
        for n, who in enumerate(["constable", "idva", "coordinator"]):
            created = refer_marac(users[who], victim(n))
            seen = case(users["coordinator"], created["case_id"])
            assert seen["pathway"] == "marac" and seen["state"] == "referred", who
            assert seen["referral"]["id"] == created["id"]
            assert seen["referral"]["agency_kind"] == STAFF[who][2]
            mine = ok(users[who].get(f"/api/referrals/{created['id']}"))
            assert mine["pathway"] == "marac" and mine["status"] == "in_progress"

    def test_others_may_not_refer_straight_into_marac(self, users):
        for who in ("teacher", "officer"):
            r = users[who].post("/api/referrals", json=marac_body())
            body = problem(r, 403)
            assert "marac" in body["detail"]
        marac = ok(users["coordinator"].get("/api/cases", params={"pathway": "marac"}))
        assert marac["total"] == 0
        # The same referral into MASH is the teacher's to make.
        made = ok(
            users["teacher"].post("/api/referrals", json={**marac_body(), "pathway": "mash"}), 201
        )
        assert made["pathway"] == "mash"

    def test_mash_onward_referral_opens_a_linked_marac_case_with_the_referrals_dash(self, users):
        answers = dash(14)
        _, mash_id, marac_id = to_mash_decision(
            users, victim(), answers, "universal_services", "Signposted to domestic abuse support."
        )
        coordinator = users["coordinator"]
        marac = case(coordinator, marac_id)
        assert marac["pathway"] == "marac" and marac["state"] == "referred"
        assessment = marac["attributes"]["dash"]
        assert assessment["answers"] == answers["answers"]
        assert assessment["version"] == "partner_24"  # the teacher's agency is not police
        assert assessment["score"] == 14
        assert assessment["criteria"] == ["visible_high_risk"]
        assert marac["person_id"] == case(users["officer"], mash_id)["person_id"]
        assert marac["linked_cases"] == [{"relation": "parent", "visible": False}]
        # The auditor sees both ends of the link.
        audited = case(users["auditor"], marac_id)
        assert [(x["relation"], x["id"]) for x in audited["linked_cases"]] == [("parent", mash_id)]
        # Nobody types the DASH again: accepting needs no data at all.
        done = ok(fire(coordinator, marac_id, "accept", {}))
        assert done["state"] == "screening"
        assert done["case"]["attributes"]["criteria"] == ["visible_high_risk"]


# --- the DASH and the referral criteria -------------------------------------------------


class TestDash:
    def test_13_yes_is_below_the_threshold_and_accept_says_why(self, users):
        coordinator = users["coordinator"]
        case_id = refer_marac(coordinator, dash_=dash(13))["case_id"]
        assessment = case(coordinator, case_id)["attributes"]["dash"]
        assert assessment["score"] == 13 and assessment["version"] == "partner_24"
        assert "visible_high_risk" not in assessment["criteria"]
        r = fire(coordinator, case_id, "accept", {})
        problem(r, 422)
        assert "criteria" in error_fields(r)
        why = reason_for(r, "criteria")
        assert "13" in why and "14" in why
        assert case(coordinator, case_id)["state"] == "referred"  # nothing changed
        # Claiming the criterion does not make it hold.
        r = fire(coordinator, case_id, "accept", {"criteria": ["visible_high_risk"]})
        problem(r, 422)
        assert "criteria" in error_fields(r)
        assert case(coordinator, case_id)["state"] == "referred"

    def test_14_yes_is_visible_high_risk_and_accepted(self, users):
        coordinator, idva = users["coordinator"], users["idva"]
        case_id = refer_marac(idva, dash_=dash(14))["case_id"]
        assessment = case(coordinator, case_id)["attributes"]["dash"]
        assert assessment["score"] == 14 and assessment["version"] == "partner_24"
        assert assessment["criteria"] == ["visible_high_risk"]
        done = ok(fire(coordinator, case_id, "accept", {"criteria": ["visible_high_risk"]}))
        assert done["state"] == "screening"
        assert done["case"]["attributes"]["accepted_criteria"] == ["visible_high_risk"]

    def test_assessment_stores_its_version_answers_score_and_criteria(self, users):
        constable, coordinator = users["constable"], users["coordinator"]
        given = dash(15, items=27)
        case_id = refer_marac(constable, dash_=given)["case_id"]
        assessment = case(coordinator, case_id)["attributes"]["dash"]
        assert assessment["version"] == "police_27"
        assert assessment["answers"] == given["answers"]  # all 27, as given
        assert assessment["score"] == 15
        assert assessment["criteria"] == ["visible_high_risk"]
        # A partner agency's referral, same answers: the 24-item version.
        other = refer_marac(coordinator, victim(1), dash(15, items=24))["case_id"]
        assert case(coordinator, other)["attributes"]["dash"]["version"] == "partner_24"

        # Version, answers as given, score ("not_known" is no "yes") and criteria.
        given = dash(2, police_incidents_12m=4)
        given["answers"].update({"3": "not_known", "4": "not_known"})
        case_id = refer_marac(coordinator, victim(2), given)["case_id"]
        assessment = case(coordinator, case_id)["attributes"]["dash"]
        assert assessment["version"] == "partner_24"
        assert assessment["answers"] == given["answers"]
        assert assessment["score"] == 2
        assert assessment["criteria"] == ["potential_escalation"]
        assert case(coordinator, case_id)["attributes"]["criteria"] == ["potential_escalation"]

    def test_professional_judgement_needs_a_rationale_and_then_is_a_criterion(self, users):
        constable, coordinator = users["constable"], users["coordinator"]
        r = constable.post(
            "/api/referrals", json=marac_body(dash_=dash(3, professional_judgement=True))
        )
        problem(r, 422)
        assert "dash.rationale" in error_fields(r)
        assert ok(constable.get("/api/referrals"))["total"] == 0
        assert ok(coordinator.get("/api/cases", params={"pathway": "marac"}))["total"] == 0
        # With its reasons, it is a criterion whatever the score.
        why = "He has just been released and has named the date he will find her."
        case_id = refer_marac(constable, dash_=dash(3, professional_judgement=True, rationale=why))[
            "case_id"
        ]
        assessment = case(coordinator, case_id)["attributes"]["dash"]
        assert assessment["criteria"] == ["professional_judgement"]
        assert assessment["rationale"] == why
        assert ok(fire(coordinator, case_id, "accept", {}))["state"] == "screening"

    def test_potential_escalation_at_three_police_incidents(self, users):
        constable, coordinator = users["constable"], users["coordinator"]
        for n, (incidents, escalation) in enumerate([(2, False), (3, True)]):
            dash_ = dash(1, police_incidents_12m=incidents)
            case_id = refer_marac(constable, victim(n), dash_)["case_id"]
            assessment = case(coordinator, case_id)["attributes"]["dash"]
            assert assessment["police_incidents_12m"] == incidents
            assert ("potential_escalation" in assessment["criteria"]) is escalation, incidents
            r = fire(coordinator, case_id, "accept", {})
            if escalation:
                assert ok(r)["state"] == "screening"
            else:
                problem(r, 422)
                assert "criteria" in error_fields(r)
                assert "2 police incidents" in reason_for(r, "criteria")

    def test_repeat_at_11_months_but_not_at_13(self, users, clock):
        constable, coordinator = users["constable"], users["coordinator"]
        # Two people, first referred 13 and 11 months before "now" respectively.
        first = {}
        for n, months_ago in ((2, 13), (3, 11)):
            clock.at = START + relativedelta(months=13 - months_ago)
            refresh(constable, coordinator)
            first[n] = refer_marac(constable, victim(n), dash(14))["case_id"]
            accepted(coordinator, first[n])
        move_clock(clock, users, START + relativedelta(months=13))
        for n, repeat in ((2, False), (3, True)):
            # Same names and date of birth, a new incident; nothing else would make it MARAC.
            second = refer_marac(constable, victim(n), dash(0))["case_id"]
            assert second != first[n]
            seen = case(coordinator, second)
            assert seen["person_id"] == case(coordinator, first[n])["person_id"]
            assessment = seen["attributes"]["dash"]
            assert assessment["score"] == 0
            assert ("repeat" in assessment["criteria"]) is repeat, n
            assert ("repeat" in seen["attributes"]["criteria"]) is repeat
            r = fire(coordinator, second, "accept", {})
            if repeat:
                assert ok(r)["state"] == "screening"
            else:
                problem(r, 422)
                assert "criteria" in error_fields(r)
                assert case(coordinator, second)["state"] == "referred"


# --- children in the household ----------------------------------------------------------


class TestChildrenInTheHousehold:
    def test_each_child_gets_a_linked_mash_case_and_adults_do_not(self, users):
        constable, officer, auditor = users["constable"], users["officer"], users["auditor"]
        household = [
            {"name": "Sam Price", "relationship": "son", "age": 7},
            {"name": "Kim Price", "relationship": "daughter", "date_of_birth": "2015-03-01"},
            # 18 tomorrow: still a child today.
            {"name": "Lou Price", "relationship": "son", "date_of_birth": "2008-11-26"},
            {"name": "Ray Price", "relationship": "foster child", "is_child": True},
            {"name": "Pat Price", "relationship": "partner", "age": 40},
            # 18 today: an adult.
            {"name": "Max Price", "relationship": "son", "date_of_birth": "2008-11-25"},
            {"name": "Viv Price", "relationship": "grandmother", "date_of_birth": "1950-06-01"},
        ]
        created = refer_marac(constable, victim(household=household), dash(14))
        marac_id = created["case_id"]

        queue = ok(officer.get("/api/cases", params={"pathway": "mash"}))
        assert queue["total"] == 4
        given = sorted(item["person"]["given_name"] for item in queue["items"])
        assert given == ["Kim", "Lou", "Ray", "Sam"]

        links = case(auditor, marac_id)["linked_cases"]
        onward = {x["id"] for x in links if x["relation"] == "onward" and x["pathway"] == "mash"}
        assert onward == {item["id"] for item in queue["items"]}
        recorded_as_child = {}
        for child_id in onward:
            child = case(auditor, child_id)
            assert child["pathway"] == "mash" and child["state"] == "received"
            assert [(x["relation"], x["id"]) for x in child["linked_cases"]] == [
                ("parent", marac_id)
            ]
            assert "domestic_abuse" in child["referral"]["concerns"]
            recorded_as_child[child["referral"]["subject"]["given_name"]] = child["referral"][
                "is_child"
            ]
        # The MARAC case itself stays MARAC, and the person view links them.
        assert case(users["coordinator"], marac_id)["state"] == "referred"
        kim = next(i for i in queue["items"] if i["person"]["given_name"] == "Kim")
        person = ok(auditor.get(f"/api/people/{kim['person_id']}"))
        assert [c["parent_case_id"] for c in person["cases"]] == [marac_id]
        # Each is recorded as a child (the MASH's age rules depend on it), whichever way
        # the household entry said so: an age, a date of birth, or is_child.
        assert recorded_as_child == {"Sam": True, "Kim": True, "Lou": True, "Ray": True}

    def test_the_system_refers_a_child_by_their_names_linked_to_the_marac_case(self, users):
        constable, auditor = users["constable"], users["auditor"]
        household = [
            {"name": "Sam", "relationship": "son", "age": 7},
            {"name": "Mary Ann Price", "relationship": "daughter", "age": 9},
        ]
        marac_id = refer_marac(constable, victim(household=household), dash(14))["case_id"]
        links = case(auditor, marac_id)["linked_cases"]
        children = [case(auditor, x["id"]) for x in links if x["pathway"] == "mash"]
        names = sorted(
            (c["referral"]["subject"]["given_name"], c["referral"]["subject"]["family_name"])
            for c in children
        )
        # One word is a given name, not a family name with no given name.
        assert names == [("Mary Ann", "Price"), ("Sam", None)]
        for child in children:
            assert [(x["relation"], x["id"]) for x in child["linked_cases"]] == [
                ("parent", marac_id)
            ]
            referral = child["referral"]
            # Made by the system on behalf of the MARAC, not by the constable.
            assert referral["referrer_id"] is None
            assert referral["details"]["on_behalf_of"] == "marac"
            assert referral["details"]["parent_case_id"] == marac_id
        mine = ok(constable.get("/api/referrals"))
        assert [r["pathway"] for r in mine["items"]] == ["marac"]


# --- meetings --------------------------------------------------------------------------


class TestMeetings:
    def test_coordinator_sets_up_meetings_others_may_not_and_bad_ones_are_422(self, users):
        coordinator = users["coordinator"]
        body = {"pathway": "marac", "date": (TODAY + timedelta(days=7)).isoformat(), "capacity": 3}
        yesterday = (TODAY - timedelta(days=1)).isoformat()
        for change, field in (({"date": yesterday}, "date"), ({"capacity": 0}, "capacity")):
            r = coordinator.post("/api/meetings", json={**body, **change})
            problem(r, 422)
            assert error_fields(r) == {field}
        for who in ("officer", "idva"):
            problem(users[who].post("/api/meetings", json=body), 403)
        assert ok(coordinator.get("/api/meetings"))["items"] == []

        made = ok(coordinator.post("/api/meetings", json=body), 201)
        assert made["pathway"] == "marac" and made["date"] == body["date"]
        assert made["capacity"] == 3 and made["listed"] == 0 and made["room"] == 3
        # Today is not in the past.
        today = ok(coordinator.post("/api/meetings", json={**body, "date": TODAY.isoformat()}), 201)
        listing = ok(coordinator.get("/api/meetings", params={"pathway": "marac"}))
        assert {m["id"] for m in listing["items"]} == {made["id"], today["id"]}

    def test_list_goes_to_the_next_meeting_with_room(self, users):
        coordinator = users["coordinator"]
        later = new_meeting(coordinator, 14, capacity=5)  # made first: order is by date
        sooner = new_meeting(coordinator, 7, capacity=1)
        first, second, third = (high_risk_case(coordinator, n=n) for n in range(3))

        got = listed(coordinator, first)
        assert got["state"] == "listed"
        assert got["case"]["attributes"]["meeting_id"] == sooner["id"]
        got = listed(coordinator, second)  # the sooner meeting is full
        assert got["case"]["attributes"]["meeting_id"] == later["id"]
        assert got["case"]["attributes"]["meeting_date"] == later["date"]

        r = fire(coordinator, third, "list", {"meeting_id": sooner["id"]})
        problem(r, 422)
        assert "meeting_id" in error_fields(r)
        assert "full" in reason_for(r, "meeting_id")
        assert case(coordinator, third)["state"] == "screening"

        rooms = {m["id"]: m for m in ok(coordinator.get("/api/meetings"))["items"]}
        assert (rooms[sooner["id"]]["listed"], rooms[sooner["id"]]["room"]) == (1, 0)
        assert (rooms[later["id"]]["listed"], rooms[later["id"]]["room"]) == (1, 4)

    def test_no_meeting_with_room_is_422_naming_meeting_id(self, users):
        coordinator = users["coordinator"]
        case_id = high_risk_case(coordinator)
        r = fire(coordinator, case_id, "list", {})
        problem(r, 422)
        assert "meeting_id" in error_fields(r)
        assert case(coordinator, case_id)["state"] == "screening"
        full = new_meeting(coordinator, 7, capacity=1)
        listed(coordinator, high_risk_case(coordinator, n=1))
        r = fire(coordinator, case_id, "list", {})
        problem(r, 422)
        assert "meeting_id" in error_fields(r)
        # A meeting set up for it is found.
        room = new_meeting(coordinator, 21, capacity=2)
        assert room["id"] != full["id"]
        assert listed(coordinator, case_id)["case"]["attributes"]["meeting_id"] == room["id"]


class TestAgenda:
    def test_agenda_lists_cases_marks_repeats_and_carries_over_open_actions(self, users, clock):
        coordinator, constable = users["coordinator"], users["constable"]
        first = new_meeting(coordinator, 7)
        second = new_meeting(coordinator, 28)
        earlier = high_risk_case(coordinator, constable, n=0)
        listed(coordinator, earlier, first["id"])

        seen = agenda(coordinator, first["id"])
        assert [c["case_id"] for c in seen["cases"]] == [earlier]
        item = seen["cases"][0]
        assert item["repeat"] is False and item["dash_score"] == 14
        assert item["person"]["given_name"] == FIRST_NAMES[0]
        assert seen["carried_over"] == []

        # The first meeting hears the case: two actions, one done before the next meeting.
        move_clock(clock, users, START + timedelta(days=7))
        heard(
            coordinator,
            earlier,
            [
                action("housing", "Move her to a refuge", TODAY + timedelta(days=14)),
                action(
                    "police", "Flag the address for an urgent response", TODAY + timedelta(days=9)
                ),
            ],
        )
        ok(
            fire(
                coordinator, earlier, "complete_action", {"action_id": "A2", "outcome": "Flag set"}
            )
        )

        # A new incident for the same person, and someone new, at the next meeting.
        repeat = refer_marac(constable, victim(0), dash(0))["case_id"]
        accepted(coordinator, repeat)
        fresh = high_risk_case(coordinator, constable, n=1)
        for case_id in (repeat, fresh):
            listed(coordinator, case_id, second["id"])

        seen = agenda(coordinator, second["id"])
        assert seen["listed"] == 2
        items = {c["case_id"]: c for c in seen["cases"]}
        assert set(items) == {repeat, fresh}
        assert items[repeat]["repeat"] is True and "repeat" in items[repeat]["criteria"]
        assert items[fresh]["repeat"] is False
        assert items[repeat]["dash_score"] == 0 and items[fresh]["dash_score"] == 14

        carried = {c["case_id"]: c for c in seen["carried_over"]}
        assert set(carried) == {earlier}
        assert [a["id"] for a in carried[earlier]["open_actions"]] == ["A1"]
        plan = {a["id"]: a["status"] for a in carried[earlier]["previous_actions"]}
        assert plan == {"A1": "open", "A2": "done"}
        # Nothing carries over backwards onto the earlier meeting.
        assert agenda(coordinator, first["id"])["carried_over"] == []

    def test_repeat_case_shows_the_previous_action_plan_at_the_next_meeting(self, users, clock):
        coordinator, constable = users["coordinator"], users["constable"]
        first = new_meeting(coordinator, 7)
        second = new_meeting(coordinator, 28)
        earlier = high_risk_case(coordinator, constable, n=3)
        listed(coordinator, earlier, first["id"])
        move_clock(clock, users, START + timedelta(days=7))
        heard(
            coordinator,
            earlier,
            [
                action("housing", "Sanctuary scheme for the house", TODAY + timedelta(days=14)),
            ],
        )
        ok(fire(coordinator, earlier, "complete_action", {"action_id": "A1", "outcome": "Done"}))
        ok(fire(coordinator, earlier, "close", {"summary": "Plan delivered"}))

        repeat = refer_marac(constable, victim(3), dash(0))["case_id"]
        accepted(coordinator, repeat)
        listed(coordinator, repeat, second["id"])

        item = agenda(coordinator, second["id"])["cases"][0]
        assert item["case_id"] == repeat and item["repeat"] is True
        shown = [a["description"] for a in item["previous_actions"]]
        assert "Sanctuary scheme for the house" in shown


# --- hearing, actions, chasing, closing -------------------------------------------------


class TestActions:
    def test_hearing_sets_actions_tick_chases_them_once_and_close_needs_them_resolved(
        self, users, clock, runtime
    ):
        coordinator = users["coordinator"]
        meeting = new_meeting(coordinator, 0)  # today: a hearing is recorded on its day
        case_id = high_risk_case(coordinator)
        listed(coordinator, case_id, meeting["id"])
        first_due, second_due = TODAY + timedelta(days=10), TODAY + timedelta(days=20)
        got = heard(
            coordinator,
            case_id,
            [
                action("police", "Serve a non-molestation order", first_due),
                action("health", "GP to review her medication", second_due),
            ],
        )
        assert got["state"] == "heard"
        actions = got["case"]["attributes"]["actions"]
        assert [
            (a["id"], a["owner_agency"], a["description"], a["due"], a["status"]) for a in actions
        ] == [
            ("A1", "police", "Serve a non-molestation order", first_due.isoformat(), "open"),
            ("A2", "health", "GP to review her medication", second_due.isoformat(), "open"),
        ]
        assert all(a["meeting_id"] == meeting["id"] for a in actions)
        assert got["case"]["attributes"]["risks"] == "Strangulation; threats to kill"
        chased = deadlines(coordinator, case_id)
        assert chased["action_A1"]["status"] == "open"
        assert chased["action_A2"]["status"] == "open"

        # On the due day itself nothing is chased yet.
        move_clock(clock, users, datetime.combine(first_due, START.timetz()))
        runtime.scheduler.tick()
        assert deadlines(coordinator, case_id)["action_A1"]["status"] == "open"
        assert outbox(runtime, case_id, "deadline_reminder") == []

        # The day after, A1 is chased, once; A2 is not due yet.
        move_clock(clock, users, START + timedelta(days=11))
        runtime.scheduler.tick()
        runtime.scheduler.tick()
        chased = deadlines(coordinator, case_id)
        assert chased["action_A1"]["status"] == "reminded"
        assert chased["action_A2"]["status"] == "open"
        reminders = outbox(runtime, case_id, "deadline_reminder")
        assert reminders and {r.payload["deadline"] for r in reminders} == {"action_A1"}
        assert coordinator.user_id in {r.recipient_user_id for r in reminders}
        assert len({r.recipient_user_id for r in reminders}) == len(reminders)
        runtime.scheduler.tick()
        assert len(outbox(runtime, case_id, "deadline_reminder")) == len(reminders)

        r = fire(coordinator, case_id, "complete_action", {"action_id": "A9", "outcome": "?"})
        problem(r, 422)
        assert error_fields(r) == {"action_id"}
        assert "A1" in reason_for(r, "action_id")

        ok(
            fire(
                coordinator,
                case_id,
                "complete_action",
                {"action_id": "A1", "outcome": "Order served"},
            )
        )
        r = fire(coordinator, case_id, "close", {"summary": "Done"})
        problem(r, 422)
        assert "actions" in error_fields(r)
        assert "A2" in reason_for(r, "actions")
        assert case(coordinator, case_id)["state"] == "actions_open"

        r = fire(coordinator, case_id, "complete_action", {"action_id": "A1", "outcome": "again"})
        problem(r, 422)
        assert "action_id" in error_fields(r)

        explained = ok(
            fire(
                coordinator,
                case_id,
                "complete_action",
                {
                    "action_id": "A2",
                    "done": False,
                    "outcome": "She moved out of the area",
                },
            )
        )
        statuses = {a["id"]: a["status"] for a in explained["case"]["attributes"]["actions"]}
        assert statuses == {"A1": "done", "A2": "not_done"}
        closed = ok(fire(coordinator, case_id, "close", {"summary": "Plan delivered"}))
        assert closed["state"] == "closed" and closed["case"]["closed"] is True
        assert deadlines(coordinator, case_id)["action_A2"]["status"] == "met"


# --- the IDVA -----------------------------------------------------------------------------


class TestIdva:
    def test_idva_sees_and_works_only_the_cases_allocated_to_them(self, users, runtime):
        coordinator, idva = users["coordinator"], users["idva"]
        meeting = new_meeting(coordinator, 0)  # today: a hearing is recorded on its day
        mine = refer_marac(users["constable"], victim(0), dash(14))["case_id"]
        other = high_risk_case(coordinator, n=1)

        # Only an IDVA can be allocated as one.
        users["officer"]  # an active user, but no IDVA
        for name in ("officer", "nobody-at-all"):
            r = fire(coordinator, mine, "allocate_idva", {"user": name})
            problem(r, 422)
            assert error_fields(r) == {"user"}
        assert case(coordinator, mine)["allocated_to_id"] is None
        got = ok(fire(coordinator, mine, "allocate_idva", {"user": "idva"}))
        assert got["state"] == "referred"  # allocation does not move the case
        assert got["case"]["allocated_to_id"] == idva.user_id
        assert outbox(runtime, mine, "case_allocated")[0].recipient_user_id == idva.user_id

        assert case(idva, mine)["state"] == "referred"
        # Another IDVA's case, which nothing links this IDVA to: not there at all (404, as
        # for a case that does not exist), so ids cannot be probed.
        assert problem(idva.get(f"/api/cases/{other}"), 404)["type"].endswith(":not-found")
        queue = ok(idva.get("/api/cases"))
        assert [c["id"] for c in queue["items"]] == [mine] and queue["total"] == 1
        queue = ok(idva.get("/api/cases", params={"pathway": "marac"}))
        assert queue["total"] == 1

        # Coordinating is not the IDVA's job.
        problem(fire(idva, mine, "accept", {}), 403)
        accepted(coordinator, mine)
        problem(fire(idva, mine, "list", {"meeting_id": meeting["id"]}), 403)
        for case_id in (mine, other):
            listed(coordinator, case_id, meeting["id"])

        seen = agenda(idva, meeting["id"])
        assert [c["case_id"] for c in seen["cases"]] == [mine]
        assert {c["case_id"] for c in agenda(coordinator, meeting["id"])["cases"]} == {mine, other}

        heard(coordinator, mine, [action("voluntary", "Safety plan", TODAY + timedelta(days=3))])
        heard(coordinator, other, [action("police", "Arrest", TODAY + timedelta(days=3))])
        got = ok(
            fire(
                idva,
                mine,
                "add_action",
                action("voluntary", "Support at court", TODAY + timedelta(days=30)),
            )
        )
        assert got["state"] == "actions_open"
        assert [a["id"] for a in got["case"]["attributes"]["actions"]] == ["A1", "A2"]
        assert got["case"]["attributes"]["actions"][-1]["added_by"] == "Idva"
        assert {"action_A1", "action_A2"} <= set(deadlines(idva, mine))
        bad = {"owner_agency": "nobody", "description": "x", "due": "soon"}
        r = fire(idva, mine, "add_action", bad)
        problem(r, 422)
        assert {"owner_agency", "due"} <= error_fields(r)
        got = ok(
            fire(
                idva, mine, "complete_action", {"action_id": "A1", "outcome": "Safety plan agreed"}
            )
        )
        assert got["case"]["attributes"]["actions"][0]["status"] == "done"
        problem(fire(idva, mine, "close", {"summary": "not mine to close"}), 403)
        # The other case is not theirs, and nothing links them to it: it is not there.
        version = case(coordinator, other)["version"]
        r = fire(idva, other, "add_action", action("voluntary", "x", TODAY), version)
        assert problem(r, 404)["type"].endswith(":not-found")
        r = idva.get(f"/api/cases/{other}/history")
        assert problem(r, 404)["type"].endswith(":not-found")
        assert case(coordinator, other)["version"] == version


# --- declining ----------------------------------------------------------------------------


class TestDecline:
    def test_direct_referrer_is_told_with_the_support_offered(self, users, runtime):
        constable, coordinator = users["constable"], users["coordinator"]
        created = refer_marac(constable, dash_=dash(4))
        support = "IDVA service offered; she has the helpline number."
        got = ok(
            fire(
                coordinator,
                created["case_id"],
                "decline",
                {
                    "reason": "No criterion holds (DASH 4, no incidents)",
                    "support_offered": support,
                },
            )
        )
        assert got["state"] == "declined" and got["case"]["closed"] is True
        told = ok(constable.get(f"/api/referrals/{created['id']}"))
        assert told["outcome"] == "marac_declined"
        assert told["outcome_label"] == "Not taken to MARAC; support offered instead"
        assert told["feedback"] == support
        assert told["status"] == "decided"
        assert "reason" not in told and "details" not in told  # the referrer sees status only
        notices = outbox(runtime, created["case_id"], "referral_outcome")
        assert [n.recipient_user_id for n in notices] == [constable.user_id]

    def test_decline_of_an_onward_case_keeps_the_mash_outcome(self, users):
        feedback = "The family has been signposted to domestic abuse support."
        referral, _, marac_id = to_mash_decision(
            users, victim(), dash(5), "universal_services", feedback
        )
        teacher, coordinator = users["teacher"], users["coordinator"]
        before = ok(teacher.get(f"/api/referrals/{referral['id']}"))
        assert before["outcome"] == "universal_services" and before["feedback"] == feedback
        ok(
            fire(
                coordinator,
                marac_id,
                "decline",
                {
                    "reason": "Below threshold",
                    "support_offered": "IDVA support offered",
                },
            )
        )
        assert case(coordinator, marac_id)["state"] == "declined"
        after = ok(teacher.get(f"/api/referrals/{referral['id']}"))
        assert after["outcome"] == "universal_services"
        assert after["feedback"] == feedback
        assert after["outcome_at"] == before["outcome_at"]


# --- the whole journey --------------------------------------------------------------------


class TestHappyPath:
    def test_referral_to_closure_through_the_api_in_a_verified_audit_chain(
        self, users, clock, runtime
    ):
        constable, coordinator, idva = users["constable"], users["coordinator"], users["idva"]
        auditor = users["auditor"]
        household = [{"name": "Alfie Price", "relationship": "son", "age": 4}]
        created = refer_marac(constable, victim(household=household), dash(16, items=27))
        case_id = created["case_id"]
        seen = case(coordinator, case_id)
        assert seen["attributes"]["dash"]["version"] == "police_27"
        # The child's MASH referral: the coordinator (no MASH rights) hears only that it
        # was made.
        assert seen["linked_cases"] == [{"relation": "onward", "visible": False}]
        names = [e["event"] for e in seen["available_events"]]
        assert {"accept", "decline", "allocate_idva"} <= set(names)

        accepted(
            coordinator,
            case_id,
            {
                "criteria": ["visible_high_risk"],
                "victim_aware": False,
                "victim_aware_reason": "Would alert the abuser",
            },
        )
        ok(fire(coordinator, case_id, "allocate_idva", {"user": "idva"}))
        meeting = new_meeting(coordinator, 8)
        assert listed(coordinator, case_id)["case"]["attributes"]["meeting_id"] == meeting["id"]
        assert outbox(runtime, case_id, "marac_listed")[0].recipient_user_id == idva.user_id

        move_clock(clock, users, START + timedelta(days=8))
        heard(
            coordinator,
            case_id,
            [
                action("voluntary", "IDVA to agree a safety plan", TODAY + timedelta(days=15)),
                action("police", "Apply for a protection notice", TODAY + timedelta(days=10)),
            ],
        )
        ok(fire(idva, case_id, "complete_action", {"action_id": "A1", "outcome": "Agreed"}))
        ok(
            fire(
                coordinator,
                case_id,
                "complete_action",
                {"action_id": "A2", "outcome": "Notice granted"},
            )
        )
        closed = ok(fire(coordinator, case_id, "close", {"summary": "Plan delivered"}))
        assert closed["state"] == "closed"

        history = ok(coordinator.get(f"/api/cases/{case_id}/history"))["history"]
        assert [h["event"] for h in history] == [
            "open",
            "accept",
            "allocate_idva",
            "list",
            "hear",
            "complete_action",
            "complete_action",
            "close",
        ]
        assert [h["version"] for h in history] == list(range(1, 9))
        assert history[5]["actor_name"] == "Idva"

        rows = ok(auditor.get("/api/audit", params={"case_id": case_id, "limit": 1000}))["items"]
        done = [r["action"] for r in rows if r["outcome"] == "allowed"]
        for step in ("accept", "allocate_idva", "list", "hear", "complete_action", "close"):
            assert f"api:case:{step}" in done
        verified = ok(auditor.get("/api/audit/verify"))
        assert verified["ok"] is True and verified["rows"] >= len(rows)
