"""The core pages through HTTP: sign-in with CSRF, the queue, the case page and its forms."""

from conftest import csrf_of, sign_in_page


def test_sign_in_needs_the_forms_csrf_token(client, staff):
    client.get("/login")
    r = client.post("/login", data={"username": "officer", "password": "x", "csrf": "forged"})
    assert r.status_code == 400
    assert "session expired" in r.text
    assert sign_in_page(client, "officer").status_code == 303
    assert client.get("/").status_code == 200


def test_pages_redirect_to_sign_in_and_back(client, staff):
    r = client.get("/queue?rag=red", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/queue%3Frag%3Dred"
    assert 'name="next" value="/queue?rag=red"' in client.get(r.headers["location"]).text


def test_a_wrong_password_says_so_and_keeps_the_username(client, staff):
    page = client.get("/login")
    r = client.post(
        "/login", data={"username": "officer", "password": "nope", "csrf": csrf_of(page.text)}
    )
    assert r.status_code == 401
    assert "not right" in r.text and 'value="officer"' in r.text


def test_session_cookie_is_httponly_and_samesite(client, staff):
    r = sign_in_page(client, "officer")
    cookie = r.headers["set-cookie"]
    assert "re_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_case_page_fires_an_event_and_keeps_input_on_error(browser_for, refer):
    case_id = refer(summary="<script>alert(1)</script> seen at school")["case_id"]
    officer = browser_for("officer")
    page = officer.get(f"/cases/{case_id}")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # escaped, shown as text
    assert "<script>alert(1)" not in page.text
    token = csrf_of(page.text)
    bad = officer.post(
        f"/cases/{case_id}/events/screen",
        data={"csrf": token, "expected_version": "1", "rationale": "kept text"},
    )
    assert bad.status_code == 422
    assert "There is a problem" in bad.text and "kept text" in bad.text
    assert 'href="#ev-screen-rag"' in bad.text
    ok = officer.post(
        f"/cases/{case_id}/events/screen",
        data={"csrf": token, "expected_version": "1", "rag": "red", "rationale": "r"},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert (
        "Red" in officer.get(f"/cases/{case_id}").text
        or "RED" in officer.get(f"/cases/{case_id}").text
    )


def test_a_stale_form_says_so_and_keeps_what_was_typed(browser_for, refer, fire):
    case_id = refer()["case_id"]
    officer = browser_for("officer")
    token = csrf_of(officer.get(f"/cases/{case_id}").text)
    fire(case_id, "officer", "screen", {"rag": "amber", "rationale": "first"})
    r = officer.post(
        f"/cases/{case_id}/events/screen",
        data={"csrf": token, "expected_version": "1", "rag": "red", "rationale": "mine"},
    )
    assert r.status_code == 409
    assert "Someone else changed this case" in r.text or "not available" in r.text


def test_forms_without_csrf_are_refused(browser_for, refer, runtime):
    case_id = refer()["case_id"]
    officer = browser_for("officer")
    r = officer.post(
        f"/cases/{case_id}/events/screen",
        data={"expected_version": "1", "rag": "red", "rationale": "r"},
    )
    assert r.status_code == 403
    assert (
        runtime.cases.view(
            runtime.access.actor(user_id=None, username="a", display_name="a", roles=["auditor"]),
            case_id,
        )["version"]
        == 1
    )


def test_no_page_and_no_link_without_rights(browser_for, refer):
    case_id = refer()["case_id"]
    teacher = browser_for("teacher")
    home = teacher.get("/")
    assert 'href="/queue"' not in home.text and 'href="/audit"' not in home.text
    assert teacher.get(f"/cases/{case_id}").status_code == 404
    assert teacher.get("/queue").text.count("<tr") <= 1


def test_queue_filters_and_order_match_the_api(browser_for, users, refer, fire):
    ids = [refer()["case_id"] for _ in range(3)]
    fire(ids[2], "officer", "screen", {"rag": "red", "rationale": "r"})
    officer = browser_for("officer")
    html = officer.get("/queue").text
    api = [i["id"] for i in users["officer"].get("/api/cases").json()["items"]]
    positions = [html.index(f'href="/cases/{i}"') for i in api]
    assert positions == sorted(positions) and api[0] == ids[2]
    red = officer.get("/queue?rag=red").text
    assert f'href="/cases/{ids[2]}"' in red and f'href="/cases/{ids[0]}"' not in red


def test_codes_read_as_the_policy_words_them_and_entries_by_their_form_labels(
    browser_for, refer, fire
):
    """What was chosen reads back as the policy words it ("Children's social care", a
    lawful basis in full), in the forms and in the history, and each entry goes by its form
    label ("RAG rating"), not the stored code ("rag")."""
    case_id = refer()["case_id"]
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "Hungry daily"})
    officer = browser_for("officer")
    page = officer.get(f"/cases/{case_id}").text
    # the forms offer the policy's words
    assert 'value="children_social_care"> Children&#39;s social care</label>' in page
    assert ">Children Act 1989 s47 enquiry (public task)</option>" in page
    assert "Children social care" not in page and ">Children act s47<" not in page
    # the queue's pathway filter names pathways as its table does
    queue = officer.get("/queue").text
    assert '<option value="mash">MASH front door</option>' in queue
    fire(case_id, "officer", "request_checks", {
        "agencies": ["children_social_care", "voluntary"],
        "lawful_basis": "children_act_s47", "recipient": "Duty team",
    })  # fmt: skip
    page = officer.get(f"/cases/{case_id}").text
    # the case record: an attribute kept under its field's name goes by the field's label
    assert "<dt>RAG rating</dt>" in page and "<dt>Rag</dt>" not in page
    # kept under another name: the label the workflow YAML declares for it
    assert "<dt>Rationale for the RAG rating</dt>" in page and "Rag rationale" not in page
    # the history: each event and state by its label, each entry by its form label, each
    # code by the policy's word
    assert "<strong>Request agency checks</strong> → Information gathering" in page
    assert '<span class="muted">RAG rating:</span> Red</div>' in page
    assert '<span class="muted">Rationale for the rating:</span> Hungry daily</div>' in page
    assert (
        '<span class="muted">Agencies asked:</span> <ul class="values">'
        "<li>Children&#39;s social care</li><li>Voluntary sector</li></ul></div>" in page
    )
    assert (
        '<span class="muted">Lawful basis for sharing:</span> '
        "Children Act 1989 s47 enquiry (public task)</div>" in page
    )


