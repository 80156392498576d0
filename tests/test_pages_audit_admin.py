"""The auditor's pages, the dashboard and the administrator's pages, through HTTP, on
SQLite and PostgreSQL: what each shows, who may see it, and that each read and change
is itself audited."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import (
    PASSWORD,
    add_approver,
    csrf_of,
    password_link,
    set_password_page,
    sign_in_page,
)
from starlette.testclient import TestClient

from referral_engine.audit.log import rows_for
from referral_engine.errors import Forbidden, InvalidData
from referral_engine.runtime import Runtime
from referral_engine.storage.models import AuditEvent, User

NEW_PASSWORD = "a brand new long passphrase"


def text(html: str) -> str:
    """The page with the line-break hints taken out of audit actions (web:<wbr>case:...)."""
    return html.replace("<wbr>", "")


def audit_docs(rt: Runtime, action: str, **where: Any) -> list[dict[str, Any]]:
    condition = sa.and_(
        AuditEvent.action == action, *(getattr(AuditEvent, k) == v for k, v in where.items())
    )
    with rt.db.reading() as s:
        return list(rows_for(s, condition, 1000))


def user_id(rt: Runtime, username: str) -> int:
    with rt.db.reading() as s:
        return s.execute(sa.select(User.id).where(User.username == username)).scalar_one()


def walk_a_case(refer, fire, browser_for) -> int:
    """A referral, an officer reading and screening it, a refused decision, a decision."""
    case_id = refer(summary="Bruises seen on both arms")["case_id"]
    officer = browser_for("officer")
    assert officer.get(f"/cases/{case_id}").status_code == 200
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "Threats made at home"})
    with pytest.raises(Forbidden):
        fire(case_id, "officer", "decide", {"outcome": "early_help", "onward": [],
             "rationale": "x", "feedback_to_referrer": "y"})  # fmt: skip
    fire(case_id, "officer", "refer_for_decision", {"rationale": "Cannot wait for checks"})
    fire(case_id, "manager", "decide", {
        "outcome": "strategy_discussion", "onward": [], "rationale": "Significant harm likely",
        "feedback_to_referrer": "A strategy discussion will be held."})  # fmt: skip
    return case_id


# --- the audit log ---------------------------------------------------------------------


def test_auditor_searches_by_case_and_sees_the_rows_of_its_life(runtime, refer, fire, browser_for):
    case_id = walk_a_case(refer, fire, browser_for)
    runtime.audit.seal(runtime.db.engine)  # every row linked (PostgreSQL links in batches)
    auditor = browser_for("auditor")
    home = auditor.get("/")
    assert 'href="/audit"' in home.text
    # the case page leads the auditor to its reconstruction; the officer gets no such link
    assert f'href="/audit/cases/{case_id}"' in auditor.get(f"/cases/{case_id}").text
    assert "/audit/cases/" not in browser_for("officer").get(f"/cases/{case_id}").text

    r = auditor.get(f"/audit?case_id={case_id}&order=oldest")
    assert r.status_code == 200
    page = text(r.text)
    for action in ("api:referral:create", "api:case:open", "web:case:view", "api:case:screen",
                   "api:case:decide", "api:case:refer_for_decision"):  # fmt: skip
        found = action.split(":", 1)[1]
        assert found in page, f"{found} not on the page"
    # who, with their roles; the outcome; the chain position
    assert "Officer" in page and "MASH officer" in page and "Manager" in page
    assert "Refused" in page and "Allowed" in page
    assert re.search(r'class="chain-pos">#\d+', page)
    assert "Threats made at home" not in page  # the search shows the rows, not the data
    # oldest first: the case opened before it was screened, screened before decided
    assert page.index("case:open") < page.index("case:screen") < page.index(":case:decide")

    # by user, by action pattern, by outcome and date
    by_manager = text(auditor.get("/audit?user=manager").text)
    assert "case:decide" in by_manager and "case:screen" not in by_manager
    views = text(auditor.get(f"/audit?action=*:case:view&case_id={case_id}").text)
    assert "web:case:view" in views and "case:screen" not in views
    refused = text(auditor.get(f"/audit?outcome=refused&case_id={case_id}").text)
    assert "api:case:decide" in refused and "case:screen" not in refused
    today = runtime.clock.now().date().isoformat()
    assert "case:screen" in text(auditor.get(f"/audit?from={today}&to={today}").text)
    assert "No audit rows match" in auditor.get("/audit?from=2020-01-01&to=2020-01-02").text


def test_a_bad_search_says_why_beside_the_field(runtime, browser_for, staff):
    auditor = browser_for("auditor")
    r = auditor.get("/audit?case_id=abc&user=nobody&from=2026-02-30&to=2026-01-01")
    assert r.status_code == 422
    assert "There is a problem" in r.text
    assert 'href="#case-id"' in r.text and 'id="case-id-error"' in r.text
    assert "there is no user called nobody" in r.text
    assert "enter a real date" in r.text
    assert 'value="abc"' in r.text and 'value="nobody"' in r.text
    refused = audit_docs(runtime, "web:audit:search", outcome="refused")
    assert refused and refused[-1]["summary"]["status"] == 422


def test_the_search_is_itself_audited(runtime, refer, browser_for, staff):
    case_id = refer()["case_id"]
    auditor = browser_for("auditor")
    assert auditor.get(f"/audit?case_id={case_id}&outcome=allowed").status_code == 200
    rows = audit_docs(runtime, "web:audit:search", case_id=case_id)
    assert len(rows) == 1
    row = rows[0]
    assert row["actor"]["username"] == "auditor" and row["outcome"] == "allowed"
    assert row["summary"]["filters"] == {"case_id": str(case_id), "outcome": "allowed"}
    # ... and the next search finds the first one
    page = text(auditor.get("/audit?action=web:audit:search&order=oldest").text)
    assert "web:audit:search" in page and "Auditor" in page


def test_a_case_reconstruction_lists_views_and_events_in_order_with_who_and_why(
    runtime, refer, fire, browser_for
):
    case_id = walk_a_case(refer, fire, browser_for)
    auditor = browser_for("auditor")
    r = auditor.get(f"/audit/cases/{case_id}")
    assert r.status_code == 200
    page = text(r.text)
    # who did what, in order, with the reasons they gave
    # each event by the workflow's label for it
    steps = ["Opened", "Screen and RAG-rate", "Threats made at home", "Access refused",
             "Refer straight for decision", "Cannot wait for checks", "Record the MASH decision",
             "Significant harm likely"]  # fmt: skip
    at = [page.index(s, page.index('class="audit-timeline"')) for s in steps]
    assert at == sorted(at), list(zip(steps, at, strict=True))
    assert "Received → Screening" in page and "Decision pending → Closed" in page
    for who in ("Teacher", "Officer", "Manager"):
        assert who in page
    # who saw it: the officer's page view, with their role
    readers = page[page.index('id="readers"') : page.index('id="timeline"')]
    assert "Officer" in readers and "MASH officer" in readers and "case:view" in readers
    # the reconstruction is itself audited (and so are its reads of the case)
    assert audit_docs(runtime, "web:audit:reconstruct", case_id=case_id)
    assert audit_docs(runtime, "web:case:history", case_id=case_id)
    assert auditor.get("/audit/cases/999999").status_code == 404


def tamper(rt: Runtime, audit_id: int) -> None:
    """What someone with database access would do: drop the append-only trigger, then
    rewrite a row's recorded bytes."""
    rt.audit.seal(rt.db.engine)  # linked first, as any row is a second after it is written
    with rt.db.engine.begin() as conn:
        if rt.db.is_postgres:
            conn.exec_driver_sql("DROP TRIGGER audit_event_append_only ON audit_event")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_event_no_update")
        body = conn.execute(
            sa.select(AuditEvent.body).where(AuditEvent.id == audit_id)
        ).scalar_one()
        doc = json.loads(bytes(body))
        doc["summary"]["rationale_was"] = "nothing to see here"
        forged = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        conn.execute(sa.update(AuditEvent).where(AuditEvent.id == audit_id).values(body=forged))


