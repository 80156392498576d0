"""Need-to-know beyond roles, opening a record with a reason, and lawful basis per
disclosure (issue 6, "Access").

The permission matrix (test_permission_matrix.py) checks every role against every route;
these tests follow the stories: what an IDVA, a practitioner, an administrator and an
auditor can and cannot reach; agency scoping where policy asks for it; a MASH manager who
must open a Channel record with a reason, for a limited time, read-only, and the Channel
chair who reviews that; and the lawful basis and recipient of every information request
and answer.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from conftest import PASSWORD, STAFF, add_user, csrf_of, make_settings, referral_body

from referral_engine.errors import Forbidden, NotFound, ReasonRequired
from referral_engine.runtime import Runtime
from referral_engine.settings import PROJECT_ROOT
from referral_engine.storage.models import AccessGrant, AuditEvent, Case

ADULT = {"given_name": "Callum", "family_name": "Reid", "date_of_birth": "1998-02-03",
         "gender": "male"}  # fmt: skip
NO_CONSENT = {"consent": "not_sought", "consent_reason": "Risk of significant harm."}
REASON = "Strategy discussion today: a sibling is on the Channel caseload."


def ok(r, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def problem(r, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


def audit_rows(rt: Runtime, action: str) -> list[dict[str, Any]]:
    import json

    with rt.db.reading() as s:
        rows = s.execute(
            sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        ).scalars()
        return [{"outcome": r.outcome, "case_id": r.case_id, **json.loads(r.body)} for r in rows]


def sign_in(person) -> None:
    r = person.client.post(
        "/api/auth/token", data={"username": person.username, "password": PASSWORD}
    )
    person.token = ok(r)["access_token"]


def channel_case(runtime, staff) -> int:
    """A Channel case Prevent referred straight into Channel: nobody else has a link to it."""
    body = referral_body(pathway="channel", subject=ADULT, concerns=["radicalisation"],
                         **NO_CONSENT)  # fmt: skip
    return runtime.referrals.create(staff["prevent"].actor, body)["case_id"]


def onward_channel_case(runtime, staff) -> tuple[int, int]:
    """A MASH case the manager decided with an onward referral to Channel: (the MASH case,
    the Channel case). The manager reaches the Channel case only through that link."""
    body = referral_body(subject=ADULT, concerns=["radicalisation"], **NO_CONSENT)
    mash = runtime.referrals.create(staff["teacher"].actor, body)["case_id"]
    officer, manager = staff["officer"].actor, staff["manager"].actor
    for who, event, data in (
        (officer, "screen", {"rag": "amber", "rationale": "Worrying online contact."}),
        (officer, "refer_for_decision", {"rationale": "A Prevent matter."}),
        (manager, "decide", {"outcome": "no_further_action", "onward": ["channel"],
                             "rationale": "For Prevent.", "feedback_to_referrer": "Passed on."}),
    ):  # fmt: skip
        with runtime.db.reading() as s:
            version = s.get(Case, mash).version
        runtime.engine.fire(mash, event, who, data, version)
    with runtime.db.reading() as s:
        (channel,) = s.execute(sa.select(Case.id).where(Case.parent_case_id == mash)).scalars()
    return mash, channel


# --- opening a record with a reason ------------------------------------------------------


def test_opening_a_channel_record_needs_a_reason_lasts_a_while_and_is_reviewed(
    runtime, users, clock
):
    manager, chair, prevent = users["manager"], users["chair"], users["prevent"]
    _, case_id = onward_channel_case(runtime, users)
    minutes = runtime.policy.rules.break_glass.minutes

    # Without a reason: 403 asking for one, and nothing of the case; absent from lists.
    asked = problem(manager.get(f"/api/cases/{case_id}"), 403)
    assert asked["type"] == "urn:referral-engine:problem:reason-required"
    assert f"/api/cases/{case_id}/access" in asked["detail"] and "Callum" not in str(asked)
    assert case_id not in {i["id"] for i in ok(manager.get("/api/cases"))["items"]}
    # A reason too short to be one, or none at all, is refused naming the field.
    short = problem(manager.post(f"/api/cases/{case_id}/access", json={"reason": "need"}), 422)
    assert [e["field"] for e in short["errors"]] == ["reason"]
    problem(manager.post(f"/api/cases/{case_id}/access", json={}), 422)
    # Someone policy does not let open it: 404, exactly as for a case that does not exist.
    problem(users["officer"].post(f"/api/cases/{case_id}/access", json={"reason": REASON}), 404)
    # Someone who can already see it needs no reason.
    problem(prevent.post(f"/api/cases/{case_id}/access", json={"reason": REASON}), 409)

    grant = ok(manager.post(f"/api/cases/{case_id}/access", json={"reason": REASON}), 201)
    assert grant["reason"] == REASON and grant["case_id"] == case_id
    assert grant["expires_at"] == (clock.now() + timedelta(minutes=minutes)).isoformat()
    seen = ok(manager.get(f"/api/cases/{case_id}"))
    assert seen["break_glass"] is True and seen["person"]["given_name"] == "Callum"
    assert seen["available_events"] == []  # reading only
    ok(manager.get(f"/api/cases/{case_id}/history"))
    body = {"event": "start_gateway", "data": {}, "expected_version": seen["version"]}
    problem(manager.post(f"/api/cases/{case_id}/events", json=body), 403)
    # Opened to be read, not to be listed: the queue still leaves it out.
    assert case_id not in {i["id"] for i in ok(manager.get("/api/cases"))["items"]}
    # Nobody else gains anything from the manager's grant.
    problem(users["officer"].get(f"/api/cases/{case_id}"), 404)

    # Everything audited: the refusals, the opening with its reason, each read through it.
    opened = audit_rows(runtime, "api:case:break_glass")
    assert [r["outcome"] for r in opened] == ["refused"] * 3 + ["allowed"]
    assert opened[-1]["summary"]["grant"] == grant["id"] and opened[-1]["case_id"] == case_id
    assert REASON not in json.dumps(opened)  # the reason is in the grant, not the chain
    views = [r for r in audit_rows(runtime, "api:case:view") if r["case_id"] == case_id]
    assert any(r["outcome"] == "refused" for r in views)
    assert [r["summary"].get("break_glass") for r in views if r["outcome"] == "allowed"] == [True]

    # Time-boxed: once the grant has run out, the reason is asked for again.
    clock.advance(timedelta(minutes=minutes + 1))
    for person in (manager, chair, users["coordinator"]):
        sign_in(person)
    assert problem(manager.get(f"/api/cases/{case_id}"), 403)["type"].endswith("reason-required")

    # The Channel chair reviews it; a MARAC coordinator reviews MARAC openings only, and a
    # MASH manager reviews none.
    waiting = ok(chair.get("/api/access/grants"))
    assert [(g["id"], g["user"], g["active"]) for g in waiting["items"]] == [
        (grant["id"], "Manager", False)
    ]
    assert ok(users["coordinator"].get("/api/access/grants"))["items"] == []
    problem(manager.get("/api/access/grants"), 403)
    url = f"/api/access/grants/{grant['id']}/review"
    problem(users["coordinator"].post(url, json={"note": "fine"}), 404)
    problem(chair.post(url, json={"note": "  "}), 422)
    done = ok(chair.post(url, json={"note": "Justified: strategy meeting minuted."}))
    assert done["reviewed_by"] == "Chair" and done["review_note"].startswith("Justified")
    problem(chair.post(url, json={"note": "again"}), 409)
    assert ok(chair.get("/api/access/grants"))["total"] == 0
    assert [g["id"] for g in ok(chair.get("/api/access/grants?reviewed=true"))["items"]] == [
        grant["id"]
    ]
    reviews = audit_rows(runtime, "api:break_glass:review")
    assert [r["outcome"] for r in reviews] == ["refused", "refused", "allowed", "refused"]
    assert runtime.verify_audit().ok


def test_nobody_reviews_their_own_opening(runtime, staff, clock):
    case_id = channel_case(runtime, staff)
    with runtime.db.transaction() as s:
        row = AccessGrant(
            user_id=staff["chair"].user_id, case_id=case_id, pathway="channel",
            reason=REASON, granted_at=clock.now(), expires_at=clock.now(),
        )  # fmt: skip
        s.add(row)
        s.flush()
        grant_id = row.id
    with pytest.raises(Forbidden, match="your own"):
        runtime.break_glass.review(staff["chair"].actor, grant_id, "looks fine to me")


def test_a_grant_reads_one_record_and_counts_or_changes_nothing(runtime, staff, refer):
    """Reports do not count a record opened with a reason, and nothing can be changed
    through it: not the case, not its person (a merge)."""
    from datetime import date

    mash_person = runtime.cases.view(staff["auditor"].actor, refer("teacher")["case_id"])
    _, case_id = onward_channel_case(runtime, staff)
    manager = staff["manager"].actor
    period = (date(2026, 11, 1), date(2026, 11, 30))
    before = runtime.reports.kpis(manager, *period)
    runtime.break_glass.open(manager, case_id, REASON)
    with runtime.db.reading() as s:
        manager = runtime.accounts.actor_for_user(s, manager.user_id, source="api", request_id=None)
    channel_person = runtime.cases.view(manager, case_id)["person_id"]
    assert runtime.reports.kpis(manager, *period) == before
    # Merging the Channel subject's record moves what the manager sees in their own
    # right (the MASH case) and neither moves nor names the Channel case.
    merged = runtime.merges.merge(manager, channel_person, mash_person["person_id"], "same")
    assert case_id not in merged["moved_cases"] and merged["moved_cases"]
    assert str(case_id) not in json.dumps(merged)
    with runtime.db.reading() as s:
        assert s.get(Case, case_id).person_id == channel_person
    with pytest.raises(Forbidden):
        fire_as(runtime, manager, case_id, "start_gateway")


def test_opening_with_a_reason_through_the_pages(runtime, staff, browser_for):
    _, case_id = onward_channel_case(runtime, staff)
    manager = browser_for("manager")
    page = manager.get(f"/cases/{case_id}")
    assert page.status_code == 403 and "Callum" not in page.text
    assert 'name="reason"' in page.text and f'action="/cases/{case_id}/access"' in page.text
    r = manager.post(f"/cases/{case_id}/access", data={"csrf": csrf_of(page.text), "reason": "x"})
    assert r.status_code == 422 and "say why you need this record" in r.text
    r = manager.post(
        f"/cases/{case_id}/access", data={"csrf": "forged", "reason": REASON},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 403
    r = manager.post(
        f"/cases/{case_id}/access", data={"csrf": csrf_of(page.text), "reason": REASON},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{case_id}"
    shown = manager.get(f"/cases/{case_id}")
    assert shown.status_code == 200 and "Callum" in shown.text
    assert "You opened this record with a reason" in shown.text
    assert "What you can do now" not in shown.text

    chair = browser_for("chair")
    queue = chair.get("/review/access")
    assert queue.status_code == 200 and REASON in queue.text
    assert 'href="/review/access"' in queue.text  # in the chair's menu
    grant_id = int(re.search(r'action="/review/access/(\d+)"', queue.text).group(1))
    r = chair.post(f"/review/access/{grant_id}", data={"csrf": csrf_of(queue.text), "note": ""})
    assert r.status_code == 422
    r = chair.post(
        f"/review/access/{grant_id}",
        data={"csrf": csrf_of(queue.text), "note": "Checked with the manager."},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert "Checked with the manager." in chair.get("/review/access?reviewed=1").text
    assert manager.get("/review/access").status_code == 403
    actions = [r["outcome"] for r in audit_rows(runtime, "web:break_glass:review")]
    assert actions == ["refused", "allowed"]


def test_an_idva_reads_an_unallocated_case_only_with_a_reason_and_never_works_it(
    runtime, staff, refer, fire
):
    body = dict(pathway="marac", subject=ADULT, concerns=["domestic_abuse"], **NO_CONSENT)
    mine = refer("coordinator", **body)["case_id"]
    other = refer("coordinator", **{**body, "subject": {**ADULT, "given_name": "Dee"}})["case_id"]
    fire(mine, "coordinator", "allocate_idva", {"user": "idva"})
    idva = staff["idva"].actor
    with runtime.db.reading() as s:
        visible = set(s.execute(sa.select(Case.id).where(runtime.access.visible_cases(idva)))
                      .scalars())  # fmt: skip
    assert visible == {mine}
    # A case nothing links them to is not there at all; once a notice to them names it
    # (here: it was allocated to them, then to a colleague), it may be opened with a reason.
    with pytest.raises(NotFound):
        runtime.cases.view(idva, other)
    fire(other, "coordinator", "allocate_idva", {"user": "idva"})
    add_user(runtime, "idva2", ["idva"], "Safer Homes", "voluntary")
    fire(other, "coordinator", "allocate_idva", {"user": "idva2"})
    with pytest.raises(ReasonRequired):
        runtime.cases.view(idva, other)
    runtime.break_glass.open(idva, other, "Covering for my colleague while she is on leave")
    with runtime.db.reading() as s:
        idva = runtime.accounts.actor_for_user(s, idva.user_id, source="api", request_id=None)
    assert runtime.cases.view(idva, other)["break_glass"] is True
    with runtime.db.reading() as s:
        row = s.get(Case, other)
        assert runtime.access.can(idva, "marac:case:view", row)
        assert not runtime.access.can(idva, "marac:case:add_action", row)
    with pytest.raises(Forbidden):
        fire_as(runtime, idva, other, "add_action")


def fire_as(runtime, actor, case_id: int, event: str):
    with runtime.db.reading() as s:
        version = s.get(Case, case_id).version
    data = {"owner_agency": "voluntary", "description": "Safety plan", "due": "2026-12-01"}
    return runtime.engine.fire(case_id, event, actor, data, version)


# --- need-to-know beyond roles ----------------------------------------------------------


def test_practitioners_see_only_their_own_referrals_outcome(runtime, staff, refer, fire):
    made = refer("teacher")
    case_id = made["case_id"]
    fire(case_id, "officer", "screen", {"rag": "green", "rationale": "Low"})
    fire(case_id, "officer", "refer_for_decision", {"rationale": "Clear"})
    fire(case_id, "manager", "decide", {"outcome": "early_help", "onward": [],
                                        "rationale": "Family support needed",
                                        "feedback_to_referrer": "Early help offered."})  # fmt: skip
    teacher, constable = staff["teacher"].actor, staff["constable"].actor
    seen = runtime.referrals.view(teacher, made["id"])
    assert seen["outcome"] == "early_help" and seen["feedback"] == "Early help offered."
    # The outcome, never the case: no summary, no case id, no rationale, no subject details.
    assert not {"case_id", "summary", "details", "person_id", "subject_full"} & set(seen)
    assert set(seen["subject"]) == {"given_name", "family_name"}
    with pytest.raises(NotFound):
        runtime.cases.view(teacher, case_id)
    with pytest.raises(NotFound):
        runtime.referrals.view(constable, made["id"])  # another practitioner's referral
    assert runtime.referrals.mine(constable)["total"] == 0


def test_admin_sees_no_case_content_and_auditor_writes_nothing(runtime, staff, refer):
    case_id = refer("teacher")["case_id"]
    admin, auditor = staff["admin"].actor, staff["auditor"].actor
    policy = runtime.policy
    with runtime.db.reading() as s:
        for who in (admin,):
            assert (
                s.execute(
                    sa.select(sa.func.count())
                    .select_from(Case)
                    .where(runtime.access.visible_cases(who))
                ).scalar()
                == 0
            )
    with pytest.raises(NotFound):
        runtime.cases.view(admin, case_id)
    with pytest.raises(Forbidden):
        runtime.cases.person(admin, 1)
    assert not runtime.access.can(admin, "audit:log:view")  # the log names cases and people
    # No grant of the administrator's touches cases, people, referrals or reports.
    assert not [
        g.permission for g in policy.grants_for(["admin"])
        if g.permission.split(":")[0] not in ("admin", "audit", "workflow")
    ]  # fmt: skip

    # The auditor reads every case, and holds no permission that changes anything: every
    # permission any role holds is refused to the auditor unless it is a read.
    assert runtime.cases.view(auditor, case_id)["id"] == case_id
    every = {g.permission for role in policy.roles for g in policy.grants_for([role])}
    concrete = {
        f"{p}:case:{e}" for p in runtime.workflows.pathways
        for e in runtime.workflows.get(p).definition.events
    } | {p.replace("*", "mash") for p in every}  # fmt: skip
    reads = ("view", "verify", "export")  # an export is a read, audited as one
    writes = sorted(p for p in concrete if p.split(":")[2] not in reads)
    assert writes and not [p for p in writes if runtime.access.can(auditor, p)]
    with pytest.raises(Forbidden):
        fire_as(runtime, auditor, case_id, "screen")
    with pytest.raises(Forbidden):
        runtime.referrals.create(auditor, referral_body())


def test_agency_scoping_where_policy_says_so(db_url, clock, tmp_path):
    """A grant with `only: own_agency` shows a role the cases its own agency referred, and
    no others: in lists, by id and in counts."""
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    roles = yaml.safe_load((policies / "roles.yaml").read_text())
    roles["roles"]["practitioner"]["grants"].append(
        {"permission": "mash:case:view", "only": "own_agency"}
    )
    (policies / "roles.yaml").write_text(yaml.safe_dump(roles))
    rt = Runtime.build(make_settings(db_url, policies_dir=policies), clock)
    rt.start()
    try:
        people = {n: add_user(rt, n, *STAFF[n]) for n in ("teacher", "constable")}
        head = add_user(rt, "head", ["practitioner"], "Northgate Academy", "education")
        ours = rt.referrals.create(people["teacher"].actor, referral_body())["case_id"]
        theirs = rt.referrals.create(people["constable"].actor, referral_body())["case_id"]
        # The head teacher did not refer it, but works for the agency that did.
        assert rt.cases.view(head.actor, ours)["id"] == ours
        with pytest.raises(NotFound):
            rt.cases.view(head.actor, theirs)
        assert [i["id"] for i in rt.cases.queue(head.actor)["items"]] == [ours]
        assert [i["id"] for i in rt.cases.queue(people["constable"].actor)["items"]] == [theirs]
    finally:
        rt.stop()


# --- lawful basis and recipient per disclosure ------------------------------------------


def test_each_information_request_and_answer_records_its_lawful_basis_and_recipient(
    runtime, staff, refer, fire, browser_for
):
    case_id = refer("teacher")["case_id"]
    fire(case_id, "officer", "screen", {"rag": "amber", "rationale": "Worried"})
    from referral_engine.errors import InvalidData

    with pytest.raises(InvalidData) as exc:
        fire(case_id, "officer", "request_checks", {"agencies": ["police"]})
    assert {e.field for e in exc.value.errors} == {"lawful_basis", "recipient"}
    with pytest.raises(InvalidData) as exc:
        fire(case_id, "officer", "request_checks",
             {"agencies": ["police"], "lawful_basis": "because", "recipient": "PVP"})  # fmt: skip
    assert {e.field for e in exc.value.errors} == {"lawful_basis"}
    fire(case_id, "officer", "request_checks",
         {"agencies": ["police", "health"], "lawful_basis": "children_act_s47",
          "recipient": "Police PVP unit; named GP", "shared": "Name, DOB, concern"})  # fmt: skip
    with pytest.raises(InvalidData) as exc:
        fire(case_id, "officer", "record_check",
             {"agency": "police", "summary": "Known", "risk_found": True})  # fmt: skip
    assert {e.field for e in exc.value.errors} == {"lawful_basis", "recipient"}
    fire(case_id, "officer", "record_check",
         {"agency": "police", "summary": "Two call-outs", "risk_found": True,
          "lawful_basis": "crime_and_disorder_s115", "recipient": "MASH duty desk"})  # fmt: skip

    history = runtime.cases.history(staff["officer"].actor, case_id)
    kept = {h["event"]: h["data"] for h in history}
    assert kept["request_checks"]["lawful_basis"] == "children_act_s47"
    assert kept["request_checks"]["recipient"] == "Police PVP unit; named GP"
    assert kept["record_check"]["lawful_basis"] == "crime_and_disorder_s115"
    disclosures = runtime.cases.view(staff["officer"].actor, case_id)["attributes"]["disclosures"]
    assert [(d["direction"], d["lawful_basis"], d["recipient"]) for d in disclosures] == [
        ("request", "children_act_s47", "Police PVP unit; named GP"),
        ("answer", "crime_and_disorder_s115", "MASH duty desk"),
    ]
    assert (
        disclosures[0]["agencies"] == ["police", "health"] and disclosures[1]["agency"] == "police"
    )

    page = browser_for("officer").get(f"/cases/{case_id}").text
    section = page[page.index("Information shared with other agencies") :]
    labels = runtime.policy.reference.lawful_bases
    for text in ("Request sent", "Answer received", "Police PVP unit; named GP",
                 "MASH duty desk"):  # fmt: skip
        assert text in section, text
    from html import escape

    assert escape(labels["children_act_s47"]) in section
    assert escape(labels["crime_and_disorder_s115"]) in section


# --- nothing named, counted or linked (issue 16) -----------------------------------------


def test_probing_ids_answers_the_same_for_unseen_and_missing_cases(runtime, users):
    """A Channel case nobody linked the manager to answers exactly as an id that does not
    exist: the API, the page and the opening all say 404, so ids cannot be enumerated."""
    manager = users["manager"]
    hidden = channel_case(runtime, users)
    missing = hidden + 1000
    for case_id in (hidden, missing):
        answers = [
            manager.get(f"/api/cases/{case_id}"),
            manager.get(f"/api/cases/{case_id}/history"),
            manager.post(f"/api/cases/{case_id}/access", json={"reason": REASON}),
        ]
        got = [(r.status_code, r.json()["type"]) for r in answers]
        assert got == [(404, "urn:referral-engine:problem:not-found")] * 3, got
    shapes = {
        case_id: {k: v for k, v in problem(manager.get(f"/api/cases/{case_id}"), 404).items()
                  if k not in ("detail", "instance", "request_id")}
        for case_id in (hidden, missing)
    }  # fmt: skip
    assert shapes[hidden] == shapes[missing]


def test_an_onward_channel_referral_is_offered_by_its_link_unnamed(runtime, users):
    """The MASH manager who decided it learns only that an onward referral was made; they
    may open it with a reason through the link on their own case, and only then is it
    named. A MASH officer is offered nothing, and no pathway name leaks in the record."""
    manager, officer = users["manager"], users["officer"]
    mash_id, channel_id = onward_channel_case(runtime, users)
    seen = ok(manager.get(f"/api/cases/{mash_id}"))
    assert seen["linked_cases"] == [
        {"relation": "onward", "visible": False, "link": 0, "open_with_reason": True}
    ]
    text = json.dumps(seen)
    assert "channel" not in text.lower() and str(channel_id) not in json.dumps(seen["linked_cases"])
    assert ok(officer.get(f"/api/cases/{mash_id}"))["linked_cases"] == [
        {"relation": "onward", "visible": False}
    ]
    history = ok(officer.get(f"/api/cases/{mash_id}/history"))
    assert "channel" not in json.dumps(history).lower()
    # A link number that is not there, or a case the caller does not see: 404.
    problem(manager.post(f"/api/cases/{mash_id}/links/5/access", json={"reason": REASON}), 404)
    problem(officer.post(f"/api/cases/{mash_id}/links/0/access", json={"reason": REASON}), 404)
    grant = ok(manager.post(f"/api/cases/{mash_id}/links/0/access", json={"reason": REASON}), 201)
    assert grant["case_id"] == channel_id
    assert ok(manager.get(f"/api/cases/{channel_id}"))["break_glass"] is True
    # Opened records are read, not listed or counted.
    assert channel_id not in {i["id"] for i in ok(manager.get("/api/cases"))["items"]}


def test_a_reviewer_who_finds_an_opening_unjustified_ends_it(runtime, users):
    manager, chair = users["manager"], users["chair"]
    mash_id, channel_id = onward_channel_case(runtime, users)
    grant = ok(manager.post(f"/api/cases/{mash_id}/links/0/access", json={"reason": REASON}), 201)
    ok(manager.get(f"/api/cases/{channel_id}"))
    done = ok(
        chair.post(
            f"/api/access/grants/{grant['id']}/review",
            json={"note": "Not a Channel matter: no reason to open it.", "justified": False},
        )
    )
    assert done["active"] is False
    assert problem(manager.get(f"/api/cases/{channel_id}"), 403)["type"].endswith("reason-required")
    reviews = audit_rows(runtime, "api:break_glass:review")
    assert reviews[-1]["summary"]["justified"] is False and reviews[-1]["summary"]["ended"]


def test_a_merge_is_a_recorded_change_of_each_case_it_moves(runtime, staff, refer, browser_for):
    """Each case a merge moves gets a new version, a history entry with the person before
    and after, and an audit row naming it; the undo is recorded the same way. A Channel
    case of the same record is neither moved nor named."""
    manager = staff["manager"].actor
    mash_id, channel_id = onward_channel_case(runtime, staff)
    other = refer("teacher")["case_id"]
    with runtime.db.reading() as s:
        before = s.get(Case, mash_id).version
        channel_version = s.get(Case, channel_id).version
        source, into = s.get(Case, mash_id).person_id, s.get(Case, other).person_id
    merged = runtime.merges.merge(manager, source, into, "Same child, two spellings")
    assert merged["moved_cases"] == [mash_id]
    history = runtime.cases.history(staff["auditor"].actor, mash_id)
    assert history[-1]["event"] == "person_merged"
    assert history[-1]["version"] == before + 1
    assert history[-1]["data"] == {"before": {"person_id": source}, "after": {"person_id": into}}
    moved = audit_rows(runtime, "api:case:person_merged")
    assert [(r["case_id"], r["summary"]["version"]) for r in moved] == [(mash_id, before + 1)]
    runtime.merges.undo(manager, merged["id"])
    with runtime.db.reading() as s:
        assert s.get(Case, mash_id).person_id == source
        assert s.get(Case, mash_id).version == before + 2
        assert s.get(Case, channel_id).person_id == source
        assert s.get(Case, channel_id).version == channel_version
    assert runtime.cases.history(staff["auditor"].actor, mash_id)[-1]["event"] == "person_unmerged"
    # The case page names the changes in words.
    page = browser_for("auditor").get(f"/cases/{mash_id}").text
    assert "Person record merged" in page and "Person record merge undone" in page
    assert runtime.verify_audit().ok


def test_a_case_opens_with_exactly_the_attributes_the_measures_may_name(runtime, refer):
    """reports/measures.py checks a KPI's attribute names against OPENING_ATTRIBUTES: a
    new attribute set at opening must be named there too (MASH opens with no effect that
    sets attributes, so what a MASH case starts with is the opening's own)."""
    from referral_engine.engine.intake import OPENING_ATTRIBUTES

    case_id = refer("teacher")["case_id"]
    with runtime.db.reading() as s:
        assert set(s.get(Case, case_id).attributes) == OPENING_ATTRIBUTES
