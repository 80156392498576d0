"""The referral form, its confirmation page and "my referrals", through HTTP as a browser."""

from __future__ import annotations

import re

from conftest import csrf_of

DASH_ITEMS = [str(i) for i in range(1, 25)]  # the partner agencies' 24-item checklist


def form_key_of(html: str) -> str:
    found = re.search(r'name="form_key" value="([^"]+)"', html)
    assert found, "the form has no idempotency key"
    return found.group(1)


def new_form(browser) -> tuple[str, dict[str, str]]:
    page = browser.get("/referrals/new")
    assert page.status_code == 200
    return page.text, {"csrf": csrf_of(page.text), "form_key": form_key_of(page.text)}


def full_form(**overrides) -> dict:
    data = {
        "subject.given_name": "Amira",
        "subject.family_name": "Haddad",
        "subject.other_names": "Mira",
        "subject.date_of_birth": "2011-03-14",
        "subject.gender": "female",
        "subject.address": "12 Canal Row, Northgate",
        "subject.postcode": "NG1 4AB",
        "subject.ethnicity": "Arab",
        "subject.language": "Arabic",
        "subject.interpreter_needed": "yes",
        "subject.household.0.name": "Layla Haddad",
        "subject.household.0.relationship": "Mother",
        "subject.household.0.age": "38",
        "subject.household.1.name": "Omar Haddad",
        "subject.household.1.relationship": "Brother",
        "subject.household.1.date_of_birth": "2019-07-02",
        "concerns": ["domestic_abuse", "emotional_abuse"],
        "summary": "Amira said her mother's partner hit her mother last night.",
        "immediate_danger": "no",
        "consent": "not_sought",
        "consent_reason": "Asking would alert the abuser.",
        "dash-1": "yes",
        "dash-2": "yes",
        "dash-3": "not_known",
        "dash-4": "no",
        "dash_police_incidents_12m": "2",
        "victim_aware": "no",
        "victim_aware_reason": "Not safe to tell her yet.",
        "referrer_contact.phone": "0161 496 0000",
        "referrer_contact.email": "s.patel@northgate.example",
        "action": "send",
    }
    data.update(overrides)
    return data


def count_referrals(runtime, staff, who: str = "teacher") -> int:
    return runtime.referrals.mine(staff[who].actor, limit=1)["total"]


