"""Rules that cut across pathways: pausing a pathway clock (MASH), merging two records of
the same person and undoing it, the FGM reporting duty at intake, and the partnership's
measures (GET /api/reports/kpis) over referrals made on every pathway.

Each test runs on SQLite and on PostgreSQL (the `runtime` fixture).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from conftest import PASSWORD, START, Team, referral_body

from referral_engine.storage.models import Case, Referral

# START is Wednesday 25 November 2026 10:00 GMT: the MASH decision is due one working day on.
DECISION_DUE = datetime.fromisoformat("2026-11-26T10:00:00+00:00")
DECIDE = {
    "outcome": "early_help",
    "onward": [],
    "rationale": "Family agree to early help.",
    "feedback_to_referrer": "Early help offered.",
}


# --- helpers ---------------------------------------------------------------------------


def ok(r, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def error_fields(r) -> set[str]:
    return {e["field"] for e in r.json().get("errors") or []}


def at(value: str | None) -> datetime | None:
    if value is None:
        return None
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


def fire_api(person, case_id: int, event: str, data: dict | None = None):
    version = view(person, case_id)["version"]
    body = {"event": event, "data": data or {}, "expected_version": version}
    return person.post(f"/api/cases/{case_id}/events", json=body)


def deadline(case: dict[str, Any], name: str) -> dict[str, Any]:
    (d,) = [d for d in case["deadlines"] if d["name"] == name]
    return d


def overdue_ids(person) -> set[int]:
    listed = ok(person.get("/api/cases", params={"overdue": "true", "pathway": "mash"}))
    return {c["id"] for c in listed["items"]}


def person_cases(person, person_id: int) -> set[int]:
    return {c["id"] for c in ok(person.get(f"/api/people/{person_id}"))["cases"]}


def owners(runtime, *case_ids: int) -> dict[int, int | None]:
    """Each case's person id, read from the database, with its referral's."""
    with runtime.db.reading() as s:
        out = {}
        for case_id in case_ids:
            case = s.get(Case, case_id)
            referral = s.get(Referral, case.referral_id)
            assert referral.person_id == case.person_id
            out[case_id] = case.person_id
        return out


# --- pausing the MASH clock ------------------------------------------------------------


def test_mash_pause_and_resume_paused_time_does_not_count(users, runtime, clock):
    officer, manager = users["officer"], users["manager"]
    case_id = ok(users["teacher"].post("/api/referrals", json=referral_body()), 201)["case_id"]
    assert at(view(manager, case_id)["due_at"]) == DECISION_DUE

    # Only a manager may stop the clock.
    r = fire_api(officer, case_id, "pause", {"reason": "Waiting for the police check."})
    assert r.status_code == 403, r.text
    assert "pause" not in {e["event"] for e in view(officer, case_id)["available_events"]}
    assert fire_api(manager, case_id, "resume").status_code == 422  # not paused

    clock.advance(timedelta(minutes=20))
    paused_at = clock.now()
    paused = ok(fire_api(manager, case_id, "pause", {"reason": "Waiting for the police check."}))
    assert paused["state"] == "received"
    assert deadline(paused["case"], "decision")["status"] == "paused"
    r = fire_api(manager, case_id, "pause", {"reason": "again"})
    assert r.status_code == 422 and "already paused" in r.text
    assert fire_api(officer, case_id, "resume").status_code == 403

    # Two days pass while paused: past the original deadline, but nothing is overdue.
    clock.advance(timedelta(days=2))
    refresh(officer, manager)
    case = view(manager, case_id)
    assert case["overdue"] is False
    assert deadline(case, "decision")["overdue"] is False
    assert case_id not in overdue_ids(officer)
    tick = runtime.scheduler.tick()
    assert tick.breached == [] and tick.reminded == []
    assert deadline(view(manager, case_id), "decision")["status"] == "paused"

    resumed_at = clock.now()
    resumed = ok(fire_api(manager, case_id, "resume"))
    # Paused Wednesday 10:20 to Friday 10:20: two working days did not count, so the
    # Thursday deadline moves two working days, to Monday (not Saturday, two calendar days).
    shifted = datetime.fromisoformat("2026-11-30T10:00:00+00:00")
    assert at(resumed["case"]["due_at"]) == shifted
    case = view(manager, case_id)
    assert at(case["due_at"]) == shifted
    decision = deadline(case, "decision")
    assert decision["status"] == "open", decision
    assert at(decision["due_at"]) == shifted
    (pause,) = case["attributes"]["pauses"]
    assert pause["reason"] == "Waiting for the police check."
    assert (at(pause["from"]), at(pause["to"])) == (paused_at, resumed_at)

    # Due later by exactly the working time paused; then overdue and breached as usual.
    clock.at = shifted - timedelta(minutes=1)
    refresh(officer, manager)
    assert view(manager, case_id)["overdue"] is False
    assert runtime.scheduler.tick().breached == []
    clock.at = shifted + timedelta(minutes=1)
    refresh(officer, manager)
    assert view(manager, case_id)["overdue"] is True
    assert case_id in overdue_ids(officer)
    assert len(runtime.scheduler.tick().breached) == 1
    assert deadline(view(manager, case_id), "decision")["status"] == "breached"


def test_a_pause_over_christmas_resumes_to_a_working_day(users, runtime, clock):
    # Received Thursday 24 December 2026 09:00, due Tuesday 29 December 09:00; paused at
    # once and resumed Tuesday 29 December 09:00: a whole working day is left, so Wednesday
    # 30 December 09:00, never Sunday 3 January.
    manager = users["manager"]
    clock.at = datetime.fromisoformat("2026-12-24T09:00:00+00:00")
    refresh(users["teacher"], manager)
    case_id = ok(users["teacher"].post("/api/referrals", json=referral_body()), 201)["case_id"]
    assert at(view(manager, case_id)["due_at"]) == datetime.fromisoformat("2026-12-29T09:00Z")
    ok(fire_api(manager, case_id, "pause", {"reason": "Waiting for the police check."}))
    clock.at = datetime.fromisoformat("2026-12-29T09:00:00+00:00")
    refresh(manager)
    resumed = ok(fire_api(manager, case_id, "resume"))
    want = datetime.fromisoformat("2026-12-30T09:00:00+00:00")
    assert at(resumed["case"]["due_at"]) == want
    assert at(deadline(view(manager, case_id), "decision")["due_at"]) == want
    assert runtime.scheduler.tick().breached == []


# --- merging people --------------------------------------------------------------------

KAYLEIGH = {"given_name": "Kayleigh", "family_name": "Smith", "date_of_birth": "2011-03-04",
            "gender": "female", "address": "9 Elm Road", "postcode": "AB4 5GH"}  # fmt: skip
MISSPELT = {**KAYLEIGH, "family_name": "Smyth"}


def test_merge_two_records_of_one_person_and_undo_it(users, runtime):
    manager, officer, auditor = users["manager"], users["officer"], users["auditor"]
    ref_a = ok(users["teacher"].post("/api/referrals", json=referral_body(subject=KAYLEIGH)), 201)
    ref_b = ok(users["constable"].post("/api/referrals", json=referral_body(subject=MISSPELT)), 201)
    case_a, case_b = ref_a["case_id"], ref_b["case_id"]
    a, b = view(manager, case_a)["person_id"], view(manager, case_b)["person_id"]
    assert a is not None and b is not None and a != b  # two spellings, two records
    assert person_cases(manager, a) == {case_a}
    assert person_cases(manager, b) == {case_b}

    # An officer may not merge.
    reason = "Same date of birth and address; the surname was misspelt."
    r = officer.post(f"/api/people/{b}/merge", json={"into": a, "reason": reason})
    assert r.status_code == 403, r.text
    assert owners(runtime, case_a, case_b) == {case_a: a, case_b: b}

    merged = ok(manager.post(f"/api/people/{b}/merge", json={"into": a, "reason": reason}), 201)
    assert (merged["from_person_id"], merged["into_person_id"]) == (b, a)
    assert merged["moved_cases"] == [case_b]
    assert merged["moved_referrals"] == [ref_b["id"]]
    assert merged["undone_at"] is None
    assert person_cases(manager, a) == {case_a, case_b}
    assert owners(runtime, case_a, case_b) == {case_a: a, case_b: a}
    assert ok(manager.get(f"/api/referrals/{ref_b['id']}"))["person_id"] == a

    # The merge is in the audit log: who, what, why.
    rows = ok(auditor.get("/api/audit", params={"action": "api:person:merge",
                                                "outcome": "allowed"}))["items"]  # fmt: skip
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["outcome"] == "allowed"
    assert row["summary"]["from"] == b and row["summary"]["into"] == a
    assert row["summary"]["cases"] == [case_b]
    refused = ok(auditor.get("/api/audit", params={"action": "api:person:merge",
                                                   "outcome": "refused"}))["items"]  # fmt: skip
    assert len(refused) == 1  # the officer's attempt

    # A later referral of the same person lands on the surviving record; undo leaves it.
    ref_c = ok(users["teacher"].post("/api/referrals", json=referral_body(subject=KAYLEIGH)), 201)
    case_c = ref_c["case_id"]
    assert view(manager, case_c)["person_id"] == a

    assert officer.post(f"/api/people/merges/{merged['id']}/undo").status_code == 403
    undone = ok(manager.post(f"/api/people/merges/{merged['id']}/undo"))
    assert undone["undone_at"] is not None
    assert owners(runtime, case_a, case_b, case_c) == {case_a: a, case_b: b, case_c: a}
    assert person_cases(manager, a) == {case_a, case_c}
    assert person_cases(manager, b) == {case_b}
    assert ok(manager.get(f"/api/people/{b}"))["merged_into_id"] is None
    rows = ok(auditor.get("/api/audit", params={"action": "api:person:unmerge",
                                                "outcome": "allowed"}))["items"]  # fmt: skip
    assert len(rows) == 1 and rows[0]["summary"]["cases"] == [case_b]

    # Undone once is undone: a second undo is a conflict and changes nothing.
    r = manager.post(f"/api/people/merges/{merged['id']}/undo")
    assert r.status_code == 409, r.text
    assert owners(runtime, case_a, case_b, case_c) == {case_a: a, case_b: b, case_c: a}


def test_a_referral_after_a_merge_joins_the_surviving_record(users):
    """Once two records are one person, a new referral under the retired spelling must
    show on the surviving record (not on the record merged away, which no view lists)."""
    manager = users["manager"]
    case_a = ok(users["teacher"].post("/api/referrals", json=referral_body(subject=KAYLEIGH)), 201)[
        "case_id"
    ]
    case_b = ok(
        users["constable"].post("/api/referrals", json=referral_body(subject=MISSPELT)), 201
    )["case_id"]
    a, b = view(manager, case_a)["person_id"], view(manager, case_b)["person_id"]
    ok(manager.post(f"/api/people/{b}/merge", json={"into": a, "reason": "misspelt"}), 201)

    later = ok(users["teacher"].post("/api/referrals", json=referral_body(subject=MISSPELT)), 201)
    assert view(manager, later["case_id"])["person_id"] == a
    assert person_cases(manager, a) == {case_a, case_b, later["case_id"]}


def test_merging_a_person_the_manager_cannot_see_is_not_found(users, runtime):
    manager = users["manager"]
    case_a = ok(users["teacher"].post("/api/referrals", json=referral_body(subject=KAYLEIGH)), 201)[
        "case_id"
    ]
    a = view(manager, case_a)["person_id"]
    # A person known only to the gang-exit team: the MASH may not know they exist.
    gang = referral_body(pathway="gang_exit", subject=MISSPELT, concerns=["gang_involvement"])
    case_g = ok(users["gangs"].post("/api/referrals", json=gang), 201)["case_id"]
    g = view(users["gangs"], case_g)["person_id"]
    assert g != a
    assert manager.get(f"/api/people/{g}").status_code == 404

    r = manager.post(f"/api/people/{g}/merge", json={"into": a, "reason": "same person"})
    assert r.status_code == 404, r.text
    r = manager.post(f"/api/people/{a}/merge", json={"into": g, "reason": "same person"})
    assert r.status_code == 404, r.text
    r = manager.post("/api/people/999999/merge", json={"into": a, "reason": "same person"})
    assert r.status_code == 404, r.text
    assert manager.post("/api/people/merges/999999/undo").status_code == 404
    assert owners(runtime, case_a, case_g) == {case_a: a, case_g: g}


# --- FGM at intake ---------------------------------------------------------------------

GIRL = {"given_name": "Amina", "family_name": "Yusuf", "date_of_birth": "2014-06-10",
        "gender": "female", "address": "3 Park View", "postcode": "AB2 3CD"}  # fmt: skip
WOMAN = {**GIRL, "given_name": "Halima", "date_of_birth": "1996-01-20"}


def fgm(**overrides) -> dict[str, Any]:
    return referral_body(
        concerns=["female_genital_mutilation"],
        summary="Told a teacher she had been 'cut' during the summer holiday.",
        **overrides,
    )


def test_fgm_duty_is_asked_of_regulated_professionals_for_a_girl(users):
    teacher = users["teacher"]
    r = teacher.post("/api/referrals", json=fgm(subject=GIRL))
    assert r.status_code == 422, r.text
    assert "fgm_duty.reported_to_police" in error_fields(r)
    assert "police" in r.text

    r = teacher.post(
        "/api/referrals", json=fgm(subject=GIRL, fgm_duty={"reported_to_police": True})
    )
    assert r.status_code == 422 and error_fields(r) == {"fgm_duty.reported_on"}, r.text

    duty = {"reported_to_police": True, "reported_on": "2026-11-24"}
    created = ok(teacher.post("/api/referrals", json=fgm(subject=GIRL, fgm_duty=duty)), 201)
    full = ok(users["officer"].get(f"/api/referrals/{created['id']}"))
    assert full["details"]["fgm_duty"] == duty
    # Nothing was stored for the refused attempts.
    mine = ok(teacher.get("/api/referrals"))
    assert mine["total"] == 1

    # Not yet reported is recorded too (the form reminds; the MASH follows it up).
    not_yet = {"reported_to_police": False}
    created = ok(teacher.post("/api/referrals", json=fgm(subject=GIRL, fgm_duty=not_yet)), 201)
    full = ok(users["officer"].get(f"/api/referrals/{created['id']}"))
    assert full["details"]["fgm_duty"]["reported_to_police"] is False


def test_fgm_duty_is_not_asked_of_the_police_or_for_an_adult(users):
    created = ok(users["constable"].post("/api/referrals", json=fgm(subject=GIRL)), 201)
    full = ok(users["officer"].get(f"/api/referrals/{created['id']}"))
    assert "fgm_duty" not in full["details"]
    created = ok(users["teacher"].post("/api/referrals", json=fgm(subject=WOMAN)), 201)
    full = ok(users["officer"].get(f"/api/referrals/{created['id']}"))
    assert full["is_child"] is False and "fgm_duty" not in full["details"]
    # Another concern about the same girl: the duty is about FGM only.
    body = referral_body(subject=GIRL, concerns=["forced_marriage"])
    assert users["teacher"].post("/api/referrals", json=body).status_code == 201


# --- the partnership's measures --------------------------------------------------------


def person(given: str, family: str, born: str, gender: str = "female") -> dict[str, Any]:
    return {"given_name": given, "family_name": family, "date_of_birth": born, "gender": gender}


JUDGEMENT = {"professional_judgement": True, "rationale": "Strangulation and threats to kill."}
VAF = {"engagement": "medium", "intent": "low", "capability": "low",
       "factors": ["grievance", "identity"], "summary": "Online material shared."}  # fmt: skip
NO_CONSENT = {"consent": "not_sought", "consent_reason": "Risk of significant harm."}


def test_kpis_count_every_pathway_exactly(runtime, client, refer, fire, staff, clock):
    # MASH: one decided within a working day, one late (and sent on to MARAC).
    mash_in_time = refer("teacher")["case_id"]
    mash_late = refer(
        "constable", subject=person("Amy", "Price", "1990-04-02"), concerns=["domestic_abuse"],
        dash=JUDGEMENT, **NO_CONSENT,
    )["case_id"]  # fmt: skip
    for case_id in (mash_in_time, mash_late):
        fire(case_id, "officer", "screen", {"rag": "amber", "rationale": "Worried"})
        fire(case_id, "officer", "refer_for_decision", {"rationale": "Enough is known"})
    fire(mash_in_time, "manager", "decide", DECIDE)

    # MARAC: a direct IDVA referral, a repeat of the same victim, and a declined one.
    def marac(who: str, subject: dict, dash: dict | None) -> int:
        return refer(who, pathway="marac", subject=subject, concerns=["domestic_abuse"],
                     dash=dash, **NO_CONSENT)["case_id"]  # fmt: skip

    bella = person("Bella", "Reed", "1985-09-12")
    first = marac("idva", bella, JUDGEMENT)
    repeat = marac("idva", bella, None)
    declined = marac("coordinator", person("Cara", "Dunn", "1979-02-28"), None)
    fire(first, "coordinator", "accept", {})
    fire(repeat, "coordinator", "accept", {"criteria": ["repeat"]})
    fire(declined, "coordinator", "decline",
         {"reason": "No criterion holds.", "support_offered": "IDVA service"})  # fmt: skip

    # NRM: a child and a consenting adult.
    child = refer("responder", pathway="nrm", subject=person("Leon", "Marsh", "2010-08-01", "male"),
                  concerns=["modern_slavery", "child_criminal_exploitation"],
                  **NO_CONSENT)["case_id"]  # fmt: skip
    adult = refer("responder", pathway="nrm", subject=person("Ana", "Popescu", "1995-05-05"),
                  concerns=["modern_slavery"])["case_id"]  # fmt: skip
    fire(child, "responder", "submit_referral", {"exploitation_types": ["criminal", "labour"]})
    fire(adult, "responder", "submit_referral", {"exploitation_types": ["sexual"], "consent": True})

    # Channel: adopted, not adopted, and screened out before any panel.
    panel = runtime.meetings.create(staff["chair"].actor, "channel", date(2026, 12, 3), 10)

    def channel(given: str) -> int:
        case_id = refer("prevent", pathway="channel", subject=person(given, "Stone", "2008-01-01"),
                        concerns=["radicalisation"], **NO_CONSENT)["case_id"]  # fmt: skip
        fire(case_id, "prevent", "start_gateway")
        return case_id

    adopted, not_adopted, screened_out = channel("Adam"), channel("Ben"), channel("Cal")
    for case_id in (adopted, not_adopted):
        fire(case_id, "prevent", "pass_to_panel")
        fire(case_id, "chair", "record_vaf", VAF)
        fire(case_id, "chair", "list_for_panel", {"meeting_id": panel["id"]})
    fire(adopted, "chair", "adopt", {"rationale": "Vulnerable; support needed."})
    fire(not_adopted, "chair", "not_adopt", {"rationale": "Other support suffices."})
    fire(screened_out, "prevent", "screen_out",
         {"reason": "Not a Prevent matter.", "signposted_to": "Youth service"})  # fmt: skip

    # Gang exit: one completes the programme, one disengages.
    completed, dropped = (
        refer("gangs", pathway="gang_exit", subject=person(given, "Cole", "2007-07-07", "male"),
              concerns=["gang_involvement"])["case_id"]
        for given in ("Dion", "Eli")
    )  # fmt: skip
    for case_id in (completed, dropped):
        fire(case_id, "gangs", "check_eligibility")
        fire(case_id, "gangs", "start_assessment")
    fire(completed, "gangs", "agree_plan", {"needs": ["housing"], "goals": "Move away."})
    fire(completed, "gangs", "exit", {"reason": "Completed."})
    fire(dropped, "gangs", "disengage", {"reason": "Stopped engaging."})

    # The late MASH decision, two days on, sends the case to MARAC, where it is accepted.
    clock.advance(timedelta(days=2))
    late = dict(DECIDE, outcome="police_investigation", onward=["marac"],
                late_reason="Waiting for the police check.")  # fmt: skip
    (onward,) = fire(mash_late, "manager", "decide", late).opened
    fire(onward, "coordinator", "accept", {})

    # A referral received after the range does not count in it.
    clock.at = START + timedelta(days=7)  # 2 December
    refer("teacher", subject=person("Zoe", "Late", "2015-01-01"))

    r = client.post("/api/auth/token", data={"username": "auditor", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {ok(r)['access_token']}"}
    k = ok(client.get("/api/reports/kpis", params={"from": "2026-11-01", "to": "2026-11-30"},
                      headers=headers))  # fmt: skip

    assert k["referrals_total"] == 12
    assert k["referrals_by_source_agency"] == {
        "education": 1,  # the teacher
        "police": 4,  # the constable, and Prevent three times
        "voluntary": 2,  # the IDVA
        "local_authority": 5,  # the MARAC coordinator, the first responder twice, gangs twice
    }
    assert k["referrals_by_concern"] == {
        "neglect": 1, "domestic_abuse": 4, "modern_slavery": 2,
        "child_criminal_exploitation": 1, "radicalisation": 3, "gang_involvement": 2,
    }  # fmt: skip
    assert k["mash_decided_within_1wd_pct"] == 50.0
    # Accepted MARAC cases: the IDVA's two (one a repeat) and the MASH onward (police).
    assert k["marac_cases"] == 3
    assert k["marac_repeat_pct"] == 33.3
    assert k["marac_non_police_pct"] == 66.7
    assert k["nrm_referrals_by_age_group"] == {"child": 1, "adult": 1}
    assert k["nrm_by_exploitation_type"] == {"criminal": 1, "labour": 1, "sexual": 1}
    assert k["channel_referrals"] == 3
    assert k["channel_adoption_pct"] == 50.0
    assert k["gang_exit_completions"] == 1

    december = ok(client.get("/api/reports/kpis", params={"from": "2026-12-01", "to": "2026-12-31"},
                             headers=headers))  # fmt: skip
    assert december["referrals_total"] == 1
    assert december["marac_cases"] == 0 and december["marac_repeat_pct"] is None
    assert december["gang_exit_completions"] == 0


@pytest.mark.parametrize("who", ["manager", "coordinator"])
def test_kpis_leave_out_channel_for_roles_that_may_not_see_it(runtime, refer, staff, who):
    refer("prevent", pathway="channel", concerns=["radicalisation"], **NO_CONSENT)
    refer("teacher")  # MASH: the manager's
    refer("coordinator", pathway="marac", concerns=["domestic_abuse"], **NO_CONSENT)
    k = runtime.reports.kpis(staff[who].actor, date(2026, 11, 1), date(2026, 11, 30))
    assert "channel_referrals" not in k and "channel_adoption_pct" not in k
    assert k["referrals_total"] == 1  # their own pathway's; the Channel one not at all
    assert "radicalisation" not in k["referrals_by_concern"]
    everything = runtime.reports.kpis(staff["auditor"].actor, date(2026, 11, 1), date(2026, 11, 30))
    assert everything["referrals_total"] == 3 and everything["channel_referrals"] == 1