def test_verify_shows_intact_then_the_first_broken_row(runtime, refer, fire, browser_for):
    case_id = refer()["case_id"]
    fire(case_id, "officer", "screen", {"rag": "amber", "rationale": "Needs checks"})
    auditor = browser_for("auditor")
    page = auditor.get("/audit/verify")
    assert page.status_code == 200 and "Verify the chain now" in page.text
    assert auditor.post("/audit/verify", data={"csrf": "forged"}).status_code == 403

    r = auditor.post("/audit/verify", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 200
    assert "The audit chain is intact" in r.text
    done = audit_docs(runtime, "web:audit:verify", outcome="allowed")
    assert done and done[-1]["summary"]["ok"] is True

    screened = audit_docs(runtime, "api:case:screen", case_id=case_id)[0]["id"]
    tamper(runtime, screened)
    r = auditor.post("/audit/verify", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 200
    assert "The audit chain is broken" in r.text
    assert f"audit row {screened} was altered" in r.text.lower()
    assert f"audit row <strong>{screened}</strong>" in r.text
    assert "nothing to see here" in r.text  # the broken row as it is stored now
    last = audit_docs(runtime, "web:audit:verify")[-1]
    assert last["summary"]["ok"] is False and last["summary"]["first_broken_audit_id"] == screened


@pytest.mark.parametrize("who", ["officer", "teacher", "manager", "admin"])
def test_non_auditors_get_403_and_no_audit_link(runtime, refer, browser_for, who):
    case_id = refer()["case_id"]
    browser = browser_for(who)
    assert 'href="/audit"' not in browser.get("/").text
    for url in ("/audit", f"/audit?case_id={case_id}", f"/audit/cases/{case_id}"):
        r = browser.get(url)
        assert r.status_code == 403, url
        assert "only auditors may read the audit log" in r.text.lower()
    refused = audit_docs(runtime, "web:audit:search", outcome="refused")
    assert refused[0]["actor"]["username"] == who
    # verifying the chain is its own permission: the administrator holds it, no one else here
    verify = browser.get("/audit/verify")
    assert verify.status_code == (200 if who == "admin" else 403)


def test_an_administrator_who_verifies_a_broken_chain_is_not_shown_the_row(
    runtime, refer, browser_for
):
    case_id = refer(summary="Private detail of the case")["case_id"]
    tamper(runtime, audit_docs(runtime, "api:case:open", case_id=case_id)[0]["id"])
    admin = browser_for("admin")
    page = admin.get("/audit/verify")
    r = admin.post("/audit/verify", data={"csrf": csrf_of(page.text)})
    assert "The audit chain is broken" in r.text
    assert "as it is stored now" not in r.text and "nothing to see here" not in r.text


# --- the dashboard ---------------------------------------------------------------------


def busy_year(refer, fire) -> None:
    refer("teacher", concerns=["neglect", "domestic_abuse"])
    refer("constable", concerns=["domestic_abuse"], subject={"given_name": "Al", "family_name":
          "Dee", "date_of_birth": "1990-01-01"})  # fmt: skip
    case_id = refer("teacher", concerns=["child_criminal_exploitation"])["case_id"]
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "Knife found"})
    fire(case_id, "officer", "refer_for_decision", {"rationale": "Cannot wait"})
    fire(case_id, "manager", "decide", {
        "outcome": "police_investigation", "onward": [], "rationale": "r",
        "feedback_to_referrer": "f"})  # fmt: skip


