"""What a referral must say, all checked on the first submit (issue 18, "rules that do not
hold"): the rules (`referral_engine.referrals.checks`) run even when the schema has refused
another field, so the referrer never meets a new error on the second submit.

The pure checks run without a database; the form and the API run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from conftest import referral_body
from test_pages_referrals import count_referrals, full_form, new_form

from referral_engine.policies.policy import load_policy
from referral_engine.referrals.checks import check

POLICY = load_policy(Path(__file__).resolve().parents[1] / "policies")
TODAY = date(2026, 11, 25)


def fields(errors) -> set[str]:
    return {e.field for e in errors}


def error_fields(r) -> set[str]:
    return {e["field"] for e in r.json().get("errors") or []}


# --- the rules, pure ---------------------------------------------------------------------


def test_the_rules_still_run_when_the_schema_refuses_another_field():
    body = referral_body(
        subject={"given_name": "Jo", "date_of_birth": "2031-01-01", "estimated_age": "old"},
        consent="not_sought",
        concerns=["domestic_abuse"],
        dash={"answers": {"1": "yes", "25": "yes"}, "professional_judgement": True},
    )
    got = fields(check(POLICY, body, TODAY, agency_kind="education"))
    assert got == {"subject.date_of_birth", "consent_reason", "dash.rationale", "dash.answers.25"}


def test_a_domestic_abuse_referral_needs_dash_answers_or_a_reason():
    bare = {"concerns": ["domestic_abuse"], "consent": "given", "subject": {"given_name": "A"}}
    assert fields(check(POLICY, bare, TODAY, agency_kind="health")) == {"dash.not_completed_reason"}
    enough = (
        {"answers": {"3": "no"}},
        {"not_completed_reason": "Not safe to ask."},
        {"professional_judgement": True, "rationale": "Strangled last week."},
    )
    for dash in enough:
        assert check(POLICY, {**bare, "dash": dash}, TODAY, agency_kind="health") == []
    # Stalking alone does not need the checklist (it is offered, not required).
    assert check(POLICY, {**bare, "concerns": ["stalking"]}, TODAY, agency_kind="health") == []


def test_dash_answers_must_be_to_the_questions_of_the_checklist_used():
    body = {"concerns": ["stalking"], "dash": {"answers": {"25": "yes", "27": "no"}}}
    # A partner agency uses the 24-item checklist; the police the 27-item one.
    assert fields(check(POLICY, body, TODAY, agency_kind="health")) == {
        "dash.answers.25", "dash.answers.27",
    }  # fmt: skip
    assert check(POLICY, body, TODAY, agency_kind="police") == []
    named = {"concerns": ["stalking"], "dash": {"version": "partner_24", "answers": {"25": "no"}}}
    assert fields(check(POLICY, named, TODAY, agency_kind="police")) == {"dash.answers.25"}


def test_the_fgm_duty_stands_when_the_gender_is_not_given():
    child = {"given_name": "Sam", "date_of_birth": "2015-02-01"}
    body = {"concerns": ["female_genital_mutilation"], "subject": child}
    assert fields(check(POLICY, body, TODAY, agency_kind="education")) == {
        "fgm_duty.reported_to_police"
    }
    boy = {**body, "subject": {**child, "gender": "male"}}
    assert check(POLICY, boy, TODAY, agency_kind="education") == []
    told = {**body, "fgm_duty": {"reported_to_police": False}}
    assert check(POLICY, told, TODAY, agency_kind="education") == []


# --- through the API ---------------------------------------------------------------------


def test_every_error_comes_back_on_the_first_submit(users):
    body = referral_body(
        subject={"given_name": "Jo", "date_of_birth": "2030-01-01"},
        consent="not_sought",
        concerns=["domestic_abuse"],
        dash={"answers": {}, "professional_judgement": True},
        referrer_contact={"email": "not-an-email"},
    )
    del body["summary"]
    r = users["teacher"].post("/api/referrals", json=body)
    assert r.status_code == 422, r.text
    assert error_fields(r) >= {
        "summary", "subject.date_of_birth", "consent_reason", "dash.rationale",
        "referrer_contact.email",
    }  # fmt: skip


def test_a_blank_incident_count_is_unknown_not_zero(users):
    body = referral_body(concerns=["domestic_abuse"], dash={"answers": {"1": "yes"}})
    made = users["teacher"].post("/api/referrals", json=body)
    assert made.status_code == 201, made.text
    full = users["officer"].get(f"/api/referrals/{made.json()['id']}").json()
    assert full["details"]["dash"].get("police_incidents_12m") is None
    bare = {**referral_body(concerns=["domestic_abuse"]), "dash": {}}  # no answers, no reason
    r = users["teacher"].post("/api/referrals", json=bare)
    assert r.status_code == 422 and error_fields(r) == {"dash.not_completed_reason"}, r.text


# --- through the form ----------------------------------------------------------------------


def test_the_form_shows_every_error_at_once_and_refuses_a_bad_email(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    _, hidden = new_form(teacher)
    data = full_form(
        **{"subject.date_of_birth": "2030-01-01", "consent_reason": "",
           "dash_professional_judgement": "yes", "referrer_contact.email": "not-an-email",
           "immediate_danger": ""}
    )  # fmt: skip
    r = teacher.post("/referrals/new", data={**hidden, **data})
    assert r.status_code == 422
    for anchor in ("subject-date-of-birth", "consent-reason", "dash-rationale",
                   "referrer-contact-email", "immediate-danger"):  # fmt: skip
        assert f'<a href="#{anchor}">' in r.text, anchor
    assert "Enter your email address in the form name@example.org" in r.text
    assert 'value="not-an-email"' in r.text  # nothing typed is lost
    assert count_referrals(runtime, staff) == 0


def test_a_police_referral_for_honour_based_abuse_keeps_its_dash(browser_for, runtime, staff):
    constable = browser_for("constable")
    _, hidden = new_form(constable)
    data = full_form(concerns=["honour_based_abuse"], dash_police_incidents_12m="")
    for i in range(1, 28):
        data[f"dash-{i}"] = "yes" if i <= 15 else "no"
    r = constable.post("/referrals/new", data={**hidden, **data}, follow_redirects=False)
    assert r.status_code == 303, r.text
    ref = runtime.referrals.mine(staff["constable"].actor)["items"][0]
    dash = runtime.referrals.view(staff["officer"].actor, ref["id"])["details"]["dash"]
    assert sum(v == "yes" for v in dash["answers"].values()) == 15
    assert len(dash["answers"]) == 27
    assert "police_incidents_12m" not in dash  # left blank: not known


def test_the_rules_read_values_of_the_wrong_kind_without_failing():
    # The schema names these fields; the rules must not crash on them meanwhile.
    for subject in ({"date_of_birth": [1]}, {"estimated_age": {"a": 1}}, "Jo", None):
        body = {"concerns": ["female_genital_mutilation", 7], "subject": subject,
                "dash": {"answers": ["1"], "version": 3}, "consent": ["given"]}  # fmt: skip
        assert check(POLICY, body, TODAY, agency_kind="education") == []
