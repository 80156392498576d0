"""Sessions that never lose work (issue 19), in real Chromium against a real uvicorn.

A short idle timeout by setting (10 minutes, warned 5 before), the product's clock moved
on: the referral form is typed into, the session ends, "Send referral" goes to the
sign-in page with a message saying why, and after signing in the form has every typed
value back (web/static/drafts.js). "Stay signed in" renews a session before it ends; no
renewal outlives the absolute lifetime.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import PASSWORD, make_settings
from playwright.sync_api import expect
from test_browser import chromium, site  # noqa: F401  (fixtures)

from referral_engine.errors import Unauthorised


@pytest.fixture
def settings(db_url):
    return make_settings(
        db_url, token_ttl_minutes=10, session_warning_minutes=5, session_max_hours=0.5
    )


TYPED = {
    "Given name": "Zoë",
    "Family name": "O'Neill",
    "Other names": "Zo",
    "What has happened, and why are you worried?": "Says dad hits mum.\nShe has a bruise.",
    "Email address": "z.teacher@northgate.example",
}


def test_an_expired_session_on_the_referral_form_loses_nothing(site, clock):  # noqa: F811
    teacher = site.sign_in("teacher")
    teacher.goto("/referrals/new")
    for label, value in TYPED.items():
        teacher.get_by_label(label).fill(value)
    teacher.get_by_role("checkbox", name="Neglect", exact=True).check()
    teacher.get_by_role("checkbox", name="Domestic abuse").check()

    clock.advance(timedelta(minutes=11))  # the idle timeout passes on the server
    teacher.get_by_role("button", name="Send referral").click()
    expect(teacher.locator("#session-ended")).to_contain_text("Your session ended")
    teacher.get_by_label("Username").fill("teacher")
    teacher.get_by_label("Password").fill(PASSWORD)
    teacher.get_by_role("button", name="Sign in").click()

    expect(teacher).to_have_url(f"{site.url}/referrals/new")
    expect(teacher.locator("#draft-restored")).to_be_visible()
    for label, value in TYPED.items():
        expect(teacher.get_by_label(label)).to_have_value(value)
    expect(teacher.get_by_role("checkbox", name="Neglect", exact=True)).to_be_checked()
    expect(teacher.get_by_role("checkbox", name="Domestic abuse")).to_be_checked()
    site.shot(teacher, "restored")


def test_stay_signed_in_renews_the_session_before_it_ends(site, clock):  # noqa: F811
    teacher = site.sign_in("teacher")
    warning = teacher.locator("#session-warning")
    expect(warning).to_be_hidden()
    clock.advance(timedelta(minutes=6))  # 4 minutes left: inside the warning
    teacher.goto("/referrals/new")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("You will be signed out in 4 minutes")
    teacher.get_by_label("Given name").fill("Kept")
    teacher.get_by_role("button", name="Stay signed in").click()
    expect(teacher.locator("body")).to_have_attribute("data-session-renewed", "1")
    expect(warning).to_be_hidden()
    clock.advance(timedelta(minutes=6))  # past the first token's end, inside the new one
    teacher.goto("/referrals")
    expect(teacher.get_by_role("button", name="Sign out")).to_be_visible()


def test_no_renewal_outlives_the_absolute_lifetime(runtime, staff, clock):
    """Half an hour by setting: renewing every 9 minutes works until then, not after."""
    token, actor, ttl = runtime.accounts.sign_in("teacher", PASSWORD, source="web", request_id=None)
    assert ttl == 600
    lives = []
    for _ in range(3):  # at 9, 18 and 27 minutes
        clock.advance(timedelta(minutes=9))
        token, ttl = runtime.accounts.renew(token, actor)
        lives.append(ttl)
    assert lives == [600, 600, 180]  # the last one ends at the half hour, not later
    clock.advance(timedelta(minutes=2, seconds=30))
    with pytest.raises(Unauthorised, match="longest lifetime"):
        runtime.accounts.renew(token, actor)
    clock.advance(timedelta(seconds=31))
    with pytest.raises(Unauthorised):
        runtime.accounts.actor_from_token(token, source="web", request_id=None)


def test_a_case_event_form_keeps_its_draft_across_a_sign_in(site, clock, refer):  # noqa: F811
    """The long case forms too: typed, session ended, signed in again, back at the form."""
    case_id = refer()["case_id"]
    officer = site.sign_in("officer")
    officer.goto(f"/cases/{case_id}")
    officer.locator("details.event-form > summary", has_text="Screen and RAG-rate").click()
    form = officer.locator("details.event-form[open] form")
    form.get_by_label("RAG rating").select_option("amber")
    rationale = "Seen twice this week hungry; school worried.\nNo answer at home."
    form.get_by_label("Rationale for the rating").fill(rationale)
    clock.advance(timedelta(minutes=11))
    form.get_by_role("button", name="Screen and RAG-rate").click()
    expect(officer.locator("#session-ended")).to_be_visible()
    officer.get_by_label("Username").fill("officer")
    officer.get_by_label("Password").fill(PASSWORD)
    officer.get_by_role("button", name="Sign in").click()
    form = officer.locator("details.event-form[open] form")
    expect(form.get_by_label("Rationale for the rating")).to_have_value(rationale)
    expect(form.get_by_label("RAG rating")).to_have_value("amber")
    # Sent this time: the confirmation page clears the draft from the tab's storage.
    form.get_by_role("button", name="Screen and RAG-rate").click()
    expect(officer.get_by_role("status").first).to_contain_text("Done: screen")
    key = f"draft:case-{case_id}-screen"
    assert officer.evaluate(f"window.sessionStorage.getItem('{key}')") is None