def test_dashboard_shows_the_measures_as_charts_with_tables(runtime, refer, fire, browser_for):
    busy_year(refer, fire)
    auditor = browser_for("auditor")
    assert 'href="/dashboard"' in auditor.get("/").text
    r = auditor.get("/dashboard")
    assert r.status_code == 200
    page = r.text
    # the last 12 months by default
    assert 'value="2025-11-26"' in page and 'value="2026-11-25"' in page
    charts = ("Referrals by source agency", "Referrals by concern",
              "NRM referrals by age group", "NRM referrals by exploitation type")  # fmt: skip
    for heading in charts:
        section = page[page.index(heading) :]
        section = section[: section.index("</section>")]
        assert "<svg" in section and 'role="img"' in section, heading
        assert "<table" in section, heading
    agencies = page[page.index("Referrals by source agency") :]
    agencies = agencies[: agencies.index("</section>")]
    assert "Education" in agencies and "Police" in agencies
    assert re.search(r"<th scope=\"row\">Education</th><td class=\"numeric\">2</td>", agencies)
    # the figures, with the MARAC target from policies/rules.yaml
    for figure in ("Referrals received", "MASH decisions within 1 working day",
                   "MARAC referrals not from the police", "Repeat MARAC cases",
                   "Channel referrals", "Gang-exit completions"):  # fmt: skip
        assert figure in page
    assert "Target 40%" in page
    assert 'class="kpi-value">3<' in page  # referrals received
    assert 'class="kpi-value">100.0%<' in page  # the one MASH decision was in time
    # no inline script or style: the CSP would block them
    assert "style=" not in page and "<style" not in page
    assert re.findall(r"<script[^>]*>", page) == [
        f'<script src="/static/{name}.js" defer>' for name in ("app", "session", "drafts")
    ]  # the project's own files only
    assert audit_docs(runtime, "web:report:kpis")


