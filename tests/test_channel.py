"""The Channel pathway (Prevent) through the JSON API, on both databases.

Who may refer (Prevent only), the whole journey from gateway assessment through the VAF,
the panel, consent (the person, or a parent for a child), support, exit and the reviews
`tick` raises at 6 and 12 months; the ways out (screened out, not adopted, consent
declined); and invisibility: to every role but prevent_officer, channel_chair and auditor
a Channel case does not exist, at every endpoint, in every list, count, person view,
meeting and report, including the MASH manager whose decision sent a case onward to it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, STAFF, Team, referral_body
from dateutil.relativedelta import relativedelta

from referral_engine.access.rules import HIDDEN_PATHWAY
from referral_engine.storage.models import Outbox as OutboxRow

PROBLEM = "application/problem+json"
CHANNEL_ROLES = {"prevent", "chair", "auditor"}
HIDDEN_FROM = [name for name in STAFF if name not in CHANNEL_ROLES]
# Who may open a Channel case with a reason (channel:case:break_glass in roles.yaml).
BREAK_GLASS = {"manager"}
PERSON_VIEWERS = {"officer", "manager", "coordinator", "responder", "gangs"}
ADULT = {
    "given_name": "Callum",
    "family_name": "Reyes",
    "date_of_birth": "1999-08-20",
    "gender": "male",
    "address": "14 Foundry Row",
    "postcode": "KL7 8MN",
}
CHILD = {
    "given_name": "Idris",
    "family_name": "Vantongeren",
    "date_of_birth": "2011-01-15",
    "gender": "male",
    "address": "2 Beacon Close",
    "postcode": "OP9 1QR",
}
OTHER_ADULT = {**ADULT, "given_name": "Marta", "family_name": "Lindqvist", "gender": "female"}
PERIOD = {"from": "2026-11-01", "to": "2026-11-30"}


# --- who calls ---------------------------------------------------------------------------


@pytest.fixture
def users(runtime, client) -> Team:
    return Team(runtime, client)


def sign_in(person) -> None:
    r = person.client.post(
        "/api/auth/token", data={"username": person.username, "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    person.token = r.json()["access_token"]


def move_to(clock, when: datetime, *people) -> None:
    """Move the clock, and sign in again (tokens last 30 minutes of clock time)."""
    clock.advance(when - clock.now())
    for person in people:
        sign_in(person)


# --- helpers -----------------------------------------------------------------------------


def ok(r, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def problem(r, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    return r.json()


def fields(r) -> set[str]:
    return {e["field"] for e in r.json().get("errors") or []}


def at(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    assert t.tzinfo is not None
    return t


def refer_channel(prevent, subject: dict | None = None) -> dict[str, Any]:
    body = referral_body(
        pathway="channel",
        subject=subject or ADULT,
        concerns=["radicalisation"],
        summary="Sharing extremist material in a group chat; talks of travelling abroad.",
    )
    return ok(prevent.post("/api/referrals", json=body), 201)


def case(person, case_id: int) -> dict[str, Any]:
    return ok(person.get(f"/api/cases/{case_id}"))


def fire(person, case_id: int, event: str, data: dict | None = None, version: int | None = None):
    if version is None:
        version = case(person, case_id)["version"]
    body = {"event": event, "data": data or {}, "expected_version": version}
    return person.post(f"/api/cases/{case_id}/events", json=body)


def step(person, case_id: int, event: str, data: dict | None = None) -> dict[str, Any]:
    return ok(fire(person, case_id, event, data))


def vaf(engagement: str, intent: str, capability: str, *factors: str) -> dict[str, Any]:
    return {
        "engagement": engagement,
        "intent": intent,
        "capability": capability,
        "factors": list(factors),
        "summary": f"engagement {engagement}, intent {intent}, capability {capability}",
    }


def meeting(chair, day: date, capacity: int = 5, pathway: str = "channel") -> dict[str, Any]:
    body = {"pathway": pathway, "date": day.isoformat(), "capacity": capacity}
    return ok(chair.post("/api/meetings", json=body), 201)


def to_preparation(users, subject: dict | None = None) -> int:
    case_id = refer_channel(users["prevent"], subject)["case_id"]
    step(users["prevent"], case_id, "start_gateway")
    assert step(users["prevent"], case_id, "pass_to_panel")["state"] == "case_preparation"
    return case_id


def to_panel(users, subject: dict | None = None) -> int:
    case_id = to_preparation(users, subject)
    step(users["chair"], case_id, "record_vaf", vaf("low", "low", "none", "grievance"))
    assert step(users["chair"], case_id, "list_for_panel")["state"] == "panel"
    return case_id


def reminders(runtime, case_id: int) -> list[OutboxRow]:
    with runtime.db.reading() as s:
        return list(
            s.execute(
                sa.select(OutboxRow)
                .where(OutboxRow.case_id == case_id, OutboxRow.kind == "deadline_reminder")
                .order_by(OutboxRow.id)
            ).scalars()
        )


# --- who refers --------------------------------------------------------------------------


class TestReferring:
    def test_only_a_prevent_officer_refers_straight_into_channel(self, users):
        for who in [name for name in STAFF if name != "prevent"]:
            body = referral_body(pathway="channel", subject=ADULT, concerns=["radicalisation"])
            problem(users[who].post("/api/referrals", json=body), 403)
        created = refer_channel(users["prevent"])
        assert (created["pathway"], created["state"]) == ("channel", "prevent_referral")
        listed = ok(users["auditor"].get("/api/cases", params={"include_closed": "true"}))
        assert [i["id"] for i in listed["items"]] == [created["case_id"]]
        names = {e["event"] for e in case(users["prevent"], created["case_id"])["available_events"]}
        assert names == {"start_gateway"}
        assert case(users["chair"], created["case_id"])["available_events"] == []


# --- the journey -------------------------------------------------------------------------


class TestJourney:
    def test_gateway_vaf_panel_parent_consent_support_exit_and_reviews(self, users, clock, runtime):
        prevent, chair = users["prevent"], users["chair"]
        created = refer_channel(prevent, CHILD)
        case_id = created["case_id"]
        problem(fire(chair, case_id, "start_gateway"), 403)  # the gateway is Prevent's
        assert step(prevent, case_id, "start_gateway")["state"] == "gateway_assessment"
        assert step(prevent, case_id, "pass_to_panel")["state"] == "case_preparation"
        problem(fire(prevent, case_id, "record_vaf", vaf("low", "none", "none")), 403)
        problem(fire(prevent, case_id, "list_for_panel"), 403)

        panel = meeting(chair, date(2026, 12, 9))
        r = fire(chair, case_id, "list_for_panel")
        problem(r, 422)
        assert "vaf" in fields(r)
        assert case(chair, case_id)["state"] == "case_preparation"

        first = step(chair, case_id, "record_vaf", vaf("low", "none", "none", "grievance"))
        assert first["state"] == "case_preparation"
        second = step(
            chair, case_id, "record_vaf",
            vaf("medium", "low", "none", "grievance", "identity", "us_and_them"),
        )  # fmt: skip
        assessments = second["case"]["attributes"]["vaf"]
        assert len(assessments) == 2
        assert assessments[0]["change"] == {}
        assert assessments[1]["change"] == {
            "engagement": {"from": "low", "to": "medium"},
            "intent": {"from": "none", "to": "low"},
        }
        assert assessments[1]["factors"] == ["grievance", "identity", "us_and_them"]
        assert (assessments[1]["engagement"], assessments[1]["capability"]) == ("medium", "none")
        r = fire(chair, case_id, "record_vaf", {**vaf("extreme", "low", "none"), "factors": ["x"]})
        problem(r, 422)
        assert "engagement" in fields(r) and "factors.0" in fields(r), r.json()

        listed = step(chair, case_id, "list_for_panel", {"meeting_id": panel["id"]})
        assert listed["state"] == "panel"
        assert listed["case"]["attributes"]["meeting_id"] == panel["id"]
        agenda = ok(chair.get(f"/api/meetings/{panel['id']}"))
        assert [c["case_id"] for c in agenda["cases"]] == [case_id]

        adopted = step(chair, case_id, "adopt", {"rationale": "Vulnerable; support will help"})
        assert adopted["state"] == "consent_pending"
        assert adopted["case"]["attributes"]["panel_rationale"] == "Vulnerable; support will help"

        r = fire(chair, case_id, "record_consent", {"consent": True, "by": "subject"})
        problem(r, 422)  # a child's consent is given by a parent
        assert fields(r) == {"by"}
        assert case(chair, case_id)["state"] == "consent_pending"
        supported = step(chair, case_id, "record_consent", {"consent": True, "by": "parent"})
        assert supported["state"] == "support"
        assert supported["case"]["attributes"]["consent_by"] == "parent"

        reviewed = step(chair, case_id, "review_support", {"summary": "Mentoring going well"})
        assert reviewed["state"] == "support"
        assert reviewed["case"]["attributes"]["support_reviews"][0]["summary"] == (
            "Mentoring going well"
        )
        again = step(chair, case_id, "record_vaf", vaf("low", "none", "none"))
        assert again["case"]["attributes"]["vaf"][2]["change"] == {
            "engagement": {"from": "medium", "to": "low"},
            "intent": {"from": "low", "to": "none"},
        }

        exit_at = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
        move_to(clock, exit_at, prevent, chair)
        exited = step(chair, case_id, "exit", {"reason": "Support plan complete"})
        assert exited["state"] == "exited"
        due = {d["name"]: at(d["due_at"]) for d in exited["case"]["deadlines"]}
        assert due["review_6m"] == exit_at + relativedelta(months=6)
        assert due["review_12m"] == exit_at + relativedelta(months=12)
        notified = {prevent.user_id, chair.user_id}

        runtime.scheduler.tick()
        assert reminders(runtime, case_id) == []
        move_to(clock, due["review_6m"] - timedelta(minutes=1), prevent, chair)
        assert runtime.scheduler.tick().reminded == []
        move_to(clock, due["review_6m"] + timedelta(minutes=1), prevent, chair)
        assert len(runtime.scheduler.tick().reminded) == 1
        sent = reminders(runtime, case_id)
        assert {n.recipient_user_id for n in sent} == notified and len(sent) == 2
        assert {n.payload["deadline"] for n in sent} == {"review_6m"}
        assert runtime.scheduler.tick().reminded == []
        assert len(reminders(runtime, case_id)) == 2  # a re-run notifies nobody twice
        assert case(chair, case_id)["state"] == "exited"  # a reminder, not a transition

        data = {"summary": "Settled at college", "concerns_remain": False}
        first_review = step(chair, case_id, "review", data)
        assert first_review["state"] == "review"

        move_to(clock, due["review_12m"] + timedelta(minutes=1), prevent, chair)
        assert len(runtime.scheduler.tick().reminded) == 1
        sent = reminders(runtime, case_id)
        later = [n for n in sent if n.payload["deadline"] == "review_12m"]
        assert {n.recipient_user_id for n in later} == notified and len(later) == 2

        done = step(chair, case_id, "review", {"summary": "No concerns", "concerns_remain": False})
        assert done["state"] == "closed"
        closed = done["case"]
        assert closed["closed"] is True and closed["available_events"] == []
        assert [r["summary"] for r in closed["attributes"]["reviews"]] == [
            "Settled at college", "No concerns"
        ]  # fmt: skip
        rows = ok(prevent.get(f"/api/cases/{case_id}/history"))["history"]
        assert [h["event"] for h in rows] == [
            "open", "start_gateway", "pass_to_panel", "record_vaf", "record_vaf",
            "list_for_panel", "adopt", "record_consent", "review_support", "record_vaf",
            "exit", "review", "review",
        ]  # fmt: skip
        assert ok(prevent.get(f"/api/referrals/{created['id']}"))["case_id"] == case_id

    def test_listing_needs_a_vaf_and_a_channel_meeting(self, users):
        chair = users["chair"]
        case_id = to_preparation(users)
        step(chair, case_id, "record_vaf", vaf("high", "medium", "low", "access_to_means"))
        marac = meeting(users["coordinator"], date(2026, 12, 2), pathway="marac")
        for data in ({}, {"meeting_id": marac["id"]}, {"meeting_id": marac["id"] + 99}):
            r = fire(chair, case_id, "list_for_panel", data)
            problem(r, 422)
            assert "meeting_id" in fields(r), (data, r.json())
        problem(chair.post("/api/meetings", json={"pathway": "channel", "date": "2026-11-20",
                                                  "capacity": 3}), 422)  # fmt: skip
        problem(users["prevent"].post("/api/meetings", json={"pathway": "channel",
                                      "date": "2026-12-03", "capacity": 3}), 403)  # fmt: skip
        panel = meeting(chair, date(2026, 12, 3), capacity=1)

        without = to_preparation(users)
        r = fire(chair, without, "list_for_panel", {"meeting_id": panel["id"]})
        problem(r, 422)
        assert fields(r) == {"vaf"}
        assert case(chair, without)["state"] == "case_preparation"

        listed = step(chair, case_id, "list_for_panel")  # the next channel meeting with room
        assert listed["case"]["attributes"]["meeting_id"] == panel["id"]
        step(chair, without, "record_vaf", vaf("low", "low", "low"))
        r = fire(chair, without, "list_for_panel", {"meeting_id": panel["id"]})
        problem(r, 422)  # full
        assert "meeting_id" in fields(r)


class TestWaysOut:
    def test_screened_out_declined_or_not_adopted(self, users):
        prevent, chair = users["prevent"], users["chair"]
        case_id = refer_channel(prevent, {**ADULT, "given_name": "Bryn", "family_name": "Aled"})[
            "case_id"
        ]
        step(prevent, case_id, "start_gateway")
        problem(fire(users["chair"], case_id, "screen_out", {"reason": "x", "signposted_to": "y"}),
                403)  # fmt: skip
        r = fire(prevent, case_id, "screen_out", {"signposted_to": "GP"})
        problem(r, 422)
        assert "reason" in fields(r)
        data = {"reason": "Not a Prevent matter", "signposted_to": "Youth service"}
        out = step(prevent, case_id, "screen_out", data)
        assert (out["state"], out["case"]["closed"]) == ("not_adopted", True)
        attrs = out["case"]["attributes"]
        assert (attrs["screen_out_reason"], attrs["signposted_to"]) == (
            "Not a Prevent matter", "Youth service"
        )  # fmt: skip
        problem(fire(prevent, case_id, "pass_to_panel"), 409)

        meeting(chair, date(2026, 12, 9))
        declined = to_panel(users, ADULT)
        step(chair, declined, "adopt", {"rationale": "Vulnerable"})
        r = fire(chair, declined, "record_consent", {"consent": True, "by": "parent"})
        problem(r, 422)  # an adult consents for themselves
        assert fields(r) == {"by"}
        out = step(chair, declined, "record_consent", {"consent": False, "by": "subject"})
        assert (out["state"], out["case"]["closed"]) == ("not_adopted", True)
        assert out["case"]["attributes"]["consent"] is False

        refused = to_panel(users, {**ADULT, "given_name": "Dara", "family_name": "Okafor"})
        r = fire(chair, refused, "not_adopt", {})
        problem(r, 422)
        assert "rationale" in fields(r)
        out = step(chair, refused, "not_adopt", {"rationale": "Threshold not met"})
        assert (out["state"], out["case"]["closed"]) == ("not_adopted", True)
        assert out["case"]["attributes"]["panel_rationale"] == "Threshold not met"

        # Adoption is over the cases a panel decided: the screened-out one is not among them.
        kpis = ok(chair.get("/api/reports/kpis", params=PERIOD))
        assert kpis["channel_referrals"] == 3
        assert kpis["channel_adoption_pct"] == 50.0

    def test_the_panel_decision_is_recorded_on_the_case(self, users):
        chair = users["chair"]
        meeting(chair, date(2026, 12, 9))
        adopted = to_panel(users, ADULT)
        other = to_panel(users, {**ADULT, "given_name": "Dara", "family_name": "Okafor"})
        step(chair, adopted, "adopt", {"rationale": "Vulnerable"})
        step(chair, other, "not_adopt", {"rationale": "Threshold not met"})
        decisions = {
            case(chair, adopted)["attributes"].get("panel_decision"),
            case(chair, other)["attributes"].get("panel_decision"),
        }
        assert decisions == {"adopt", "not_adopt"}


# --- invisibility ------------------------------------------------------------------------


def total(person) -> int:
    """How many cases the caller may see, closed ones included."""
    return ok(person.get("/api/cases", params={"include_closed": "true", "limit": 200}))["total"]


class TestInvisibility:
    def test_channel_cases_do_not_exist_for_anyone_else(self, users):
        prevent, chair, auditor = users["prevent"], users["chair"], users["auditor"]
        teacher, officer, manager = users["teacher"], users["officer"], users["manager"]
        everyone = {who: users[who] for who in HIDDEN_FROM}

        # A child referred to MASH, who will be sent onward to Channel.
        mash = ok(teacher.post("/api/referrals", json=referral_body(concerns=["radicalisation"])),
                  201)  # fmt: skip
        mash_case = mash["case_id"]
        ok(fire(officer, mash_case, "screen", {"rag": "amber", "rationale": "worrying"}))
        ok(fire(officer, mash_case, "refer_for_decision", {"rationale": "clear picture"}))
        # Other pathways' cases and meetings, so nothing here is trivially empty.
        nrm = referral_body(pathway="nrm", subject=OTHER_ADULT, concerns=["modern_slavery"])
        ok(users["responder"].post("/api/referrals", json=nrm), 201)
        marac_meeting = meeting(users["coordinator"], date(2026, 12, 2), pathway="marac")
        before = {who: total(p) for who, p in everyone.items()}

        decided = ok(fire(manager, mash_case, "decide", {
            "outcome": "early_help", "onward": ["channel"], "rationale": "Prevent concern",
            "feedback_to_referrer": "Early help has been offered."}))  # fmt: skip
        assert decided["state"] == "closed"
        onward = ok(auditor.get(f"/api/cases/{mash_case}"))["linked_cases"]
        assert [link["pathway"] for link in onward] == ["channel"]
        channel_from_mash = onward[0]["id"]
        child_id = case(auditor, mash_case)["person_id"]

        direct = refer_channel(prevent, ADULT)  # the only case of its person
        direct_case = direct["case_id"]
        panel = meeting(chair, date(2026, 12, 9))
        step(prevent, direct_case, "start_gateway")
        step(prevent, direct_case, "pass_to_panel")
        step(chair, direct_case, "record_vaf", vaf("low", "low", "none", "grievance"))
        step(chair, direct_case, "list_for_panel", {"meeting_id": panel["id"]})
        step(chair, direct_case, "adopt", {"rationale": "Vulnerable"})
        adult_id = case(chair, direct_case)["person_id"]
        assert adult_id != child_id
        channel_ids = {channel_from_mash, direct_case}
        missing_case = max(channel_ids) + 1000

        # Those who may see Channel see it all.
        for who, person in (("prevent", prevent), ("chair", chair), ("auditor", auditor)):
            listed = ok(person.get("/api/cases", params={"pathway": "channel"}))
            assert listed["total"] == 2 and {i["id"] for i in listed["items"]} == channel_ids, who
            assert case(person, channel_from_mash)["pathway"] == "channel"
            ok(person.get(f"/api/cases/{direct_case}/history"))
            assert [c["id"] for c in ok(person.get(f"/api/people/{adult_id}"))["cases"]] == [
                direct_case
            ]
            ok(person.get(f"/api/referrals/{direct['id']}"))
            channel_meetings = ok(person.get("/api/meetings", params={"pathway": "channel"}))
            assert [m["id"] for m in channel_meetings["items"]] == [panel["id"]], who
            agenda = ok(person.get(f"/api/meetings/{panel['id']}"))
            assert [c["case_id"] for c in agenda["cases"]] == [direct_case], who
        problem(fire(auditor, direct_case, "not_adopt", {"rationale": "x"}), 403)
        for who in ("chair", "auditor"):
            kpis = ok(users[who].get("/api/reports/kpis", params=PERIOD))
            assert kpis["channel_referrals"] == 2, who
            assert kpis["channel_adoption_pct"] == 100.0, who

        # The MASH manager sees that an onward referral was made, and nothing of it.
        seen = case(manager, mash_case)
        assert seen["linked_cases"] == [{"relation": "onward", "visible": False, "link": 0,
                                         "open_with_reason": True}]  # fmt: skip
        assert seen["attributes"]["onward"] == [HIDDEN_PATHWAY]
        assert ok(teacher.get(f"/api/referrals/{mash['id']}"))["outcome"] == "early_help"

        missing_title = problem(officer.get(f"/api/cases/{missing_case}"), 404)["title"]
        missing_meeting = problem(officer.get(f"/api/meetings/{panel['id'] + 1000}"), 404)
        # An event each case could take now (for someone allowed to), and a filter that
        # matches each of them: still 404 and absent.
        consent = {"consent": True, "by": "subject"}
        now_valid = {
            channel_from_mash: ("start_gateway", {}),
            direct_case: ("record_consent", consent),
        }
        for who, person in everyone.items():
            for case_id, (event, data) in now_valid.items():
                body = {"event": event, "data": data, "expected_version": 1}
                asks = (person.get(f"/api/cases/{case_id}"),
                        person.get(f"/api/cases/{case_id}/history"),
                        person.post(f"/api/cases/{case_id}/events", json=body))  # fmt: skip
                if who in BREAK_GLASS and case_id == channel_from_mash:
                    # Reached through the onward link of their own MASH case: reading asks
                    # for a reason (break-glass); changing it is not there at all.
                    for r in asks[:2]:
                        assert problem(r, 403)["type"].endswith(":reason-required"), who
                    problem(asks[2], 404)
                    continue
                # Everyone else, and anyone for a case no link of theirs leads to (the
                # direct referral): 404, exactly as for a case that does not exist.
                got = problem(asks[0], 404)
                assert got["title"] == missing_title, who
                problem(asks[1], 404)
                problem(asks[2], 404)

            for params in ({"include_closed": "true"}, {"pathway": "channel"},
                           {"state": "consent_pending"}):  # fmt: skip
                listed = ok(person.get("/api/cases", params={**params, "limit": 200}))
                ids = {i["id"] for i in listed["items"]}
                assert not ids & channel_ids, (who, params)
                assert all(i["pathway"] != "channel" for i in listed["items"]), (who, params)
                assert listed["total"] == len(listed["items"]), (who, params)
                if "include_closed" in params:
                    assert listed["total"] == before[who], who

            # A person whose only case is Channel is like a person who does not exist.
            hidden = person.get(f"/api/people/{adult_id}")
            nobody = person.get(f"/api/people/{adult_id + 1000}")
            expected = 404 if who in PERSON_VIEWERS else 403  # 403: may view no one at all
            assert hidden.status_code == nobody.status_code == expected, (who, hidden.text)
            assert hidden.json()["title"] == nobody.json()["title"], who
            child = person.get(f"/api/people/{child_id}")
            if who in ("officer", "manager"):  # they see the child's MASH case, and only that
                assert [c["id"] for c in ok(child)["cases"]] == [mash_case], who
                assert [r["id"] for r in ok(child)["referrals"]] == [mash["id"]], who
            else:
                assert child.status_code == expected, (who, child.text)

            problem(person.get(f"/api/referrals/{direct['id']}"), 404)

            problem(person.get("/api/meetings", params={"pathway": "channel"}), 404)
            items = ok(person.get("/api/meetings"))["items"]
            assert all(m["pathway"] != "channel" for m in items), who
            assert panel["id"] not in {m["id"] for m in items}, who
            got = problem(person.get(f"/api/meetings/{panel['id']}"), 404)
            assert got["title"] == missing_meeting["title"], who

            kpis = person.get("/api/reports/kpis", params=PERIOD)
            if who in ("manager", "coordinator"):
                keys = set(ok(kpis))
                assert not {k for k in keys if k.startswith("channel")}, (who, keys)
            else:
                problem(kpis, 403)

        assert [m["id"] for m in ok(users["coordinator"].get("/api/meetings"))["items"]] == [
            marac_meeting["id"]
        ]
        # The manager's measures count the MASH referral, not the direct Channel one.
        assert ok(manager.get("/api/reports/kpis", params=PERIOD))["referrals_total"] == 1
        assert (
            ok(users["coordinator"].get("/api/reports/kpis", params=PERIOD))["referrals_total"] == 0
        )
        # The referrer of the MASH referral still sees its outcome, and only that.
        told = ok(teacher.get(f"/api/referrals/{mash['id']}"))
        assert told["pathway"] == "mash" and "case_id" not in told

    def test_deciding_onward_to_channel_does_not_hand_the_manager_the_case_id(self, users):
        teacher, officer, manager = users["teacher"], users["officer"], users["manager"]
        mash_case = ok(teacher.post("/api/referrals", json=referral_body()), 201)["case_id"]
        ok(fire(officer, mash_case, "screen", {"rag": "amber", "rationale": "worrying"}))
        ok(fire(officer, mash_case, "refer_for_decision", {"rationale": "clear picture"}))
        r = fire(manager, mash_case, "decide", {
            "outcome": "early_help", "onward": ["channel"], "rationale": "Prevent concern",
            "feedback_to_referrer": "Early help has been offered."})  # fmt: skip
        decided = ok(r)
        channel_id = ok(users["auditor"].get(f"/api/cases/{mash_case}"))["linked_cases"][0]["id"]
        # Opening it needs a reason (break-glass, audited and reviewed): never a plain read.
        refused = problem(manager.get(f"/api/cases/{channel_id}"), 403)
        assert refused["type"].endswith(":reason-required")
        assert channel_id not in decided["opened_cases"], decided["opened_cases"]
        # The answer says an onward referral was made, offered by its link, never by its
        # id or pathway; the decision's own record no longer names Channel either.
        assert decided["case"]["linked_cases"] == [
            {"relation": "onward", "visible": False, "link": 0, "open_with_reason": True}
        ]
        assert "channel" not in json.dumps(decided["case"]).lower()

    def test_an_earlier_channel_referral_does_not_make_a_visible_referral_a_repeat(self, users):
        """A person referred to Channel and then to MASH: the MASH referral must not point
        at, or be flagged because of, a referral its readers may not know exists."""
        prevent, teacher, officer = users["prevent"], users["teacher"], users["officer"]
        channel = refer_channel(prevent, CHILD)
        mash = ok(teacher.post("/api/referrals", json=referral_body(subject=CHILD)), 201)
        chair_view = case(users["chair"], channel["case_id"])
        mash_view = case(officer, mash["case_id"])
        assert mash_view["person_id"] == chair_view["person_id"]  # the same person

        assert mash["repeat"] is None, "the referrer is told whether it is a repeat"
        full = ok(officer.get(f"/api/referrals/{mash['id']}"))
        assert full["repeat_of_referral_id"] != channel["id"]
        assert mash_view["attributes"]["repeat"] is False
        item = ok(officer.get("/api/cases"))["items"][0]
        assert item["id"] == mash["case_id"] and item["repeat"] is False
        person = ok(officer.get(f"/api/people/{mash_view['person_id']}"))
        assert [r["id"] for r in person["referrals"]] == [mash["id"]]
        assert person["referrals"][0]["repeat"] is False