def test_your_cases_heads_only_the_callers_own_and_sign_out_says_so(browser_for, refer):
    refer()
    officer = browser_for("officer")
    home = officer.get("/").text
    # nothing is assigned to the officer: no "Your cases" link to everyone's cases
    assert "Your cases" not in home and "Nothing is assigned to you" in home
    assert "<h1>Cases</h1>" in officer.get("/queue").text
    assert "<h1>Your cases</h1>" in officer.get("/queue?assigned_to_me=true").text
    out = officer.post("/logout", data={"csrf": csrf_of(home)}, follow_redirects=True)
    assert out.url.path == "/login" and "You have signed out." in out.text
    # the message is fixed: nothing from the address is printed
    assert "hello" not in officer.get("/login?signed_out=hello").text


def test_the_mash_case_page_shows_what_the_referrer_typed(refer, browser_for):
    answers = {str(i): ("yes" if i <= 13 else "no") for i in range(1, 25)}
    made = refer(
        "teacher", concerns=["domestic_abuse"],
        subject={"given_name": "Ana", "family_name": "Reis", "date_of_birth": "1996-05-14",
                 "gender": "female", "language": "Portuguese", "interpreter_needed": True},
        referrer_contact={"phone": "0121 496 0000", "email": "s.patel@northgate.example"},
        victim_aware=False, victim_aware_reason="Telling her could alert him",
        dash={"answers": answers, "police_incidents_12m": 2},
    )  # fmt: skip
    page = browser_for("officer").get(f"/cases/{made['case_id']}").text
    assert "<dt>Referred by</dt><dd>Teacher, Northgate Academy (Education)</dd>" in page
    assert ">0121 496 0000</a>" in page and ">s.patel@northgate.example</a>" in page
    assert "<dt>Interpreter needed</dt><dd>Yes (Portuguese)</dd>" in page
    assert "<dt>Victim knows of the referral</dt><dd>No: Telling her could alert him</dd>" in page
    assert "<dt>DASH score</dt><dd>13 of 24, high risk at 14</dd>" in page
    assert "<dt>Police incidents in the last 12 months</dt><dd>2</dd>" in page
    assert "<td>2. Is the victim very frightened?</td><td>Yes</td>" in page
    assert "<td>24. Is the abuser known to have" in page and "<td>No</td>" in page
    assert "<dt>Date of birth</dt><dd>14 May 1996</dd>" in page
    assert "<dt>Gender</dt><dd>Female</dd>" in page


def test_the_queue_shows_risk_cues_ranks_unrated_high_risk_with_red_and_sorts_every_row(
    runtime, refer, fire, staff, browser_for, clock
):
    from datetime import timedelta

    import pytest

    from referral_engine.errors import InvalidData

    plain = refer()["case_id"]
    clock.advance(timedelta(minutes=5))
    amber = refer(summary="Amber")["case_id"]
    clock.advance(timedelta(minutes=5))
    fire(amber, "officer", "screen", {"rag": "amber", "rationale": "Some concern"})
    answers = {str(i): ("yes" if i <= 15 else "no") for i in range(1, 25)}
    risky = refer(concerns=["domestic_abuse"], dash={"answers": answers})["case_id"]
    clock.advance(timedelta(minutes=5))
    red = refer(summary="Red")["case_id"]
    fire(red, "officer", "screen", {"rag": "red", "rationale": "Danger"})
    officer = staff["officer"].actor
    order = [i["id"] for i in runtime.cases.queue(officer)["items"]]
    # red (due in 4 hours), then the unrated high-risk referral, then the rest
    assert order == [red, risky, plain, amber]
    page = browser_for("officer").get("/queue").text
    assert '<span class="tag tag-amber" title="Domestic abuse">DA</span>' in page
    assert '<span class="tag tag-red">DASH 15 of 24</span>' in page
    assert (
        '<span class="tag tag-red">MARAC criteria met</span>'
        '<span class="criteria">Visible high risk' in page
    )
    assert "Not rated: high risk" in page
    # once rated, the rating decides
    fire(risky, "officer", "screen", {"rag": "green", "rationale": "Safety plan in place"})
    assert [i["id"] for i in runtime.cases.queue(officer)["items"]][:2] == [red, plain]
    # sorting is the query's, over every row the caller may see, not one page
    assert runtime.cases.queue(officer, sort="-received", limit=1)["items"][0]["id"] == red
    assert runtime.cases.queue(officer, sort="received", limit=1)["items"][0]["id"] == plain
    fire(amber, "manager", "assign", {"user": "officer"})
    assert runtime.cases.queue(officer, sort="assignee", limit=1)["items"][0]["id"] == amber
    assert runtime.cases.queue(officer, sort="concern", limit=1)["items"][0]["id"] == risky
    with pytest.raises(InvalidData):
        runtime.cases.queue(officer, sort="name")
    sorted_page = browser_for("manager").get("/queue?sort=assignee").text
    assert 'aria-sort="ascending"><a href="/queue?sort=-assignee"' in sorted_page
    assert '<td data-label="Assigned to">Officer</td>' in sorted_page