def test_dashboard_shows_channel_figures_only_to_who_may_see_channel(
    runtime, refer, fire, browser_for
):
    busy_year(refer, fire)
    page = browser_for("manager").get("/dashboard").text
    assert "MASH decisions within 1 working day" in page and "Referrals by concern" in page
    assert "Channel" not in page and "MARAC" not in page and "NRM" not in page
    chair = browser_for("chair").get("/dashboard").text
    assert "Channel referrals" in chair and "Channel adoption rate" in chair


def test_dashboard_refuses_a_bad_date_range_beside_the_field(runtime, browser_for, staff):
    auditor = browser_for("auditor")
    r = auditor.get("/dashboard?from=2026-12-01&to=2026-01-01")
    assert r.status_code == 422
    assert "There is a problem" in r.text and 'href="#to"' in r.text
    assert "must not be before from" in r.text
    assert 'value="2026-12-01"' in r.text and 'value="2026-01-01"' in r.text
    assert "<svg" not in r.text
    r = auditor.get("/dashboard?from=yesterday")
    assert r.status_code == 422 and "enter a real date" in r.text
    r = auditor.get("/dashboard?from=2020-01-01&to=2026-01-01")
    assert r.status_code == 422 and "at most" in r.text
    ok = auditor.get("/dashboard?from=2026-01-01&to=2026-12-31")
    assert ok.status_code == 200 and "1 Jan 2026 to 31 Dec 2026" in ok.text


def test_dashboard_is_for_those_who_may_read_the_measures(runtime, browser_for, staff):
    for who in ("teacher", "officer", "admin"):
        browser = browser_for(who)
        assert 'href="/dashboard"' not in browser.get("/").text
        assert browser.get("/dashboard").status_code == 403
    assert audit_docs(runtime, "web:report:kpis", outcome="refused")


# --- administration --------------------------------------------------------------------


def new_user_form(**overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "username": "jane.doe", "display_name": "Jane Doe", "email": "jane@example.org",
        "agency": "Eastfield Primary", "agency_kind": "education", "roles": ["practitioner"],
    }  # fmt: skip
    form.update(overrides)
    return form


def create(admin: TestClient, **overrides: Any):
    page = admin.get("/admin/users/new")
    assert page.status_code == 200
    return admin.post(
        "/admin/users",
        data={"csrf": csrf_of(page.text), **new_user_form(**overrides)},
        follow_redirects=False,
    )


def test_admin_creates_a_user_who_can_then_sign_in(runtime, app, browser_for, staff):
    admin = browser_for("admin")
    assert 'href="/admin/users"' in admin.get("/").text
    r = create(admin)
    assert r.status_code == 303, r.text
    new_id = user_id(runtime, "jane.doe")
    assert r.headers["location"] == f"/admin/users/{new_id}?done=created"
    page = admin.get(r.headers["location"]).text
    assert "The account is ready" in page and "Jane Doe" in page and "Eastfield Primary" in page
    listing = admin.get("/admin/users").text
    assert "jane.doe" in listing and "Eastfield Primary" in listing and "Education" in listing

    # The administrator set no password and never sees the link: it went to Jane's email.
    secret = password_link(runtime, "jane.doe")
    assert secret not in page and "password" not in re.findall(r"<form.*?</form>", page, re.S)[0]
    with TestClient(app, base_url="http://testserver") as browser:
        assert sign_in_page(browser, "jane.doe", "a perfectly long passphrase").status_code == 401
        done = set_password_page(browser, secret, "a perfectly long passphrase")
        assert done.status_code == 200 and "Your password is set" in done.text
        assert sign_in_page(browser, "jane.doe", "a perfectly long passphrase").status_code == 303
        assert "Refer someone" in browser.get("/").text
    added = audit_docs(runtime, "web:user:add", outcome="allowed")
    assert added[0]["summary"]["username"] == "jane.doe"
    assert added[0]["actor"]["username"] == "admin"