def test_a_full_referral_creates_a_case_and_shows_the_reference(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    html, hidden = new_form(teacher)
    assert "<h1>Refer someone</h1>" in html
    assert 'name="pathway"' not in html  # a teacher may refer only to the MASH
    r = teacher.post("/referrals/new", data={**hidden, **full_form()}, follow_redirects=False)
    assert r.status_code == 303, r.text
    done = teacher.get(r.headers["location"])
    mine = runtime.referrals.mine(staff["teacher"].actor)["items"]
    assert len(mine) == 1
    assert r.headers["location"] == f"/referrals/{mine[0]['id']}/done"
    assert mine[0]["reference"] in done.text and "Referral sent" in done.text
    assert 'class="panel-confirm"' in done.text

    officer = staff["officer"].actor
    full = runtime.referrals.view(officer, mine[0]["id"])
    assert full["case_id"] and full["pathway"] == "mash" and full["state"] == "received"
    mother = full["subject"]["household"][0]
    assert (mother["name"], mother["relationship"], mother["age"]) == ("Layla Haddad", "Mother", 38)
    assert full["subject"]["household"][1]["date_of_birth"] == "2019-07-02"
    assert full["subject"]["interpreter_needed"] is True
    assert full["concerns"] == ["domestic_abuse", "emotional_abuse"]
    assert full["consent"] == "not_sought" and full["immediate_danger"] is False
    details = full["details"]
    assert details["dash"]["answers"] == {"1": "yes", "2": "yes", "3": "not_known", "4": "no"}
    assert details["dash"]["police_incidents_12m"] == 2
    assert details["victim_aware"] is False
    assert details["referrer_contact"]["phone"] == "0161 496 0000"


def test_missing_names_come_back_with_every_value_kept(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    _, hidden = new_form(teacher)
    data = full_form(**{"subject.given_name": "", "subject.family_name": "  "})
    r = teacher.post("/referrals/new", data={**hidden, **data})
    assert r.status_code == 422
    html = r.text
    assert count_referrals(runtime, staff) == 0
    # the summary at the top links to the field, which carries that id and its message
    assert "There is a problem" in html
    assert html.index("There is a problem") < html.index('id="referral-form"')
    assert '<a href="#subject-given-name">' in html
    assert 'id="subject-given-name"' in html and 'id="subject-given-name-error"' in html
    assert "Enter the person&#39;s given name or family name" in html
    assert "<title>Error: " in html
    # everything else typed is still there
    assert 'value="Mira"' in html and 'value="2011-03-14"' in html
    assert "12 Canal Row, Northgate</textarea>" in html
    assert "Amira said her mother&#39;s partner hit her mother last night.</textarea>" in html
    assert 'value="Layla Haddad"' in html and 'value="2019-07-02"' in html
    assert 'value="0161 496 0000"' in html and 'value="s.patel@northgate.example"' in html
    assert '<option value="female" selected>' in html
    assert re.search(r'name="subject.interpreter_needed" value="yes" checked', html)
    assert re.search(r'name="concerns" value="domestic_abuse" checked', html)
    assert re.search(r'name="concerns" value="emotional_abuse" checked', html)
    assert not re.search(r'name="concerns" value="neglect" checked', html)
    assert re.search(r'name="consent" value="not_sought" checked', html)
    assert re.search(r'name="immediate_danger" value="no" checked', html)
    assert re.search(r'name="dash-1" value="yes" checked', html)
    assert re.search(r'name="dash-3" value="not_known" checked', html)
    assert re.search(r'name="dash-4" value="no" checked', html)
    assert not re.search(r'name="dash-5" value="[a-z_]+" checked', html)
    assert 'name="dash_police_incidents_12m" value="2"' in html
    assert re.search(r'name="victim_aware" value="no" checked', html)
    # the same form key, so a corrected resubmission still refers once
    assert form_key_of(html) == hidden["form_key"]


def test_every_error_links_to_an_element_of_the_page(browser_for):
    teacher = browser_for("teacher")
    _, hidden = new_form(teacher)
    r = teacher.post(
        "/referrals/new",
        data={**hidden, "subject.household.0.relationship": "Aunt",
              "subject.estimated_age": "about ten", "action": "send"},
    )  # fmt: skip
    assert r.status_code == 422
    links = re.findall(r'<li><a href="#([^"]+)">', r.text)
    for expected in ("subject-given-name", "subject-estimated-age", "subject-household-0-name",
                     "concerns", "summary", "immediate-danger", "consent"):  # fmt: skip
        assert expected in links
    for anchor in links:
        assert f'id="{anchor}"' in r.text, anchor
    # in the order of the form
    assert links.index("subject-given-name") < links.index("concerns") < links.index("consent")


def test_check_the_dash_score_shows_it_and_sends_nothing(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    _, hidden = new_form(teacher)
    answers = {f"dash-{i}": ("yes" if n < 14 else "no") for n, i in enumerate(DASH_ITEMS)}
    data = full_form(**answers, action="score")
    r = teacher.post("/referrals/new", data={**hidden, **data})
    assert r.status_code == 200
    assert "DASH score 14 (high risk at 14)" in r.text
    assert "visible high risk" in r.text
    assert "There is a problem" not in r.text
    assert count_referrals(runtime, staff) == 0
    # the answers are still in the form, ready to send
    assert len(re.findall(r'value="yes" checked', r.text)) >= 14
    assert form_key_of(r.text) == hidden["form_key"]
    # ...and sending them works
    sent = teacher.post(
        "/referrals/new", data={**hidden, **full_form(**answers)}, follow_redirects=False
    )
    assert sent.status_code == 303
    assert count_referrals(runtime, staff) == 1


def test_professional_judgement_needs_its_reasons(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    _, hidden = new_form(teacher)
    data = full_form(dash_professional_judgement="yes")
    r = teacher.post("/referrals/new", data={**hidden, **data})
    assert r.status_code == 422
    assert '<a href="#dash-rationale">' in r.text
    assert 'id="dash-rationale-error"' in r.text
    assert "Give the reasons for your professional judgement" in r.text
    assert re.search(r'name="dash_professional_judgement" value="yes"[^>]*checked', r.text)
    assert count_referrals(runtime, staff) == 0


def test_a_teacher_referring_a_girl_for_fgm_is_reminded_of_the_duty(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    html, hidden = new_form(teacher)
    assert "You have a legal duty to report FGM to the police yourself" in html
    data = full_form(concerns=["female_genital_mutilation"])
    r = teacher.post("/referrals/new", data={**hidden, **data})
    assert r.status_code == 422
    assert '<a href="#fgm-duty-reported-to-police">' in r.text
    assert 'id="fgm-duty-reported-to-police"' in r.text
    assert "legal duty to report known FGM" in r.text
    assert count_referrals(runtime, staff) == 0
    # reported, but no date
    data["fgm_duty.reported_to_police"] = "yes"
    r = teacher.post("/referrals/new", data={**hidden, **data})
    assert r.status_code == 422 and '<a href="#fgm-duty-reported-on">' in r.text
    data["fgm_duty.reported_on"] = "2026-11-24"
    r = teacher.post("/referrals/new", data={**hidden, **data}, follow_redirects=False)
    assert r.status_code == 303
    ref = runtime.referrals.mine(staff["teacher"].actor)["items"][0]
    full = runtime.referrals.view(staff["officer"].actor, ref["id"])
    assert full["details"]["fgm_duty"] == {"reported_to_police": True, "reported_on": "2026-11-24"}
    assert "dash" not in full["details"]  # DASH answers go only with domestic abuse


def test_a_form_without_its_csrf_token_is_refused(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    _, hidden = new_form(teacher)
    r = teacher.post("/referrals/new", data={"form_key": hidden["form_key"], **full_form()})
    assert r.status_code == 403
    forged = teacher.post("/referrals/new", data={**hidden, **full_form(), "csrf": "forged"})
    assert forged.status_code == 403
    assert count_referrals(runtime, staff) == 0


def test_the_same_form_sent_twice_refers_once(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    _, hidden = new_form(teacher)
    data = {**hidden, **full_form()}
    first = teacher.post("/referrals/new", data=data, follow_redirects=False)
    second = teacher.post("/referrals/new", data=data, follow_redirects=False)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert count_referrals(runtime, staff) == 1
    # a fresh form is a new referral
    _, again = new_form(teacher)
    assert again["form_key"] != hidden["form_key"]
    assert teacher.post("/referrals/new", data={**again, **full_form()}).status_code == 200
    assert count_referrals(runtime, staff) == 2


def test_the_same_key_with_other_answers_says_so_and_sends_nothing(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    _, hidden = new_form(teacher)
    assert teacher.post("/referrals/new", data={**hidden, **full_form()}).status_code == 200
    r = teacher.post("/referrals/new", data={**hidden, **full_form(summary="Something else.")})
    assert r.status_code == 409
    assert "already sent" in r.text and "Something else.</textarea>" in r.text
    assert form_key_of(r.text) != hidden["form_key"]
    assert count_referrals(runtime, staff) == 1


def test_police_may_choose_marac_and_see_the_27_item_checklist(browser_for, runtime, staff):
    constable = browser_for("constable")
    html, hidden = new_form(constable)
    assert 'name="pathway" value="mash" checked' in html
    assert 'name="pathway" value="marac"' in html and 'name="pathway" value="nrm"' not in html
    assert 'name="dash-27"' in html
    teacher_html, _ = new_form(browser_for("teacher"))
    assert 'name="dash-24"' in teacher_html and 'name="dash-25"' not in teacher_html
    data = full_form(pathway="marac", **{"dash-27": "yes"})
    r = constable.post("/referrals/new", data={**hidden, **data}, follow_redirects=False)
    assert r.status_code == 303
    done = constable.get(r.headers["location"])
    assert "received by the MARAC team" in done.text
    pathways = [i["pathway"] for i in runtime.referrals.mine(staff["constable"].actor)["items"]]
    assert "marac" in pathways  # (and the children in the household are referred to MASH)


def test_the_narrative_is_shown_as_text(browser_for, runtime, staff):
    teacher = browser_for("teacher")
    _, hidden = new_form(teacher)
    r = teacher.post(
        "/referrals/new", data={**hidden, **full_form(summary="<script>alert(1)</script>")}
    )
    assert r.status_code == 200
    ref = runtime.referrals.mine(staff["teacher"].actor)["items"][0]
    page = browser_for("officer").get(f"/referrals/{ref['id']}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert(1)" not in page.text


def test_my_referrals_lists_status_and_outcome_with_pages(browser_for, refer, fire):
    made = [refer(summary=f"referral {n}") for n in range(23)]
    case_id = made[-1]["case_id"]
    fire(case_id, "officer", "screen", {"rag": "amber", "rationale": "r"})
    fire(case_id, "officer", "refer_for_decision", {"rationale": "clear"})
    fire(case_id, "manager", "decide", {
        "outcome": "early_help", "onward": [], "rationale": "Family engaged well.",
        "feedback_to_referrer": "Early help has been offered.",
    })  # fmt: skip
    teacher = browser_for("teacher")
    first = teacher.get("/referrals")
    assert first.status_code == 200 and "<h1>My referrals</h1>" in first.text
    assert first.text.count("<tr>") == 1 + 20  # header and a page of 20
    assert f'href="/referrals/{made[-1]["id"]}"' in first.text  # newest first
    assert "Early help" in first.text and "Being looked at" in first.text
    assert 'href="/referrals?page=2"' in first.text and "Page 1 of 2" in first.text
    second = teacher.get("/referrals?page=2")
    assert second.text.count("<tr>") == 1 + 3 and 'href="/referrals?page=1"' in second.text


def test_the_referrer_sees_the_outcome_but_not_the_mash_reasoning(browser_for, refer, fire):
    made = refer(summary="Often hungry at school.")
    case_id = made["case_id"]
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "RAG-REASONING"})
    fire(case_id, "officer", "refer_for_decision", {"rationale": "SKIP-REASONING"})
    fire(case_id, "manager", "decide", {
        "outcome": "child_in_need_assessment", "onward": [],
        "rationale": "MASH-RATIONALE-PRIVATE",
        "feedback_to_referrer": "A social worker will visit.",
    })  # fmt: skip
    teacher = browser_for("teacher")
    page = teacher.get(f"/referrals/{made['id']}")
    assert page.status_code == 200
    assert made["reference"] in page.text
    assert "Child in need assessment" in page.text and "A social worker will visit." in page.text
    for private in ("MASH-RATIONALE-PRIVATE", "RAG-REASONING", "SKIP-REASONING"):
        assert private not in page.text
    assert f'href="/cases/{case_id}"' not in page.text
    # staff who may see the case see the referral in full, with a link to the case
    officer_page = browser_for("officer").get(f"/referrals/{made['id']}")
    assert officer_page.status_code == 200
    assert f'href="/cases/{case_id}"' in officer_page.text
    assert "Often hungry at school." in officer_page.text


def test_another_practitioner_cannot_see_the_referral(browser_for, refer):
    made = refer()
    other = browser_for("constable")
    assert other.get(f"/referrals/{made['id']}").status_code == 404
    assert other.get(f"/referrals/{made['id']}/done").status_code == 404
    assert made["reference"] not in other.get("/referrals").text


def test_referral_pages_need_a_signed_in_user(client, staff):
    for url in ("/referrals/new", "/referrals", "/referrals/1"):
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_who_may_not_refer_gets_no_form(browser_for):
    admin = browser_for("admin")
    assert admin.get("/referrals/new").status_code == 403
