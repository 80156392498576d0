"""Notifications reach people by email (a real SMTP server on loopback) and in the app,
once each, saying only what each may know; delivery survives the mail server going down,
a worker crashing mid-send, and two workers racing for the same rows.

Every test runs on SQLite and on PostgreSQL (conftest's `backend`).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from conftest import SUBJECT, csrf_of, make_settings
from smtpbox import Mailbox, html_of, self_signed, text_of

from referral_engine.notifications.delivery import Sender
from referral_engine.storage.models import (
    Agency,
    Deadline,
    Outbox,
    User,
)

RATIONALE = "Father's drinking known to police; school attendance 61%"
FEEDBACK = "Thank you: early help will contact the family."


@pytest.fixture
def settings(db_url, mailbox):
    return make_settings(
        db_url, smtp_host="127.0.0.1", smtp_port=mailbox.port, smtp_starttls=False,
        smtp_from="Referral Engine <noreply@council.example>",
        notify_max_attempts=3, notify_backoff_seconds=60, notify_lease_seconds=300,
        base_url="https://referrals.council.example", notify_interval_seconds=0.05,
    )  # fmt: skip


@pytest.fixture
def emails(runtime, staff) -> dict[str, str]:
    """Every staff member gets an address: <username>@council.example."""
    with runtime.db.transaction() as s:
        for person in staff.values():
            s.execute(
                sa.update(User)
                .where(User.id == person.user_id)
                .values(email=f"{person.username}@council.example")
            )
    return {name: f"{name}@council.example" for name in staff}


def rows(runtime, **where) -> list[Outbox]:
    with runtime.db.reading() as s:
        query = sa.select(Outbox).order_by(Outbox.id)
        for k, v in where.items():
            query = query.where(getattr(Outbox, k) == v)
        return list(s.execute(query).scalars())


def kinds_for(runtime, user_id: int) -> list[str]:
    return sorted(r.kind for r in rows(runtime, recipient_user_id=user_id))


def mash_life(runtime, refer, fire, clock):
    """A referral from the teacher, assigned, warned of, decided: its whole MASH life."""
    made = refer(subject=SUBJECT)
    case_id = made["case_id"]
    fire(case_id, "manager", "assign", {"user": "officer"})
    fire(case_id, "officer", "screen", {"rag": "amber", "rationale": RATIONALE})
    # The decision is due at 10:00 the next working day; an hour before, tick warns.
    clock.at = datetime(2026, 11, 26, 9, 0, tzinfo=clock.at.tzinfo)
    assert runtime.scheduler.tick().warned
    fire(case_id, "officer", "refer_for_decision", {"rationale": RATIONALE})
    fire(case_id, "manager", "decide", {
        "outcome": "early_help", "onward": [], "rationale": RATIONALE,
        "feedback_to_referrer": FEEDBACK,
    })  # fmt: skip
    return made


def test_a_referrals_life_sends_the_right_emails_and_notices_once_each(
    runtime, staff, emails, refer, fire, clock, mailbox
):
    made = mash_life(runtime, refer, fire, clock)
    reference = made["reference"]
    first = runtime.sender.deliver()
    assert first.sent == 5 and first.failed == first.retrying == 0

    teacher, officer, manager = emails["teacher"], emails["officer"], emails["manager"]
    assert mailbox.subjects(teacher) == [
        "An outcome has been recorded for your referral",
        "Your referral has been received",
    ]
    assert mailbox.subjects(officer) == [
        "A case deadline is due soon",
        "A case has been assigned to you",
    ]
    assert mailbox.subjects(manager) == ["A case deadline is due soon"]
    assert len(mailbox.messages) == 5

    # The referrer: the reference and the outcome, in text and HTML; never the reasoning,
    # the feedback, or anything about the child.
    (outcome,) = [m for m in mailbox.to(teacher) if "outcome" in str(m["Subject"])]
    for body in (text_of(outcome), html_of(outcome)):
        assert reference in body and "Early help" in body
        assert "drinking" not in body and FEEDBACK not in body
        assert "Bloggs" not in body and "2012" not in body and "AB1" not in body
    # Staff notices name the case by number and link to it.
    (near,) = [m for m in mailbox.to(officer) if "due soon" in str(m["Subject"])]
    assert f"https://referrals.council.example/cases/{made['case_id']}" in text_of(near)
    assert "MASH decision" in text_of(near)

    # No personal data or identifiers in any subject line.
    personal = [*SUBJECT.values(), reference, "Jo ", "Bloggs", "2012-05-01"]
    for msg in mailbox.messages:
        subject = str(msg["Subject"])
        assert not [p for p in personal if p and p in subject], subject
        assert msg["Message-ID"].startswith("<outbox.")

    # Once each: another delivery pass and another tick send nothing more.
    assert runtime.sender.deliver().sent == 0
    clock.advance(timedelta(hours=3))
    runtime.scheduler.tick()
    assert runtime.sender.deliver().sent == 0
    assert len(mailbox.messages) == 5
    assert {r.status for r in rows(runtime)} == {"sent"}

    # In the app: the same notices, per person, unread until read.
    assert kinds_for(runtime, staff["teacher"].user_id) == ["referral_outcome", "referral_received"]
    assert kinds_for(runtime, staff["officer"].user_id) == ["case_assigned", "deadline_near"]
    assert kinds_for(runtime, staff["manager"].user_id) == ["deadline_near"]
    mine = runtime.inbox.list(staff["teacher"].actor)
    assert mine["unread"] == 2 and [i["kind"] for i in mine["items"]] == [
        "referral_outcome",
        "referral_received",
    ]
    assert FEEDBACK not in str(mine) and "drinking" not in str(mine)
    assert (
        mine["items"][0]["text"]
        == f"An outcome has been recorded for your referral {reference}: Early help.\n"
    )
    assert runtime.inbox.mark_read(staff["teacher"].actor, [mine["items"][1]["id"]]) == 1
    after = runtime.inbox.list(staff["teacher"].actor)
    assert after["unread"] == 1
    assert [i["read_at"] is None for i in after["items"]] == [True, False]  # unread first
    # Someone else's notice cannot be marked by me.
    officer_row = rows(runtime, recipient_user_id=staff["officer"].user_id)[0]
    assert runtime.inbox.mark_read(staff["teacher"].actor, [officer_row.id]) == 0


def test_the_mail_server_stops_mid_run_and_the_notice_is_retried_then_delivered(
    runtime, staff, emails, refer, fire, clock, mailbox
):
    refer(subject=SUBJECT)
    assert runtime.sender.deliver().sent == 1
    mailbox.stop()
    case_id = refer(subject={**SUBJECT, "given_name": "Sam"})["case_id"]
    fire(case_id, "manager", "assign", {"user": "officer"})

    down = runtime.sender.deliver()
    assert down.sent == 0 and down.retrying == 2
    waiting = [r for r in rows(runtime) if r.status != "sent"]
    assert len(waiting) == 2
    for row in waiting:
        assert row.status == "pending" and row.attempts == 1
        assert "Connection" in row.last_error or "Errno" in row.last_error
        assert row.next_attempt_at == clock.now() + timedelta(seconds=60)

    mailbox.start()
    # Not before its time: the backoff holds even though the server is back.
    assert runtime.sender.deliver().sent == 0
    clock.advance(timedelta(seconds=60))
    back = runtime.sender.deliver()
    assert back.sent == 2
    assert mailbox.subjects(emails["teacher"]) == ["Your referral has been received"] * 2
    assert mailbox.subjects(emails["officer"]) == ["A case has been assigned to you"]
    assert {(r.status, r.attempts) for r in rows(runtime)} == {("sent", 1), ("sent", 2)}


def test_after_the_last_try_a_notice_is_marked_failed_with_the_reason(
    runtime, staff, emails, refer, clock, mailbox
):
    mailbox.stop()
    refer(subject=SUBJECT)
    waits = []
    for _ in range(3):
        got = runtime.sender.deliver()
        (row,) = rows(runtime)
        if row.next_attempt_at:
            waits.append(row.next_attempt_at - clock.now())
            clock.at = row.next_attempt_at
    assert waits == [timedelta(seconds=60), timedelta(seconds=120)]  # doubling
    assert got.failed == 1
    (row,) = rows(runtime)
    assert row.status == "failed" and row.attempts == 3
    assert "after 3 attempts" in row.last_error and "Connection" in row.last_error
    mailbox.start()
    clock.advance(timedelta(days=1))
    assert runtime.sender.deliver().sent == 0  # failed is final; it stays in the app
    assert runtime.inbox.list(staff["teacher"].actor)["unread"] == 1


def test_a_worker_that_crashes_after_claiming_leaves_the_row_to_be_sent_later(
    runtime, staff, emails, refer, clock, mailbox
):
    refer(subject=SUBJECT)
    # A worker claims the row and dies before sending: nothing else may send it while
    # its lease lasts; afterwards the next pass does, once.
    claimed = runtime.sender._claim(clock.now(), "crashed-worker")
    assert len(claimed) == 1
    assert runtime.sender.deliver().sent == 0
    clock.advance(timedelta(seconds=301))
    assert runtime.sender.deliver().sent == 1
    assert len(mailbox.messages) == 1
    (row,) = rows(runtime)
    assert row.status == "sent" and row.attempts == 2 and row.claimed_by is None


def test_two_workers_deliver_each_notice_exactly_once(runtime, staff, emails, clock, mailbox):
    recipients = [p.user_id for p in staff.values()]
    with runtime.db.transaction() as s:
        for n in range(5):
            runtime.outbox.enqueue(
                s, kind="referral_received", user_ids=recipients, dedupe=f"load:{n}",
                payload={"reference": f"RE-2026-LOAD{n:02d}"},
            )  # fmt: skip
    total = 5 * len(recipients)  # 60: more than one batch of 50
    workers = [
        Sender(runtime.db, runtime.clock, runtime.settings, runtime.sender.renderer)
        for _ in range(2)
    ]
    start = threading.Barrier(2)
    results = [None, None]

    def work(i: int) -> None:
        start.wait()
        results[i] = workers[i].deliver()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.sent for r in results) == total
    ids = [str(m["Message-ID"]) for m in mailbox.messages]
    assert len(ids) == total and len(set(ids)) == total
    assert {r.status for r in rows(runtime)} == {"sent"}


def test_a_recipient_without_an_address_is_told_in_the_app_only(runtime, staff, refer, mailbox):
    refer(subject=SUBJECT)
    got = runtime.sender.deliver()
    assert got.skipped == 1 and got.sent == 0 and mailbox.messages == []
    (row,) = rows(runtime)
    assert row.status == "skipped" and row.read_at is None
    assert runtime.inbox.unread_count(staff["teacher"].actor) == 1


def test_deadline_breach_goes_to_the_officer_and_the_managers(
    runtime, staff, emails, refer, fire, clock, mailbox
):
    case_id = refer(subject=SUBJECT)["case_id"]
    fire(case_id, "manager", "assign", {"user": "officer"})
    clock.at = datetime(2026, 11, 26, 10, 30, tzinfo=clock.at.tzinfo)
    result = runtime.scheduler.tick()
    assert result.breached and not result.warned  # already past: breached, not "soon"
    runtime.sender.deliver()
    assert "A case deadline has been missed" in mailbox.subjects(emails["officer"])
    assert mailbox.subjects(emails["manager"]) == ["A case deadline has been missed"]
    (missed,) = mailbox.to(emails["manager"])
    assert "was missed" in text_of(missed) and "Bloggs" not in text_of(missed)


def test_a_warning_moves_with_its_deadline(runtime, staff, refer, fire, clock):
    """Red-rating brings the decision forward to 4 hours: a new warning for the new time."""
    case_id = refer(subject=SUBJECT)["case_id"]
    clock.at = datetime(2026, 11, 26, 8, 30, tzinfo=clock.at.tzinfo)
    assert len(runtime.scheduler.tick().warned) == 1
    assert runtime.scheduler.tick().warned == []
    with runtime.db.reading() as s:
        (deadline,) = s.execute(sa.select(Deadline).where(Deadline.case_id == case_id)).scalars()
    assert deadline.warned_at == clock.now()


# --- MARAC and NRM through the workflow effects ---------------------------------------


def marac_case(runtime, refer, fire) -> int:
    from test_marac import dash, victim

    made = refer(
        "coordinator", pathway="marac", subject=victim(), concerns=["domestic_abuse"],
        consent="not_sought", consent_reason="High risk", victim_aware=False,
        victim_aware_reason="Could alert the abuser", dash=dash(14),
    )  # fmt: skip
    fire(made["case_id"], "coordinator", "accept", {})
    return made["case_id"]


def test_marac_listing_and_each_action_reach_the_owning_agencys_contact(
    runtime, staff, refer, fire, clock
):
    with runtime.db.transaction() as s:
        # City Police names the constable as its contact; Community Safety (the
        # coordinator's own agency, which referred) names the coordinator; health none.
        for agency, who in (("City Police", "constable"), ("Community Safety", "coordinator")):
            agency_id = s.execute(sa.select(Agency.id).where(Agency.name == agency)).scalar()
            runtime.outbox.set_agency_contact(s, agency_id, staff[who].user_id)
    case_id = marac_case(runtime, refer, fire)
    meeting = runtime.meetings.create(
        staff["coordinator"].actor,
        "marac",
        clock.now().date(),
        5,  # heard today
    )
    fire(case_id, "coordinator", "allocate_idva", {"user": "idva"})
    fire(case_id, "coordinator", "list", {"meeting_id": meeting["id"]})
    listed = {r.recipient_user_id for r in rows(runtime, case_id=case_id, kind="marac_listed")}
    assert listed == {staff["idva"].user_id, staff["coordinator"].user_id}

    due = (clock.now() + timedelta(days=14)).date().isoformat()
    fire(case_id, "coordinator", "hear", {"risks": "Threats to kill", "actions": [
        {"owner_agency": "police", "description": "Flag the address", "due": due},
        {"owner_agency": "health", "description": "GP to review", "due": due},
    ]})  # fmt: skip
    actions = rows(runtime, case_id=case_id, kind="marac_action")
    assert [(r.recipient_user_id, r.payload["action_id"]) for r in actions] == [
        (staff["constable"].user_id, "A1"),
        (staff["coordinator"].user_id, "A2"),  # no health contact: the coordinator instead
    ]
    notice = runtime.inbox.list(staff["constable"].actor)["items"][0]
    assert notice["title"] == "Your agency owns a new MARAC action"
    assert "Flag the address" in notice["text"] and "A1" in notice["text"]
    assert "Threats to kill" not in notice["text"]


def test_nrm_recovery_period_ending_is_a_reminder(runtime, staff, refer, fire, clock):
    made = refer(
        "responder", pathway="nrm", concerns=["modern_slavery"],
        subject={**SUBJECT, "date_of_birth": "1990-01-01"},
    )  # fmt: skip
    case_id = made["case_id"]
    fire(case_id, "responder", "submit_referral",
         {"exploitation_types": ["labour"], "consent": True})  # fmt: skip
    fire(case_id, "responder", "record_reasonable_grounds",
         {"decision": "positive", "decided_on": "2026-11-25"})  # fmt: skip
    clock.at = datetime(2026, 12, 20, 12, 0, tzinfo=clock.at.tzinfo)
    runtime.scheduler.tick()
    (notice,) = rows(runtime, case_id=case_id, kind="deadline_reminder")
    assert notice.recipient_user_id == staff["responder"].user_id
    assert notice.payload["deadline"] == "recovery_period_ending"
    text = runtime.inbox.list(staff["responder"].actor)["items"][0]["text"]
    assert "Recovery period ends in five days" in text


# --- over HTTP ---------------------------------------------------------------------------


def test_api_lists_unread_first_and_marks_read(runtime, users, refer, client):
    refer(subject=SUBJECT)
    teacher = users["teacher"]
    listed = teacher.get("/api/notifications").json()
    assert listed["unread"] == 1
    (item,) = listed["items"]
    assert item["kind"] == "referral_received" and item["read_at"] is None
    assert item["link"] == f"/referrals/{item['referral_id']}"
    r = teacher.post("/api/notifications/read", json={"ids": [item["id"]]})
    assert r.status_code == 200 and r.json() == {"marked": 1, "unread": 0}
    assert teacher.get("/api/notifications?unread=true").json()["items"] == []
    bad = teacher.post("/api/notifications/read", json={"ids": ["x"]})
    assert bad.status_code == 422
    assert client.get("/api/notifications").status_code == 401


def test_every_page_shows_the_unread_count(runtime, staff, refer, browser_for):
    refer(subject=SUBJECT)
    page = browser_for("teacher")
    home = page.get("/")
    assert 'aria-label="1 unread"' in home.text
    listing = page.get("/notifications")
    assert "Your referral has been received" in listing.text
    done = page.post("/notifications/read", data={"csrf": csrf_of(listing.text)},
                     follow_redirects=False)  # fmt: skip
    assert done.status_code == 303
    assert "unread" not in page.get("/").text.split("</header>")[0]
    refused = page.post("/notifications/read", data={"csrf": "wrong"}, follow_redirects=False)
    assert refused.status_code == 403


def test_serve_drains_the_outbox_in_the_background(runtime, settings, emails, refer, mailbox):
    from starlette.testclient import TestClient

    from web.app import create_app

    refer(subject=SUBJECT)
    with TestClient(create_app(settings=settings, runtime=runtime, deliver=True)):
        give_up = time.monotonic() + 60  # a bound on waiting, not a speed requirement
        while not mailbox.messages and time.monotonic() < give_up:
            time.sleep(0.05)
    assert mailbox.subjects(emails["teacher"]) == ["Your referral has been received"]
    assert [r.status for r in rows(runtime)] == ["sent"]


def test_a_kind_without_its_own_template_is_still_told_plainly(
    runtime, staff, emails, refer, mailbox
):
    case_id = refer(subject=SUBJECT)["case_id"]
    with runtime.db.transaction() as s:
        runtime.outbox.enqueue(
            s, kind="panel_papers_ready", user_ids=[staff["officer"].user_id], case_id=case_id,
            dedupe="new-kind", payload={"anything": "=unexpected"},
        )  # fmt: skip
    assert runtime.sender.deliver().sent == 2
    (msg,) = mailbox.to(emails["officer"])
    assert str(msg["Subject"]) == "A case needs your attention"
    assert f"Case {case_id} (MASH" in text_of(msg) and "unexpected" not in text_of(msg)
    # A payload the kind's template cannot use (a bad date) gets the plain text too.
    with runtime.db.transaction() as s:
        runtime.outbox.enqueue(
            s, kind="marac_action", user_ids=[staff["officer"].user_id], case_id=case_id,
            dedupe="bad-date", payload={"action_id": "A9", "due": "soon"},
        )  # fmt: skip
    newest = runtime.inbox.list(staff["officer"].actor)["items"][0]
    assert newest["title"] == "A case needs your attention"
    assert newest["text"] == f"Case {case_id} needs your attention.\n"


def test_the_sender_signs_in_when_the_server_asks_and_a_wrong_password_is_not_sent(
    runtime, settings, staff, emails, refer, clock
):
    box = Mailbox(login=("relay-user", "relay-pass-0123"))
    box.start()
    try:
        refer(subject=SUBJECT)

        def sender(password: str) -> Sender:
            config = settings.model_copy(update={
                "smtp_port": box.port, "smtp_user": "relay-user", "smtp_password": password,
            })  # fmt: skip
            return Sender(runtime.db, runtime.clock, config, runtime.sender.renderer)

        wrong = sender("not-the-password").deliver()
        assert wrong.sent == 0 and wrong.retrying == 1 and box.messages == []
        assert "SMTPAuthenticationError" in rows(runtime)[0].last_error
        clock.advance(timedelta(minutes=1))
        assert sender("relay-pass-0123").deliver().sent == 1
        assert box.subjects(emails["teacher"]) == ["Your referral has been received"]
    finally:
        box.stop()


def test_starttls_is_used_and_the_relays_certificate_is_checked(
    runtime, settings, staff, emails, refer, clock, tmp_path
):
    context, ca_file = self_signed(tmp_path)
    box = Mailbox(tls=context)
    box.start()
    try:
        refer(subject=SUBJECT)

        def sender(**config) -> Sender:
            mine = settings.model_copy(update={"smtp_port": box.port, **config})
            return Sender(runtime.db, runtime.clock, mine, runtime.sender.renderer)

        # Without STARTTLS the relay refuses; trusting only the system's CAs, the
        # self-signed relay is not believed. Neither sends anything.
        plain = sender(smtp_starttls=False).deliver()
        assert plain.sent == 0 and "530" in rows(runtime)[0].last_error
        clock.advance(timedelta(minutes=1))
        untrusted = sender(smtp_starttls=True).deliver()
        assert untrusted.sent == 0 and "CERTIFICATE_VERIFY_FAILED" in rows(runtime)[0].last_error
        assert box.messages == []
        clock.advance(timedelta(minutes=2))
        trusted = sender(smtp_starttls=True, smtp_ca_file=ca_file).deliver()
        assert trusted.sent == 1
        assert box.subjects(emails["teacher"]) == ["Your referral has been received"]
    finally:
        box.stop()


def test_an_address_the_server_refuses_fails_at_once_and_others_still_go(
    runtime, staff, emails, refer, fire, mailbox
):
    mailbox.refuse.add(emails["teacher"])
    case_id = refer(subject=SUBJECT)["case_id"]
    fire(case_id, "manager", "assign", {"user": "officer"})
    got = runtime.sender.deliver()
    assert (got.sent, got.failed, got.retrying) == (1, 1, 0)
    refused = rows(runtime, recipient_user_id=staff["teacher"].user_id)[0]
    assert refused.status == "failed" and refused.attempts == 1
    assert "550" in refused.last_error and "No such user" in refused.last_error
    assert mailbox.subjects(emails["officer"]) == ["A case has been assigned to you"]