def test_a_bad_new_account_is_refused_beside_the_field_with_values_kept(
    runtime, app, browser_for, staff
):
    admin = browser_for("admin")
    r = create(admin, email="", roles=["practitioner", "idva"])
    assert r.status_code == 422
    assert "There is a problem" in r.text and 'href="#email"' in r.text
    assert "link to set a password is sent there" in r.text
    assert 'name="password"' not in r.text  # an administrator never types one
    assert 'value="jane.doe"' in r.text and 'value="Jane Doe"' in r.text
    assert 'value="Eastfield Primary"' in r.text and 'value="education" selected' in r.text
    assert 'value="idva" checked' in r.text and 'value="practitioner" checked' in r.text
    assert user_id_or_none(runtime, "jane.doe") is None
    # every field at fault at once; a new agency needs its kind
    r = create(admin, username="x", display_name="", agency="New Place", agency_kind="",
               roles=[], email="nope")  # fmt: skip
    assert r.status_code == 422
    for anchor in ("#username", "#display-name", "#email", "#agency-kind", "#roles"):
        assert f'href="{anchor}"' in r.text, anchor
    # a known agency keeps its kind; another kind is refused
    r = create(admin, agency="City Police", agency_kind="health")
    assert r.status_code == 422 and "City Police is already a Police agency" in r.text
    assert create(admin, username="teacher").status_code == 422
    refused = audit_docs(runtime, "web:user:add", outcome="refused")
    assert len(refused) == 4


def test_a_weak_password_is_refused_on_the_set_password_page(runtime, app, browser_for, staff):
    admin = browser_for("admin")
    assert create(admin).status_code == 303
    secret = password_link(runtime, "jane.doe")
    with TestClient(app, base_url="http://testserver") as browser:
        r = set_password_page(browser, secret, "short")
        assert r.status_code == 422 and 'href="#password"' in r.text
        field = r.text[r.text.index('<label for="password"') :]
        field = field[: field.index("</div>")]
        assert "must be at least 12 characters" in field and 'id="password-error"' in field
        assert "short" not in re.findall(r'name="password"[^>]*>', r.text)[0]
        r = set_password_page(browser, secret, "jane.doe and more")
        assert r.status_code == 422 and "must not contain the username" in r.text
        r = set_password_page(browser, secret, "a perfectly long passphrase", "another one")
        assert r.status_code == 422 and "the two passwords are not the same" in r.text
        assert set_password_page(browser, secret, NEW_PASSWORD).status_code == 200
        # once only
        again = browser.get(f"/account/password?token={secret}")
        assert again.status_code == 404 and "expired or has already been used" in again.text
        used = browser.post(
            "/account/password", data={"token": secret, "password": "x" * 20, "confirm": "x" * 20}
        )
        assert used.status_code == 404
        assert sign_in_page(browser, "jane.doe", NEW_PASSWORD).status_code == 303
    docs = audit_docs(runtime, "web:auth:set_password")
    assert [d["outcome"] for d in docs] == ["allowed", "refused"]
    assert all(NEW_PASSWORD not in json.dumps(d) and secret not in json.dumps(d) for d in docs)


def user_id_or_none(rt: Runtime, username: str) -> int | None:
    with rt.db.reading() as s:
        return s.execute(sa.select(User.id).where(User.username == username)).scalar()


def change(admin: TestClient, uid: int, **data: Any):
    page = admin.get(f"/admin/users/{uid}")
    assert page.status_code == 200
    return admin.post(
        f"/admin/users/{uid}", data={"csrf": csrf_of(page.text), **data}, follow_redirects=False
    )


