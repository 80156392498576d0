"""The NRM pathway (modern slavery and trafficking) through the JSON API, on both databases.

Who may refer (first responders only), consent for adults and none for children (who are
also referred to MASH), the anonymous Duty to Notify record (checked in the database
itself, not only through the API), the reasonable grounds target (overdue, never
blocking), the 30-day recovery period ended by `tick`, the age of the conclusive grounds
wait, and reconsideration by the first responder only.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, STAFF, Team, referral_body

from referral_engine.storage.models import Outbox as OutboxRow

PROBLEM = "application/problem+json"
ADULT = {
    "given_name": "Ama",
    "family_name": "Owusu",
    "date_of_birth": "1990-04-12",
    "gender": "female",
    "address": "9 Canal Side",
    "postcode": "CD3 4EF",
}
CHILD = {
    "given_name": "Tomasz",
    "family_name": "Nowak",
    "date_of_birth": "2011-06-30",
    "gender": "male",
    "address": "3 Mill Lane",
    "postcode": "GH5 6IJ",
}


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


def refresh(*people) -> None:
    """Sign in again: tokens expire after 30 minutes of the (test) clock."""
    for person in people:
        sign_in(person)


def move_to(clock, when: datetime, *people) -> None:
    clock.advance(when - clock.now())
    refresh(*people)


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


def reason(r, field: str) -> str:
    return next(e["reason"] for e in r.json()["errors"] if e["field"] == field)


def at(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    assert t.tzinfo is not None
    return t


def refer_nrm(person, subject: dict | None = None, **overrides) -> dict[str, Any]:
    fields = {
        "pathway": "nrm",
        "subject": subject or ADULT,
        "concerns": ["modern_slavery"],
        "summary": "Found working long hours at a car wash; documents held by the employer.",
    }
    body = referral_body(**{**fields, **overrides})
    return ok(person.post("/api/referrals", json=body), 201)


def case(person, case_id: int) -> dict[str, Any]:
    return ok(person.get(f"/api/cases/{case_id}"))


def fire(person, case_id: int, event: str, data: dict | None = None, version: int | None = None):
    if version is None:
        version = case(person, case_id)["version"]
    body = {"event": event, "data": data or {}, "expected_version": version}
    return person.post(f"/api/cases/{case_id}/events", json=body)


def history(person, case_id: int) -> list[dict[str, Any]]:
    return ok(person.get(f"/api/cases/{case_id}/history"))["history"]


def deadlines(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in view["deadlines"]}


def submitted(responder, subject: dict | None = None) -> int:
    """An NRM case waiting for its reasonable grounds decision."""
    case_id = refer_nrm(responder, subject)["case_id"]
    data = {"exploitation_types": ["labour"], "consent": True}
    assert ok(fire(responder, case_id, "submit_referral", data))["state"] == (
        "reasonable_grounds_pending"
    )
    return case_id


def decide(decision: str, on: str) -> dict[str, Any]:
    return {"decision": decision, "decided_on": on}


def breach_notices(runtime, case_id: int) -> list[OutboxRow]:
    with runtime.db.reading() as s:
        return list(
            s.execute(
                sa.select(OutboxRow).where(
                    OutboxRow.case_id == case_id, OutboxRow.kind == "deadline_breached"
                )
            ).scalars()
        )


# --- who refers --------------------------------------------------------------------------


class TestReferring:
    def test_only_a_first_responder_refers_straight_into_nrm(self, users):
        others = [name for name in STAFF if name != "responder"]
        for who in others:
            r = users[who].post("/api/referrals", json=referral_body(pathway="nrm", subject=ADULT))
            problem(r, 403)
        created = refer_nrm(users["responder"])
        assert (created["pathway"], created["state"]) == ("nrm", "identified")
        listed = ok(users["auditor"].get("/api/cases", params={"pathway": "nrm"}))
        assert [i["id"] for i in listed["items"]] == [created["case_id"]]  # no refused leftovers
        seen = case(users["responder"], created["case_id"])
        assert (seen["pathway"], seen["state"], seen["version"]) == ("nrm", "identified", 1)
        names = {e["event"] for e in seen["available_events"]}
        assert {"submit_referral", "notify_without_consent"} <= names


# --- consent -----------------------------------------------------------------------------


class TestConsent:
    def test_an_adult_without_consent_is_refused_naming_the_rule(self, users):
        responder = users["responder"]
        case_id = refer_nrm(responder)["case_id"]
        for data in ({"exploitation_types": ["labour"]},
                     {"exploitation_types": ["labour"], "consent": False}):  # fmt: skip
            r = fire(responder, case_id, "submit_referral", data, version=1)
            problem(r, 422)
            assert "consent" in fields(r), r.json()
            assert "informed consent" in reason(r, "consent")
        after = case(responder, case_id)
        assert (after["state"], after["version"]) == ("identified", 1)
        assert after["deadlines"] == []

        data = {"exploitation_types": ["labour", "sexual"], "consent": True}
        done = ok(fire(responder, case_id, "submit_referral", data, version=1))
        assert (done["state"], done["version"]) == ("reasonable_grounds_pending", 2)
        assert done["opened_cases"] == []  # an adult is not referred to MASH
        attrs = done["case"]["attributes"]
        assert attrs["exploitation_types"] == ["labour", "sexual"]
        assert attrs["consent"] is True
        assert done["case"]["linked_cases"] == []

    def test_a_child_needs_no_consent_and_is_also_referred_to_mash(self, users):
        responder, officer = users["responder"], users["officer"]
        created = refer_nrm(responder, CHILD)
        case_id = created["case_id"]
        r = fire(responder, case_id, "notify_without_consent", {"exploitation_types": ["criminal"]})
        problem(r, 422)  # a child is never a Duty to Notify record
        assert "a child needs no consent" in r.text
        assert case(responder, case_id)["state"] == "identified"

        done = ok(fire(responder, case_id, "submit_referral", {"exploitation_types": ["criminal"]}))
        assert done["state"] == "reasonable_grounds_pending"
        # The responder may not see MASH cases, so the new one is not named to them.
        assert done["opened_cases"] == []
        onward = case(users["auditor"], case_id)["linked_cases"]
        (mash_id,) = [link["id"] for link in onward if link["pathway"] == "mash"]

        links = case(responder, case_id)["linked_cases"]
        assert links == [{"relation": "onward", "visible": False}]
        mash = case(officer, mash_id)
        assert (mash["pathway"], mash["state"]) == ("mash", "received")
        assert mash["person"]["given_name"] == "Tomasz"
        assert mash["linked_cases"] == [{"relation": "parent", "visible": False}]
        assert mash_id in [i["id"] for i in ok(officer.get("/api/cases"))["items"]]
        full = case(users["auditor"], case_id)
        assert full["person_id"] == mash["person_id"] is not None
        assert {"relation": "onward", "id": mash_id, "pathway": "mash", "state": "received",
                "visible": True} in full["linked_cases"]  # fmt: skip

    def test_a_child_is_under_18_on_the_day_of_referral(self, users):
        responder = users["responder"]
        # Referred on 25 November 2026: eighteen that day is an adult; a day younger, a child.
        adult = refer_nrm(responder, {**CHILD, "date_of_birth": "2008-11-25"})["case_id"]
        child = refer_nrm(responder, {**CHILD, "date_of_birth": "2008-11-26"})["case_id"]
        data = {"exploitation_types": ["labour"]}
        r = fire(responder, adult, "submit_referral", data)
        problem(r, 422)
        assert "consent" in fields(r)
        done = ok(fire(responder, child, "submit_referral", data))
        assert done["state"] == "reasonable_grounds_pending"
        links = case(users["auditor"], child)["linked_cases"]
        assert [link["pathway"] for link in links] == ["mash"]
        assert case(users["auditor"], adult)["linked_cases"] == []


# --- Duty to Notify ----------------------------------------------------------------------

# Distinctive strings: if any of them is anywhere in the database, the record is not anonymous.
SECRET_SUBJECT = {
    "given_name": "Zephyrina",
    "family_name": "Quillfeather",
    "other_names": "Rinaqx Vell",
    "date_of_birth": "1979-02-13",
    "gender": "female",
    "address": "47 Marrowbone Wharf, Gullhaven",
    "postcode": "ZZ9 9QX",
}
NEEDLES = [
    "Zephyrina", "Quillfeather", "Rinaqx", "1979-02-13", "13/02/1979", "Marrowbone",
    "Gullhaven", "ZZ9 9QX",
]  # fmt: skip


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def identity_in_database(runtime) -> list[tuple[str, str]]:
    """(table, needle) for every row of every table that holds a needle."""
    meta = sa.MetaData()
    meta.reflect(bind=runtime.db.engine)
    hits = []
    with runtime.db.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(sa.select(table)):
                text = " ".join(_text(v) for v in row).lower()
                hits.extend((table.name, n) for n in NEEDLES if n.lower() in text)
    return sorted(set(hits))


class TestDutyToNotify:
    def test_the_record_keeps_no_identity_anywhere_in_the_database(self, users, runtime):
        responder = users["responder"]
        created = refer_nrm(
            responder,
            SECRET_SUBJECT,
            summary="Zephyrina Quillfeather was found at 47 Marrowbone Wharf, Gullhaven.",
            consent="refused",
            consent_reason="Does not want the authorities involved",
        )
        case_id = created["case_id"]
        # Tried first as an NRM referral, refused for want of consent (audited as refused).
        r = fire(responder, case_id, "submit_referral", {"exploitation_types": ["labour"]})
        problem(r, 422)
        before = identity_in_database(runtime)
        # The scan does find it: in the referral only, as no person record is made for an
        # NRM subject until they consent.
        assert {t for t, _ in before} == {"referral"}, before

        data = {"exploitation_types": ["labour", "domestic_servitude"]}
        done = ok(fire(responder, case_id, "notify_without_consent", data))
        assert done["state"] == "duty_to_notify"
        seen = case(responder, case_id)
        assert seen["person_id"] is None and seen["person"] is None
        assert seen["attributes"]["exploitation_types"] == ["labour", "domestic_servitude"]
        assert seen["referral"]["subject"].get("given_name") is None
        history(responder, case_id)  # reads are audited too: none may bring the identity back
        told = responder.get(f"/api/referrals/{created['id']}")
        ok(told)
        for needle in NEEDLES:
            assert needle not in json.dumps(seen) and needle not in told.text, needle
        assert ok(fire(responder, case_id, "close"))["state"] == "closed"
        runtime.scheduler.tick()

        assert identity_in_database(runtime) == []
        with runtime.db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM person")).scalar() == 0
            attrs = conn.execute(
                sa.text("SELECT attributes FROM cases WHERE id = :id"), {"id": case_id}
            ).scalar()
        attrs = json.loads(attrs) if isinstance(attrs, str) else attrs
        assert attrs["exploitation_types"] == ["labour", "domestic_servitude"]
        period = {"from": "2026-11-01", "to": "2026-11-30"}
        kpis = ok(users["auditor"].get("/api/reports/kpis", params=period))
        assert kpis["nrm_referrals_by_age_group"] == {"child": 0, "adult": 1}
        assert kpis["nrm_by_exploitation_type"] == {"labour": 1, "domestic_servitude": 1}

    def test_a_known_persons_record_is_not_linked_back_to_them(self, users, runtime):
        """The subject was referred to MASH before: their person record stays (it is the
        MASH case's), but nothing of the Duty to Notify record points at it or at the
        earlier, named referral."""
        earlier = ok(
            users["teacher"].post("/api/referrals", json=referral_body(subject=SECRET_SUBJECT)),
            201,
        )
        created = refer_nrm(users["responder"], SECRET_SUBJECT, consent="refused",
                            consent_reason="Does not want the authorities involved")  # fmt: skip
        case_id = created["case_id"]
        data = {"exploitation_types": ["criminal"]}
        ok(fire(users["responder"], case_id, "notify_without_consent", data))

        person_id = case(users["auditor"], earlier["case_id"])["person_id"]
        assert person_id is not None
        person = ok(users["auditor"].get(f"/api/people/{person_id}"))
        assert [c["id"] for c in person["cases"]] == [earlier["case_id"]]
        assert [r["id"] for r in person["referrals"]] == [earlier["id"]]
        with runtime.db.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT person_id, repeat_of_referral_id, possible_matches, subject "
                    "FROM referral WHERE id = :id"
                ),
                {"id": created["id"]},
            ).one()
            linked_case = conn.execute(
                sa.text("SELECT person_id FROM cases WHERE id = :id"), {"id": case_id}
            ).scalar()
        assert row.person_id is None and linked_case is None
        assert row.repeat_of_referral_id is None, "points at the earlier, named referral"
        assert _text(row.possible_matches) in ("", "[]")
        assert "Zephyrina" not in _text(row.subject)


# --- reasonable grounds, recovery period, conclusive grounds -----------------------------


class TestDecisions:
    def test_the_reasonable_grounds_target_shows_overdue_but_never_blocks(
        self, users, clock, runtime
    ):
        responder = users["responder"]
        case_id = submitted(responder)
        seen = case(responder, case_id)
        # Wednesday 25 November 10:00 + 5 working days = Wednesday 2 December 10:00.
        due = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
        assert at(seen["due_at"]) == due
        target = deadlines(seen)["reasonable_grounds"]
        assert at(target["due_at"]) == due and target["status"] == "open"
        assert seen["overdue"] is False

        move_to(clock, due - timedelta(minutes=1), responder)
        assert case(responder, case_id)["overdue"] is False
        move_to(clock, due + timedelta(minutes=1), responder)
        seen = case(responder, case_id)
        assert seen["overdue"] is True
        assert deadlines(seen)["reasonable_grounds"]["overdue"] is True
        overdue = ok(responder.get("/api/cases", params={"overdue": "true"}))
        assert [i["id"] for i in overdue["items"]] == [case_id]

        assert len(runtime.scheduler.tick().breached) == 1
        seen = case(responder, case_id)
        assert deadlines(seen)["reasonable_grounds"]["status"] == "breached"
        assert [n.recipient_user_id for n in breach_notices(runtime, case_id)] == [
            responder.user_id
        ]

        # Recorded late, with no late reason: accepted.
        data = decide("positive", "2026-12-02")
        done = ok(fire(responder, case_id, "record_reasonable_grounds", data))
        assert done["state"] == "recovery_period"
        met = deadlines(done["case"])["reasonable_grounds"]
        assert met["status"] == "met" and met["late_reason"] is None
        assert done["case"]["overdue"] is False
        assert done["case"]["attributes"]["reasonable_grounds"] == "positive"

    def test_positive_decision_starts_30_days_of_recovery_then_tick_moves_on(
        self, users, clock, runtime
    ):
        responder = users["responder"]
        case_id = submitted(responder)
        move_to(clock, datetime(2026, 12, 3, 10, 0, tzinfo=UTC), responder)
        # The decision was made on 1 December and recorded on the 3rd: the 30 days count
        # from the decision, so the period ends at the start of 31 December.
        data = decide("positive", "2026-12-01")
        done = ok(fire(responder, case_id, "record_reasonable_grounds", data))
        assert done["state"] == "recovery_period"
        ends = datetime(2026, 12, 31, 0, 0, tzinfo=UTC)
        recovery = deadlines(done["case"])["recovery_period"]
        assert at(recovery["due_at"]) == ends and recovery["status"] == "open"
        r = fire(responder, case_id, "record_conclusive_grounds", decide("positive", "2026-12-03"))
        problem(r, 409)  # not before the recovery period is over
        version = case(responder, case_id)["version"]

        move_to(clock, ends - timedelta(minutes=1), responder)
        result = runtime.scheduler.tick()
        assert result.fired == [] and result.failed == []
        still = case(responder, case_id)
        assert (still["state"], still["version"]) == ("recovery_period", version)

        move_to(clock, ends + timedelta(minutes=1), responder)
        result = runtime.scheduler.tick()
        assert len(result.fired) == 1 and result.failed == []
        moved = case(responder, case_id)
        assert (moved["state"], moved["version"]) == ("conclusive_grounds_pending", version + 1)
        rows = history(responder, case_id)
        last = rows[-1]
        assert (last["event"], last["from_state"], last["to_state"]) == (
            "end_recovery_period", "recovery_period", "conclusive_grounds_pending"
        )  # fmt: skip
        assert last["actor_id"] is None and last["actor_name"] == "Referral Engine (scheduled)"
        assert at(last["at"]) == clock.now()
        assert deadlines(moved)["recovery_period"]["status"] == "fired"

        again = runtime.scheduler.tick()
        assert again.as_dict() == {
            "breached": 0, "warned": 0, "reminded": 0, "fired": 0, "failed": []
        }  # fmt: skip
        assert case(responder, case_id)["version"] == version + 1
        assert len(history(responder, case_id)) == len(rows)

        # No target for the conclusive grounds decision: the case shows how long it waited.
        entered = clock.now()
        assert at(moved["in_state_since"]) == entered and moved["days_in_state"] == 0
        for days in (3, 200):
            move_to(clock, entered + timedelta(days=days, hours=1), responder)
            seen = case(responder, case_id)
            assert at(seen["in_state_since"]) == entered
            assert seen["days_in_state"] == days
            assert seen["overdue"] is False
        names = {e["event"] for e in seen["available_events"]}
        assert "record_conclusive_grounds" in names

        data = decide("positive", "2027-07-01")
        done = ok(fire(responder, case_id, "record_conclusive_grounds", data))
        assert done["state"] == "positive_conclusive"
        assert done["case"]["attributes"]["conclusive_grounds"] == "positive"
        closed = ok(fire(responder, case_id, "close"))
        assert closed["state"] == "closed" and closed["case"]["closed"] is True

    def test_negative_decisions_and_reconsideration_by_the_first_responder_only(
        self, users, clock, runtime
    ):
        responder, auditor = users["responder"], users["auditor"]
        case_id = submitted(responder)
        bad = [({"decision": "maybe", "decided_on": "2026-11-26"}, "decision"),
               ({"decision": "positive", "decided_on": "next week"}, "decided_on"),
               ({"decision": "positive"}, "decided_on")]  # fmt: skip
        for data, field in bad:
            r = fire(responder, case_id, "record_reasonable_grounds", data)
            problem(r, 422)
            assert field in fields(r), (data, r.json())
        problem(fire(responder, case_id, "close"), 409)  # not while a decision is awaited
        assert case(responder, case_id)["version"] == 2
        done = ok(
            fire(responder, case_id, "record_reasonable_grounds", decide("negative", "2026-11-27"))
        )
        assert done["state"] == "negative_reasonable"
        assert "recovery_period" not in deadlines(done["case"])

        version = done["version"]
        grounds = {"grounds": "New evidence from the employer's payroll records"}
        problem(fire(auditor, case_id, "request_reconsideration", grounds, version), 403)
        for who in ("teacher", "prevent"):  # they cannot see the case at all
            problem(fire(users[who], case_id, "request_reconsideration", grounds, version), 404)
        r = fire(responder, case_id, "request_reconsideration", {}, version)
        problem(r, 422)
        assert "grounds" in fields(r)
        assert case(responder, case_id)["version"] == version
        assert "request_reconsideration" not in {
            e["event"] for e in case(auditor, case_id)["available_events"]
        }

        back = ok(fire(responder, case_id, "request_reconsideration", grounds, version))
        assert back["state"] == "reasonable_grounds_pending"
        assert back["case"]["attributes"]["reconsiderations"][0]["grounds"] == grounds["grounds"]

        start = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
        move_to(clock, start, responder, auditor)
        ok(fire(responder, case_id, "record_reasonable_grounds", decide("positive", "2026-12-01")))
        move_to(clock, start + timedelta(days=31), responder, auditor)
        runtime.scheduler.tick()
        assert case(responder, case_id)["state"] == "conclusive_grounds_pending"
        done = ok(
            fire(responder, case_id, "record_conclusive_grounds", decide("negative", "2027-01-05"))
        )
        assert done["state"] == "negative_conclusive"
        version = done["version"]
        problem(fire(auditor, case_id, "request_reconsideration", grounds, version), 403)
        back = ok(fire(responder, case_id, "request_reconsideration", grounds, version))
        assert back["state"] == "conclusive_grounds_pending"
        assert len(back["case"]["attributes"]["reconsiderations"]) == 2
        done = ok(
            fire(responder, case_id, "record_conclusive_grounds", decide("positive", "2027-02-01"))
        )
        assert done["state"] == "positive_conclusive"
        assert ok(fire(responder, case_id, "close"))["state"] == "closed"
        problem(fire(responder, case_id, "request_reconsideration", grounds), 409)

        # A negative reasonable grounds decision may also simply be closed.
        other = submitted(responder, {**ADULT, "given_name": "Kofi"})
        ok(fire(responder, other, "record_reasonable_grounds", decide("negative", "2027-02-02")))
        closed = ok(fire(responder, other, "close"))
        assert closed["from_state"] == "negative_reasonable" and closed["state"] == "closed"