def test_disabling_a_user_ends_their_session_and_api_token_at_once(
    runtime, app, users, browser_for
):
    teacher_browser = browser_for("teacher")
    assert teacher_browser.get("/").status_code == 200
    assert users["teacher"].get("/api/me").status_code == 200
    admin = browser_for("admin")
    uid = users["teacher"].user_id

    # Disabling asks first, and nothing changes until it is confirmed.
    r = change(admin, uid, change="disable")
    assert r.status_code == 200 and "Disable Teacher's account?" in r.text
    assert 'name="confirm" value="yes"' in r.text
    assert users["teacher"].get("/api/me").status_code == 200
    r = change(admin, uid, change="disable", confirm="yes")
    assert r.status_code == 303
    assert "Account disabled" in admin.get(r.headers["location"]).text
    assert 'class="tag tag-red">Disabled' in admin.get("/admin/users").text
    # the open session and the API token stop working now, not at expiry
    gone = teacher_browser.get("/", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    assert users["teacher"].get("/api/me").status_code == 401
    with TestClient(app, base_url="http://testserver") as fresh:
        assert sign_in_page(fresh, "teacher").status_code == 401

    assert change(admin, uid, change="enable").status_code == 303
    with TestClient(app, base_url="http://testserver") as fresh:
        assert sign_in_page(fresh, "teacher").status_code == 303
    # an administrator may not disable their own account
    me = users["admin"].user_id
    r = change(admin, me, change="disable", confirm="yes")
    assert r.status_code == 422 and "you cannot disable your own account" in r.text
    disabled = audit_docs(runtime, "web:user:disable")
    assert [(d["outcome"], d["summary"].get("disabled")) for d in disabled] == [
        ("allowed", True),
        ("refused", None),
    ]
    assert audit_docs(runtime, "web:user:enable")[0]["summary"]["username"] == "teacher"


def test_admin_resets_a_password_without_ever_knowing_it(runtime, app, browser_for, staff):
    """A reset sends the person a one-time link; the old password stops at once; the
    administrator's page shows neither link nor password."""
    admin = browser_for("admin")
    # An account made on the command line has no email: no link can go anywhere.
    r = change(admin, staff["teacher"].user_id, change="reset_password")
    assert r.status_code == 422 and "this account has no email address" in r.text
    assert create(admin).status_code == 303
    uid = user_id(runtime, "jane.doe")
    with TestClient(app, base_url="http://testserver") as fresh:
        set_password_page(fresh, password_link(runtime, "jane.doe"), PASSWORD)
        assert sign_in_page(fresh, "jane.doe", PASSWORD).status_code == 303
    r = change(admin, uid, change="reset_password")
    assert r.status_code == 303
    page = admin.get(r.headers["location"]).text
    secret = password_link(runtime, "jane.doe")
    assert "Password reset" in page and "sent a link" in page and secret not in page
    with TestClient(app, base_url="http://testserver") as fresh:
        assert sign_in_page(fresh, "jane.doe", PASSWORD).status_code == 401
        assert set_password_page(fresh, secret, NEW_PASSWORD).status_code == 200
        assert sign_in_page(fresh, "jane.doe", NEW_PASSWORD).status_code == 303
    rows = audit_docs(runtime, "web:user:reset_password")
    assert [d["outcome"] for d in rows] == ["refused", "allowed"]
    assert all(secret not in json.dumps(d) for d in rows)


def test_a_set_password_link_expires(runtime, app, browser_for, staff, clock):
    from datetime import timedelta

    admin = browser_for("admin")
    assert create(admin).status_code == 303
    secret = password_link(runtime, "jane.doe")
    clock.advance(timedelta(hours=runtime.settings.password_link_hours, seconds=1))
    with TestClient(app, base_url="http://testserver") as fresh:
        r = fresh.get(f"/account/password?token={secret}")
        assert r.status_code == 404 and "Ask your administrator" in r.text


def test_admin_edits_roles_and_agency(runtime, app, browser_for, staff):
    admin = browser_for("admin")
    uid = staff["teacher"].user_id
    r = change(admin, uid, change="set_roles", roles=["practitioner", "mash_officer"])
    assert r.status_code == 303
    page = admin.get(r.headers["location"]).text
    assert "Roles saved" in page and 'value="mash_officer" checked' in page
    # MASH officers read cases: the role waits for an access approver.
    assert "Waiting for an access approver" in page
    with TestClient(app, base_url="http://testserver") as fresh:
        sign_in_page(fresh, "teacher")
        assert 'href="/queue"' not in fresh.get("/").text
    add_approver(runtime)
    approver = browser_for("approver")
    listing = approver.get("/admin/approvals")
    assert listing.status_code == 200 and "MASH officer" in listing.text
    request_id = re.search(r'action="/admin/approvals/(\d+)"', listing.text).group(1)
    r = approver.post(f"/admin/approvals/{request_id}",
                      data={"csrf": csrf_of(listing.text), "decision": "approve"})  # fmt: skip
    assert r.status_code == 200 and "Approved" in r.text
    with TestClient(app, base_url="http://testserver") as fresh:
        sign_in_page(fresh, "teacher")
        assert 'href="/queue"' in fresh.get("/").text  # a MASH officer works the queue
    r = change(admin, uid, change="set_roles")
    assert r.status_code == 422 and "choose at least one role" in r.text
    r = change(admin, staff["admin"].user_id, change="set_roles", roles=["auditor"])
    assert r.status_code == 422 and "cannot change your own roles" in r.text

    r = change(admin, uid, change="set_agency", agency="Westbrook College", agency_kind="")
    assert r.status_code == 422 and "choose the kind of this new agency" in r.text
    assert 'value="Westbrook College"' in r.text
    r = change(admin, uid, change="set_agency", agency="Westbrook College",
               agency_kind="education")  # fmt: skip
    assert r.status_code == 303
    assert "Westbrook College (Education)" in admin.get(f"/admin/users/{uid}").text
    assert change(admin, uid, change="set_agency", agency="City Police").status_code == 303

    roles = audit_docs(runtime, "web:user:set_roles", outcome="allowed")
    assert roles[0]["summary"]["before"] == ["practitioner"]
    assert roles[0]["summary"]["after"] == ["practitioner"]
    assert roles[0]["summary"]["pending"] == ["mash_officer"]
    moves = audit_docs(runtime, "web:user:set_agency", outcome="allowed")
    assert [m["summary"]["after"]["agency"] for m in moves] == ["Westbrook College", "City Police"]
    forged = admin.post(
        f"/admin/users/{uid}", data={"csrf": "x", "change": "disable", "confirm": "yes"}
    )
    assert forged.status_code == 403


def test_admin_pages_hold_no_case_content_and_cases_are_404(runtime, refer, browser_for):
    case_id = refer(
        summary="Zebedee told staff about the cellar",
        subject={"given_name": "Zebedee", "family_name": "Quux", "date_of_birth": "2012-01-01"},
    )["case_id"]
    admin = browser_for("admin")
    home = admin.get("/").text
    uid = user_id(runtime, "teacher")
    urls = ("/admin/users", "/admin/users/new", f"/admin/users/{uid}", "/admin/users?q=tea")
    pages = [home] + [admin.get(url).text for url in urls]
    for page in pages:
        assert "Zebedee" not in page and "Quux" not in page and "cellar" not in page
        assert "/cases/" not in page and "/people/" not in page and "/queue" not in page
        assert 'href="/audit' not in page
    assert admin.get(f"/cases/{case_id}").status_code == 404
    assert admin.get("/queue").text.count("Zebedee") == 0


def test_only_administrators_manage_users_and_every_change_is_audited(runtime, browser_for, staff):
    for who in ("auditor", "manager"):
        browser = browser_for(who)
        assert 'href="/admin/users"' not in browser.get("/").text
        assert browser.get("/admin/users").status_code == 403
        assert browser.get(f"/admin/users/{staff['teacher'].user_id}").status_code == 403
        page = browser.get("/")
        r = browser.post("/admin/users", data={"csrf": csrf_of(page.text), **new_user_form()})
        assert r.status_code == 403
    assert user_id_or_none(runtime, "jane.doe") is None
    refused = audit_docs(runtime, "web:user:add", outcome="refused")
    assert {d["actor"]["username"] for d in refused} == {"auditor", "manager"}

    admin = browser_for("admin")
    assert create(admin).status_code == 303
    uid = user_id(runtime, "jane.doe")
    change(admin, uid, change="set_roles", roles=["idva"])
    change(admin, uid, change="set_agency", agency="Safer Homes")
    change(admin, uid, change="disable", confirm="yes")
    change(admin, uid, change="enable")
    change(admin, uid, change="reset_password")
    with runtime.db.reading() as s:
        actions = [
            d["action"]
            for d in rows_for(s, AuditEvent.action.like("web:user:%"), 1000)  # type: ignore[attr-defined]
            if d["actor"]["username"] == "admin" and d["outcome"] == "allowed"
            and d["action"] not in ("web:user:list", "web:user:view")
        ]  # fmt: skip
    verbs = ["add", "set_roles", "set_agency", "disable", "enable", "reset_password"]
    assert actions == [f"web:user:{v}" for v in verbs]
    assert runtime.verify_audit().ok


def test_the_audit_search_takes_a_case_reference(runtime, refer, fire, browser_for):
    made = refer()
    auditor = browser_for("auditor")
    by_ref = auditor.get("/audit", params={"case_id": made["reference"].lower()})
    by_id = auditor.get("/audit", params={"case_id": str(made["case_id"])})
    assert by_ref.status_code == 200, by_ref.text
    assert text(by_ref.text).count("case:open") == text(by_id.text).count("case:open") == 1
    unknown = auditor.get("/audit", params={"case_id": "RE-2026-NOSUCH"})
    assert unknown.status_code == 422 and "No case has the reference RE-2026-NOSUCH" in unknown.text
    bad = auditor.get("/audit", params={"case_id": "twelve"})
    assert "or a reference, like RE-2026-XLUBMJ" in bad.text


def test_an_auditor_sees_changes_only_and_refusals_apart_from_invalid_input(
    runtime, refer, fire, browser_for
):
    case_id = refer()["case_id"]
    with pytest.raises(InvalidData):
        fire(case_id, "officer", "screen", {"rag": "purple"})
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "Threats made at home"})
    with pytest.raises(Forbidden):
        fire(case_id, "officer", "decide", {"outcome": "early_help", "onward": [],
             "rationale": "x", "feedback_to_referrer": "y"})  # fmt: skip
    fire(case_id, "officer", "refer_for_decision", {"rationale": "Cannot wait for checks"})
    fire(case_id, "manager", "decide", {
        "outcome": "strategy_discussion", "onward": [], "rationale": "Significant harm likely",
        "feedback_to_referrer": "A strategy discussion will be held."})  # fmt: skip
    browser_for("officer").get(f"/cases/{case_id}")
    auditor = browser_for("auditor")
    everything = auditor.get(f"/audit/cases/{case_id}").text
    # the officer's refused decision is a refusal of access; the blank reopen, invalid input
    assert '<p class="caption">Access refused</p><p class="big">1</p>' in everything
    assert '<p class="caption">Invalid input</p><p class="big">1</p>' in everything
    assert "Refused attempts" not in everything
    changes = auditor.get(f"/audit/cases/{case_id}", params={"show": "changes"}).text
    timeline = changes[changes.index('class="audit-timeline"') :]
    # received, opened, screened, referred for decision, decided
    assert timeline.count('class="at-change"') == 5
    assert 'class="at-read"' not in timeline and 'class="at-refused"' not in timeline
    assert "Show everything" in changes


def test_case_page_done_shows_only_fixed_sentences(refer, fire, browser_for):
    case_id = refer()["case_id"]
    officer = browser_for("officer")
    done = officer.get(f"/cases/{case_id}", params={"done": "screen"}).text
    assert "\u201cScreen and RAG-rate\u201d is recorded." in done
    forged = officer.get(f"/cases/{case_id}", params={"done": "Call_0800_FAKE_now"}).text
    assert "0800" not in forged and "FAKE" not in forged and "Call" not in forged


def test_notifications_keep_their_line_breaks_without_inline_style(
    runtime, refer, fire, browser_for
):
    case_id = refer()["case_id"]
    fire(case_id, "manager", "assign", {"user": "officer"})
    officer = browser_for("officer")
    page = officer.get("/notifications")
    assert page.status_code == 200 and "style=" not in page.text
    assert 'class="notice-text"' in page.text
    assert "style-src 'self'" in page.headers["content-security-policy"]
    # the line breaks are kept by the site's own stylesheet, which the policy allows
    assert ".notice-text { white-space: pre-line; }" in officer.get("/static/app.css").text
