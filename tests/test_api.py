"""The JSON API through real HTTP on the ASGI app: every endpoint, its successes and its
refusals (401, 403, 404, 409, 413, 422, 429), problem+json errors, the whole MASH journey,
need-to-know visibility in lists and counts, audit of allowed and refused requests, and
the security headers every response carries.

Setup goes through the API too (accounts aside: there is no API for them yet), so what
is tested is what a client sees. `users` here is conftest's `users` made lazily: a test
signs up and in only the people it names, which keeps the suite quick on both databases.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import PASSWORD, SECRET, Team, referral_body
from jose import jwt

# The lawful basis and recipient each information request and answer records.
ASKED = {"lawful_basis": "safeguarding", "recipient": "Partner agency leads"}
ANSWERED = {"lawful_basis": "safeguarding", "recipient": "MASH duty desk"}

PROBLEM = "application/problem+json"
ADULT = {"given_name": "Ada", "family_name": "Grey", "date_of_birth": "1960-03-02"}
S42 = {"s42_care_and_support_needs", "s42_abuse_or_neglect", "s42_unable_to_protect"}
RATIONALE = "Rationale the referrer must never see: 7f3c"


# --- who calls ---------------------------------------------------------------------------


@pytest.fixture
def users(runtime, client) -> Team:
    return Team(runtime, client)


# --- helpers ---------------------------------------------------------------------------


def assert_problem(r, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with this status, a title and a detail."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]
    body = r.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def error_fields(r) -> set[str]:
    return {e["field"] for e in r.json().get("errors") or []}


def ok(r, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def at(value: str) -> datetime:
    """A timestamp from the API: ISO 8601 with its time zone."""
    t = datetime.fromisoformat(value)
    assert t.tzinfo is not None, f"{value!r} has no time zone"
    return t


def sign_in(client, username: str, password: str = PASSWORD):
    return client.post("/api/auth/token", data={"username": username, "password": password})


def refresh(*people) -> None:
    """Sign in again (after the clock moved past the tokens' expiry)."""
    for person in people:
        person.token = ok(sign_in(person.client, person.username))["access_token"]


def refer(person, key: str | None = None, **overrides) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    return ok(person.post("/api/referrals", json=referral_body(**overrides), headers=headers), 201)


def case(person, case_id: int) -> dict[str, Any]:
    return ok(person.get(f"/api/cases/{case_id}"))


def fire(person, case_id: int, event: str, data: dict | None = None, version: int | None = None):
    """POST an event; `version` defaults to the case's current version."""
    if version is None:
        version = case(person, case_id)["version"]
    body = {"event": event, "data": data or {}, "expected_version": version}
    return person.post(f"/api/cases/{case_id}/events", json=body)


def screen(officer, case_id: int, rag: str = "amber") -> dict[str, Any]:
    return ok(fire(officer, case_id, "screen", {"rag": rag, "rationale": f"rated {rag}"}))


def to_decision_pending(officer, case_id: int) -> dict[str, Any]:
    screen(officer, case_id)
    return ok(fire(officer, case_id, "refer_for_decision", {"rationale": "clear picture"}))


def decision(outcome: str = "early_help", onward: list[str] | None = None, **more) -> dict:
    return {
        "outcome": outcome,
        "onward": onward or [],
        "rationale": RATIONALE,
        "feedback_to_referrer": "Early help has been offered to the family.",
        **more,
    }


def queue(person, **params) -> dict[str, Any]:
    return ok(person.get("/api/cases", params=params))


def audit_rows(auditor, **params) -> list[dict[str, Any]]:
    return ok(auditor.get("/api/audit", params=params))["items"]


def b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def claims(user_id: int, now: datetime) -> dict[str, Any]:
    return {
        "sub": str(user_id),
        "jti": uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=30)).timestamp()),
        "typ": "access",
        "gen": 0,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Every endpoint that needs a signed-in caller: (method, path, json body or None).
PROTECTED = [
    ("POST", "/api/auth/logout", None),
    ("GET", "/api/me", None),
    ("POST", "/api/referrals", {}),
    ("GET", "/api/referrals", None),
    ("GET", "/api/referrals/1", None),
    ("GET", "/api/cases", None),
    ("GET", "/api/cases/1", None),
    ("POST", "/api/cases/1/events", {}),
    ("GET", "/api/cases/1/history", None),
    ("GET", "/api/people/1", None),
    ("GET", "/api/workflows", None),
    ("GET", "/api/workflows/mash", None),
    ("GET", "/api/audit", None),
    ("GET", "/api/audit/verify", None),
]


def call(client, method: str, path: str, body: dict | None, headers: dict | None = None):
    return client.request(method, path, json=body, headers=headers or {})


# --- POST /api/auth/token --------------------------------------------------------------


class TestSignIn:
    def test_password_grant_gives_a_bearer_token_that_works(self, client, users):
        users.account("officer")
        r = sign_in(client, "officer")
        body = ok(r)
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 30 * 60
        me = ok(client.get("/api/me", headers=bearer(body["access_token"])))
        assert me["username"] == "officer"

    def test_wrong_password_and_unknown_user_are_refused_alike(self, client, users):
        users.account("officer")
        wrong = assert_problem(sign_in(client, "officer", "not the password at all"), 401)
        unknown = assert_problem(sign_in(client, "nobody-here", PASSWORD), 401)
        assert wrong["detail"] == unknown["detail"]
        assert sign_in(client, "officer", "nope nope nope").headers["www-authenticate"] == "Bearer"
        r = client.post("/api/auth/token", data={"username": "officer"})
        assert_problem(r, 422)
        assert "password" in error_fields(r)

    def test_five_failures_lock_the_username_then_it_unlocks(self, client, users, clock, runtime):
        users.account("officer")
        users.account("manager")
        for _ in range(5):
            assert_problem(sign_in(client, "officer", "wrong password 123"), 401)
        locked = sign_in(client, "officer")  # the right password, but locked
        assert_problem(locked, 429)
        retry = int(locked.headers["retry-after"])
        assert 0 < retry <= runtime.policy.rules.sign_in.lock_minutes * 60 + 1
        assert_problem(sign_in(client, "officer", "wrong password 123"), 429)
        assert ok(sign_in(client, "manager"))["access_token"]  # only that username is locked
        clock.advance(timedelta(minutes=16))
        assert ok(sign_in(client, "officer"))["access_token"]

    def test_four_failures_do_not_lock(self, client, users):
        users.account("officer")
        for _ in range(4):
            assert_problem(sign_in(client, "officer", "wrong password 123"), 401)
        assert ok(sign_in(client, "officer"))["access_token"]


# --- 401 on every protected endpoint ---------------------------------------------------


class TestUnauthorised:
    def test_no_token_or_a_garbage_token_is_401_everywhere(self, client):
        for headers in ({}, bearer("not.a.token"), {"Authorization": "Basic b2ZmaWNlcjp4"}):
            for method, path, body in PROTECTED:
                r = call(client, method, path, body, headers)
                assert r.status_code == 401, (headers, method, path, r.status_code)
                assert_problem(r, 401)
                assert r.headers["www-authenticate"] == "Bearer", (method, path)

    def test_forged_tokens_are_401(self, users, clock):
        """Signed with another key, or unsigned with alg "none", for a real user."""
        officer = users["officer"]
        payload = claims(officer.user_id, clock.now())
        forged = jwt.encode(payload, "another-key-" + SECRET, algorithm="HS256")
        unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."
        for token in (forged, unsigned):
            assert_problem(officer.client.get("/api/me", headers=bearer(token)), 401)
            assert_problem(officer.client.get("/api/cases", headers=bearer(token)), 401)
        # The same claims signed with the real key are accepted: the forgery is what fails.
        genuine = jwt.encode(payload, SECRET, algorithm="HS256")
        assert ok(officer.client.get("/api/me", headers=bearer(genuine)))["username"] == "officer"

    def test_token_expires_after_30_minutes(self, users, clock):
        officer = users["officer"]
        clock.advance(timedelta(minutes=29))
        assert ok(officer.get("/api/me"))["username"] == "officer"
        clock.advance(timedelta(minutes=2))
        assert_problem(officer.get("/api/me"), 401)
        assert_problem(officer.get("/api/cases"), 401)


# --- POST /api/auth/logout -------------------------------------------------------------


class TestLogout:
    def test_logout_revokes_only_that_token(self, users):
        officer, manager = users["officer"], users["manager"]
        second = ok(sign_in(officer.client, "officer"))["access_token"]
        r = officer.post("/api/auth/logout")
        assert r.status_code == 204, r.text
        assert not r.content
        assert_problem(officer.get("/api/me"), 401)
        assert_problem(officer.post("/api/auth/logout"), 401)
        assert_problem(officer.get("/api/cases"), 401)
        # Another session of the same user, and other users, are untouched.
        assert ok(officer.client.get("/api/me", headers=bearer(second)))["username"] == "officer"
        assert ok(manager.get("/api/me"))["username"] == "manager"


# --- GET /api/me -----------------------------------------------------------------------


class TestMe:
    def test_me_describes_the_caller_and_their_permissions(self, users):
        me = ok(users["officer"].get("/api/me"))
        assert me["id"] == users["officer"].user_id
        assert me["username"] == "officer"
        assert me["roles"] == ["mash_officer"]
        assert me["agency"] == "City MASH"
        assert me["agency_kind"] == "children_social_care"
        assert "mash:case:screen" in me["permissions"]
        assert "mash:case:decide" not in me["permissions"]
        manager = ok(users["manager"].get("/api/me"))
        assert {"mash:case:screen", "mash:case:decide"} <= set(manager["permissions"])
        admin = ok(users["admin"].get("/api/me"))["permissions"]
        assert admin and not [p for p in admin if ":case:" in p]


# --- POST /api/referrals ---------------------------------------------------------------


class TestCreateReferral:
    def test_referral_is_created_with_its_case(self, users, clock):
        created = refer(users["teacher"])
        assert {"id", "reference", "case_id", "pathway", "state"} <= set(created)
        assert created["pathway"] == "mash" and created["state"] == "received"
        assert re.fullmatch(r"RE-\d{4}-[A-Z0-9]{6}", created["reference"])
        assert at(created["received_at"]) == clock.now()
        assert created["replayed"] is False
        seen = case(users["officer"], created["case_id"])
        assert seen["state"] == "received" and seen["version"] == 1
        assert seen["referral"]["id"] == created["id"]

    def test_same_idempotency_key_and_body_replays_one_referral(self, users):
        teacher = users["teacher"]
        first = refer(teacher, key="retry-abc")
        r = teacher.post(
            "/api/referrals", json=referral_body(), headers={"Idempotency-Key": "retry-abc"}
        )
        again = ok(r, 201)
        assert (again["id"], again["case_id"]) == (first["id"], first["case_id"])
        assert again["replayed"] is True
        assert r.headers.get("idempotent-replayed") == "true"
        assert queue(users["officer"])["total"] == 1
        assert ok(teacher.get("/api/referrals"))["total"] == 1

    def test_same_idempotency_key_with_another_body_is_422(self, users):
        teacher = users["teacher"]
        refer(teacher, key="retry-xyz")
        r = teacher.post(
            "/api/referrals",
            json=referral_body(summary="A different worry altogether."),
            headers={"Idempotency-Key": "retry-xyz"},
        )
        assert_problem(r, 422)
        assert error_fields(r) == {"Idempotency-Key"}
        assert queue(users["officer"])["total"] == 1

    def test_bad_referral_bodies_are_422_naming_the_field(self, users):
        teacher = users["teacher"]
        cases = [
            ({"subject": {"date_of_birth": "2012-05-01", "gender": "female"}}, "subject"),
            ({"concerns": ["neglect", "bad_vibes"]}, "concerns.1"),
            ({"concerns": []}, "concerns"),
            ({"consent": "refused"}, "consent_reason"),
            ({"subject": {"given_name": "Jo", "date_of_birth": "2099-01-01"}},
             "subject.date_of_birth"),
            ({"surprise": True}, "surprise"),
            ({"summary": ""}, "summary"),
            ({"pathway": "no_such_pathway"}, "pathway"),
        ]  # fmt: skip
        for overrides, field in cases:
            r = teacher.post("/api/referrals", json=referral_body(**overrides))
            assert_problem(r, 422)
            assert field in error_fields(r), (overrides, r.json())
        r = teacher.post(
            "/api/referrals", content=b'{"subject": ', headers={"Content-Type": "application/json"}
        )
        assert_problem(r, 422)
        assert ok(teacher.get("/api/referrals"))["total"] == 0
        assert queue(users["auditor"])["total"] == 0

    def test_roles_that_may_not_refer_get_403(self, users):
        for who in ("admin", "auditor"):
            r = users[who].post("/api/referrals", json=referral_body())
            assert_problem(r, 403)
        assert queue(users["auditor"])["total"] == 0


# --- GET /api/referrals, GET /api/referrals/{id} ---------------------------------------


class TestReadReferrals:
    def test_my_referrals_lists_only_mine_newest_first(self, users, clock):
        teacher, constable = users["teacher"], users["constable"]
        first = refer(teacher)
        clock.advance(timedelta(minutes=1))
        second = refer(teacher, subject={"given_name": "Sam", "family_name": "Lee"})
        other = refer(constable, subject={"given_name": "Kit", "family_name": "Moss"})
        mine = ok(teacher.get("/api/referrals"))
        assert mine["total"] == 2
        assert [i["id"] for i in mine["items"]] == [second["id"], first["id"]]
        assert all(i["status"] == "in_progress" for i in mine["items"])
        assert [i["id"] for i in ok(constable.get("/api/referrals"))["items"]] == [other["id"]]
        paged = ok(teacher.get("/api/referrals", params={"limit": 1, "offset": 1}))
        assert paged["total"] == 2 and [i["id"] for i in paged["items"]] == [first["id"]]
        r = teacher.get("/api/referrals", params={"limit": 0})
        assert_problem(r, 422)
        assert "limit" in error_fields(r)

    def test_referrer_sees_status_and_case_workers_see_it_all(self, users):
        created = refer(users["teacher"], consent="refused", consent_reason="risk of harm")
        r = users["teacher"].get(f"/api/referrals/{created['id']}")
        mine = ok(r)
        assert mine["id"] == created["id"] and mine["reference"] == created["reference"]
        assert mine["status"] == "in_progress" and mine["outcome"] is None
        assert "case_id" not in mine and "summary" not in mine
        assert referral_body()["summary"] not in r.text
        for who in ("officer", "auditor"):
            full = ok(users[who].get(f"/api/referrals/{created['id']}"))
            assert full["case_id"] == created["case_id"]
            assert full["summary"] == referral_body()["summary"]
            assert (full["consent"], full["consent_reason"]) == ("refused", "risk of harm")

    def test_others_may_not_read_or_list_referrals(self, users):
        created = refer(users["teacher"])
        for who in ("constable", "admin", "idva"):
            assert_problem(users[who].get(f"/api/referrals/{created['id']}"), 404)
        assert_problem(users["teacher"].get(f"/api/referrals/{created['id'] + 999}"), 404)
        for who in ("admin", "auditor"):
            assert_problem(users[who].get("/api/referrals"), 403)


# --- GET /api/cases --------------------------------------------------------------------


class TestQueue:
    def test_invisible_cases_are_absent_from_lists_and_counts(self, users):
        created = refer(users["teacher"])
        for who in ("officer", "auditor"):
            listed = queue(users[who])
            assert listed["total"] == 1, who
            assert [i["id"] for i in listed["items"]] == [created["case_id"]]
        for who in ("teacher", "admin", "idva"):
            for params in ({}, {"pathway": "mash"}, {"include_closed": "true"}):
                listed = queue(users[who], **params)
                assert listed["total"] == 0 and listed["items"] == [], (who, params)

    def test_red_first_then_by_due_time_and_filters(self, users, clock):
        teacher, constable, officer = users["teacher"], users["constable"], users["officer"]
        older = refer(teacher)["case_id"]
        clock.advance(timedelta(hours=25))  # past the older case's one-working-day deadline
        refresh(teacher, constable, officer)
        red = refer(constable, subject={"given_name": "Kit", "family_name": "Moss"})["case_id"]
        screen(officer, red, "red")
        listed = queue(officer)
        assert [i["id"] for i in listed["items"]] == [red, older]
        by_id = {i["id"]: i for i in listed["items"]}
        # The order is by rating, not due time: the older case is due earlier (overdue).
        assert at(by_id[older]["due_at"]) < at(by_id[red]["due_at"])
        assert by_id[older]["overdue"] is True and by_id[red]["overdue"] is False
        assert by_id[red]["rag"] == "red"
        assert [i["id"] for i in queue(officer, overdue="true")["items"]] == [older]
        assert [i["id"] for i in queue(officer, overdue="false")["items"]] == [red]
        assert [i["id"] for i in queue(officer, rag="red")["items"]] == [red]
        assert [i["id"] for i in queue(officer, state="received")["items"]] == [older]
        assert queue(officer, pathway="mash")["total"] == 2

    def test_paging(self, users, clock):
        """Pages laid end to end are the queue in its order, whatever the page size (the
        page's ids are chosen before its rows are joined, so the order must hold there)."""
        officer = users["officer"]
        ids = []
        for n in "ABCDE":
            ids.append(refer(users["teacher"], subject={"given_name": n})["case_id"])
            clock.advance(timedelta(minutes=5))  # due times differ too
        screen(officer, ids[3], "red")
        screen(officer, ids[1], "red")
        whole = [i["id"] for i in queue(officer, limit=200)["items"]]
        assert sorted(whole) == sorted(ids) and whole[:2] == [ids[1], ids[3]]
        for size in (1, 2, 3):
            pages = [queue(officer, limit=size, offset=o) for o in range(0, 6, size)]
            assert all(p["total"] == 5 for p in pages)
            assert [i["id"] for p in pages for i in p["items"]] == whole, size

    def test_bad_filters_are_422(self, users):
        cases = [({"pathway": "no_such_pathway"}, "pathway"), ({"rag": "purple"}, "rag"),
                 ({"limit": 0}, "limit"), ({"offset": -1}, "offset")]  # fmt: skip
        for params, field in cases:
            r = users["officer"].get("/api/cases", params=params)
            assert_problem(r, 422)
            assert field in error_fields(r), (params, r.json())


# --- GET /api/cases/{id} ---------------------------------------------------------------


class TestViewCase:
    def test_case_shows_its_state_deadline_and_what_the_caller_may_do(self, users, clock):
        created = refer(users["teacher"])
        seen = case(users["officer"], created["case_id"])
        assert seen["id"] == created["case_id"]
        assert (seen["pathway"], seen["state"], seen["version"]) == ("mash", "received", 1)
        # Received on a Wednesday: one working day is the same time on Thursday.
        assert at(seen["due_at"]) == clock.now() + timedelta(days=1)
        assert seen["person_id"] == seen["person"]["id"]
        assert seen["person"]["given_name"] == "Jo"
        assert seen["linked_cases"] == []
        events = {e["event"]: e for e in seen["available_events"]}
        assert "screen" in events and "decide" not in events
        assert events["screen"]["data"]["rag"]["choices"] == ["red", "amber", "green"]

    def test_available_events_follow_role_and_state(self, users):
        case_id = refer(users["teacher"])["case_id"]
        to_decision_pending(users["officer"], case_id)
        names = {e["event"] for e in case(users["manager"], case_id)["available_events"]}
        assert "decide" in names
        names = {e["event"] for e in case(users["officer"], case_id)["available_events"]}
        assert "decide" not in names
        assert case(users["auditor"], case_id)["available_events"] == []

    def test_case_outside_need_to_know_is_404_like_a_missing_one(self, users):
        case_id = refer(users["teacher"])["case_id"]
        hidden = {}
        for who in ("teacher", "constable", "admin", "idva"):
            hidden[who] = assert_problem(users[who].get(f"/api/cases/{case_id}"), 404)
        missing = assert_problem(users["officer"].get(f"/api/cases/{case_id + 999}"), 404)
        assert hidden["teacher"]["title"] == missing["title"]


# --- POST /api/cases/{id}/events -------------------------------------------------------


class TestFireEvent:
    def test_event_moves_the_state_and_bumps_the_version(self, users):
        case_id = refer(users["teacher"])["case_id"]
        fired = screen(users["officer"], case_id, "green")
        assert fired["from_state"] == "received" and fired["state"] == "screening"
        assert fired["version"] == 2
        assert fired["case"]["rag"] == "green" and fired["case"]["version"] == 2
        assert fired["opened_cases"] == []

    def test_role_without_the_event_permission_gets_403_and_nothing_changes(self, users):
        officer = users["officer"]
        case_id = refer(users["teacher"])["case_id"]
        before = to_decision_pending(officer, case_id)["version"]
        assert_problem(fire(officer, case_id, "decide", decision()), 403)
        assert_problem(fire(users["auditor"], case_id, "decide", decision(), before), 403)
        after = case(officer, case_id)
        assert (after["state"], after["version"]) == ("decision_pending", before)

    def test_auditor_reads_but_changes_nothing(self, users):
        case_id = refer(users["teacher"])["case_id"]
        assert case(users["auditor"], case_id)["state"] == "received"
        data = {"rag": "red", "rationale": "x"}
        assert_problem(fire(users["auditor"], case_id, "screen", data), 403)
        assert case(users["auditor"], case_id)["version"] == 1

    def test_caller_who_cannot_see_the_case_gets_404(self, users):
        """A practitioner or admin firing on a MASH case: the case is outside their
        need-to-know, so it is 404 (as for a read), not a 403 that confirms it exists."""
        case_id = refer(users["teacher"])["case_id"]
        data = {"rag": "red", "rationale": "x"}
        for who in ("teacher", "admin"):
            assert_problem(fire(users[who], case_id, "screen", data, version=1), 404)
        assert_problem(fire(users["officer"], case_id + 999, "screen", data, version=1), 404)
        assert case(users["officer"], case_id)["version"] == 1

    def test_stale_expected_version_is_409_and_changes_nothing(self, users):
        officer = users["officer"]
        case_id = refer(users["teacher"])["case_id"]
        screen(officer, case_id)
        stale = fire(
            officer,
            case_id,
            "request_checks",
            {
                "agencies": ["police"],
                "lawful_basis": "safeguarding",
                "recipient": "Partner agency leads",
            },
            version=1,
        )
        assert_problem(stale, 409)
        after = case(officer, case_id)
        assert (after["state"], after["version"]) == ("screening", 2)

    def test_event_not_valid_in_this_state_is_409(self, users):
        case_id = refer(users["teacher"])["case_id"]
        assert_problem(fire(users["manager"], case_id, "decide", decision()), 409)
        assert_problem(fire(users["officer"], case_id, "complete_checks"), 409)
        after = case(users["officer"], case_id)
        assert (after["state"], after["version"]) == ("received", 1)

    def test_bad_event_data_is_422_naming_the_field_and_changes_nothing(self, users):
        officer = users["officer"]
        case_id = refer(users["teacher"])["case_id"]
        cases = [
            ({"rag": "purple", "rationale": "x"}, "rag"),
            ({"rag": "red"}, "rationale"),
            ({"rag": "red", "rationale": "   "}, "rationale"),
            ({"rag": "red", "rationale": "x", "colour": "blue"}, "colour"),
        ]
        for data, field in cases:
            r = fire(officer, case_id, "screen", data, version=1)
            assert_problem(r, 422)
            assert field in error_fields(r), (data, r.json())
        after = case(officer, case_id)
        assert (after["state"], after["version"], after["rag"]) == ("received", 1, None)

    def test_bad_request_envelope_is_422(self, users):
        officer = users["officer"]
        case_id = refer(users["teacher"])["case_id"]
        url = f"/api/cases/{case_id}/events"
        r = officer.post(url, json={"event": "screen", "data": {}})
        assert_problem(r, 422)
        assert "expected_version" in error_fields(r)
        r = officer.post(url, json={"event": "screen", "data": {}, "expected_version": 1, "x": 1})
        assert_problem(r, 422)
        assert "x" in error_fields(r)


# --- the MASH journey ------------------------------------------------------------------


class TestMashJourney:
    def test_refer_screen_red_check_decide_and_referrer_is_told(self, users):
        teacher, officer, manager = users["teacher"], users["officer"], users["manager"]
        created = refer(teacher)
        case_id, received = created["case_id"], at(created["received_at"])

        fired = screen(officer, case_id, "red")
        assert at(fired["case"]["due_at"]) == received + timedelta(hours=4)
        assert case(officer, case_id)["rag"] == "red"

        steps = [
            ("request_checks", {"agencies": ["police", "health"], **ASKED},
             "information_gathering"),
            ("record_check", {"agency": "police", "summary": "Known: DV call-outs",
                              "risk_found": True, **ANSWERED}, "information_gathering"),
            ("complete_checks", {}, "decision_pending"),
        ]  # fmt: skip
        for event, data, state in steps:
            assert ok(fire(officer, case_id, event, data))["state"] == state

        done = ok(fire(manager, case_id, "decide", decision("early_help")))
        assert (done["state"], done["version"], done["opened_cases"]) == ("closed", 6, [])
        closed = case(manager, case_id)
        assert closed["closed"] is True and closed["due_at"] is None
        assert closed["attributes"]["outcome"] == "early_help"
        assert closed["available_events"] == []
        assert_problem(fire(manager, case_id, "decide", decision()), 409)
        assert closed["attributes"]["checks"][0]["agency"] == "police"
        assert queue(officer)["total"] == 0
        assert [i["id"] for i in queue(officer, include_closed="true")["items"]] == [case_id]

        r = teacher.get(f"/api/referrals/{created['id']}")
        told = ok(r)
        assert told["status"] == "decided" and told["outcome"] == "early_help"
        assert told["feedback"] == decision()["feedback_to_referrer"]
        assert told["outcome_at"] is not None
        assert RATIONALE not in r.text and "rationale" not in r.text
        listed = ok(teacher.get("/api/referrals"))["items"]
        assert listed[0]["outcome"] == "early_help"
        assert RATIONALE not in json.dumps(listed)

    def test_adult_safeguarding_enquiry_needs_the_s42_criteria(self, users):
        officer, manager = users["officer"], users["manager"]
        case_id = refer(users["teacher"], subject=ADULT)["case_id"]
        version = to_decision_pending(officer, case_id)["version"]
        r = fire(manager, case_id, "decide", decision("adult_safeguarding_enquiry"))
        assert_problem(r, 422)
        assert error_fields(r) >= S42
        assert case(manager, case_id)["version"] == version
        s42 = dict.fromkeys(S42, True)
        done = ok(fire(manager, case_id, "decide", decision("adult_safeguarding_enquiry", **s42)))
        assert done["state"] == "closed"
        assert done["case"]["attributes"]["s42_unable_to_protect"] is True

    def test_outcome_must_fit_the_subjects_age(self, users):
        officer, manager = users["officer"], users["manager"]
        adult = refer(users["teacher"], subject=ADULT)["case_id"]
        child = refer(users["teacher"])["case_id"]
        s42 = dict.fromkeys(S42, True)
        for case_id, outcome in ((adult, "child_in_need_assessment"),
                                 (child, "adult_safeguarding_enquiry")):  # fmt: skip
            version = to_decision_pending(officer, case_id)["version"]
            r = fire(manager, case_id, "decide", decision(outcome, **s42))
            assert_problem(r, 422)
            assert "outcome" in error_fields(r)
            after = case(manager, case_id)
            assert (after["state"], after["version"]) == ("decision_pending", version)

    def test_onward_referrals_open_linked_cases_the_manager_sees_only_as_made(self, users):
        """A pathway not set up is refused before anything is written (tests/test_engine.py,
        with a MASH-only installation); here every onward pathway exists."""
        officer, manager = users["officer"], users["manager"]
        created = refer(users["teacher"])
        case_id = created["case_id"]
        to_decision_pending(officer, case_id)
        r = fire(manager, case_id, "decide", decision("early_help", onward=["marac", "channel"]))
        ok(r)
        # A MASH manager sees neither the MARAC nor the Channel case, and hears only that
        # two onward referrals were made (the Channel one may be opened with a reason, by
        # its link): no pathway, no id.
        links = case(manager, case_id)["linked_cases"]
        assert links == [
            {"relation": "onward", "visible": False},
            {"relation": "onward", "visible": False, "link": 1, "open_with_reason": True},
        ]
        auditor_view = case(users["auditor"], case_id)["linked_cases"]
        assert all(link["visible"] for link in auditor_view)
        told = ok(users["teacher"].get(f"/api/referrals/{created['id']}"))
        assert told["outcome"] == "early_help"  # onward cases do not overwrite the outcome

    def test_a_late_decision_needs_a_late_reason(self, users, clock):
        teacher, officer, manager = users["teacher"], users["officer"], users["manager"]
        case_id = refer(teacher)["case_id"]
        clock.advance(timedelta(hours=25))  # past the one-working-day decision deadline
        refresh(officer, manager)
        assert case(manager, case_id)["overdue"] is True
        version = to_decision_pending(officer, case_id)["version"]
        r = fire(manager, case_id, "decide", decision())
        assert_problem(r, 422)
        assert error_fields(r) == {"late_reason"}
        assert case(manager, case_id)["version"] == version
        done = ok(fire(manager, case_id, "decide", decision(late_reason="staff sickness")))
        met = {d["name"]: d for d in done["case"]["deadlines"]}["decision"]
        assert met["status"] == "met" and met["late_reason"] == "staff sickness"


# --- GET /api/cases/{id}/history -------------------------------------------------------


class TestHistory:
    def test_history_lists_each_transition_with_who_and_what(self, users):
        officer = users["officer"]
        case_id = refer(users["teacher"])["case_id"]
        screen(officer, case_id, "amber")
        history = ok(officer.get(f"/api/cases/{case_id}/history"))
        assert history["case_id"] == case_id
        rows = history["history"]
        assert [(h["version"], h["event"], h["to_state"]) for h in rows] == [
            (1, "open", "received"),
            (2, "screen", "screening"),
        ]
        assert rows[1]["from_state"] == "received"
        assert rows[1]["actor_id"] == officer.user_id and rows[1]["actor_name"] == "Officer"
        assert rows[1]["data"] == {"rag": "amber", "rationale": "rated amber"}
        assert ok(users["auditor"].get(f"/api/cases/{case_id}/history"))["history"] == rows

    def test_history_of_an_invisible_or_missing_case_is_404(self, users):
        case_id = refer(users["teacher"])["case_id"]
        for who in ("teacher", "admin"):
            assert_problem(users[who].get(f"/api/cases/{case_id}/history"), 404)
        assert_problem(users["officer"].get(f"/api/cases/{case_id + 999}/history"), 404)


# --- GET /api/people/{id} --------------------------------------------------------------


class TestPeople:
    def test_person_with_their_visible_cases(self, users):
        first = refer(users["teacher"])
        second = refer(users["constable"])  # the same child, referred again
        person_id = case(users["officer"], first["case_id"])["person_id"]
        for who in ("officer", "auditor"):
            person = ok(users[who].get(f"/api/people/{person_id}"))
            assert person["id"] == person_id
            assert (person["given_name"], person["family_name"]) == ("Jo", "Bloggs")
            assert {c["id"] for c in person["cases"]} == {first["case_id"], second["case_id"]}
            assert {r["id"] for r in person["referrals"]} == {first["id"], second["id"]}

    def test_roles_that_may_not_view_people_get_403_and_unknown_is_404(self, users):
        created = refer(users["teacher"])
        person_id = case(users["officer"], created["case_id"])["person_id"]
        for who in ("teacher", "admin"):
            assert_problem(users[who].get(f"/api/people/{person_id}"), 403)
        assert_problem(users["officer"].get(f"/api/people/{person_id + 999}"), 404)


# --- GET /api/workflows, GET /api/workflows/{pathway} ----------------------------------


class TestWorkflows:
    def test_list_has_mash_with_its_states_and_events(self, users):
        flows = {w["pathway"]: w for w in ok(users["teacher"].get("/api/workflows"))}
        mash = flows["mash"]
        assert mash["initial"] == "received"
        states = ["received", "screening", "information_gathering", "decision_pending", "closed"]
        assert set(states) <= set(mash["states"])
        events = ["screen", "request_checks", "record_check", "complete_checks",
                  "refer_for_decision", "decide"]  # fmt: skip
        assert set(events) <= set(mash["events"])

    def test_one_pathway_with_roles_and_diagram(self, users):
        mash = ok(users["admin"].get("/api/workflows/mash"))
        assert mash["pathway"] == "mash"
        screen_ev, decide = mash["events"]["screen"], mash["events"]["decide"]
        assert screen_ev["from"] == ["received"] and screen_ev["to"] == "screening"
        assert "mash_officer" in screen_ev["roles"]
        assert "mash_manager" in decide["roles"] and "mash_officer" not in decide["roles"]
        assert "practitioner" not in screen_ev["roles"]
        assert {"outcome", "onward", "rationale", "feedback_to_referrer"} <= set(decide["data"])
        assert "received" in mash["mermaid"] and "decision_pending" in mash["mermaid"]
        assert_problem(users["admin"].get("/api/workflows/no_such_pathway"), 404)


# --- GET /api/audit, GET /api/audit/verify ---------------------------------------------


class TestAudit:
    def test_allowed_and_refused_requests_are_audited(self, users):
        officer, teacher, auditor = users["officer"], users["teacher"], users["auditor"]
        case_id = refer(teacher)["case_id"]
        ok(officer.get(f"/api/cases/{case_id}", headers={"X-Request-ID": "probe-view-1"}))
        to_decision_pending(officer, case_id)
        assert_problem(fire(officer, case_id, "decide", decision()), 403)
        assert_problem(teacher.get(f"/api/cases/{case_id}"), 404)
        assert_problem(fire(officer, case_id, "refer_for_decision", {"rationale": ""}), 409)

        rows = audit_rows(auditor, case_id=case_id)
        assert rows and all(r["case_id"] == case_id for r in rows)
        view = [r for r in rows if r["request_id"] == "probe-view-1"]
        assert [(r["action"], r["outcome"]) for r in view] == [("api:case:view", "allowed")]
        assert view[0]["actor"]["username"] == "officer"
        refused = {(r["action"], r["actor"]["username"]) for r in rows if r["outcome"] == "refused"}
        assert ("api:case:decide", "officer") in refused
        assert ("api:case:view", "teacher") in refused
        assert ("api:case:refer_for_decision", "officer") in refused
        assert {"api:case:screen", "api:case:refer_for_decision"} <= {
            r["action"] for r in rows if r["outcome"] == "allowed"
        }
        only = audit_rows(auditor, case_id=case_id, outcome="refused")
        assert only and {r["outcome"] for r in only} == {"refused"}

    def test_rejected_event_data_is_audited_as_refused(self, users):
        case_id = refer(users["teacher"])["case_id"]
        assert_problem(fire(users["officer"], case_id, "screen", {"rag": "purple"}), 422)
        rows = audit_rows(users["auditor"], case_id=case_id, outcome="refused")
        assert [r["action"] for r in rows] == ["api:case:screen"]
        assert rows[0]["summary"]["status"] == 422

    def test_refusals_are_audited_whichever_check_refuses(self, users):
        """A 422 is a refused request whether the request schema or the service catches it."""
        teacher, officer = users["teacher"], users["officer"]
        bad = [{"concerns": ["bad_vibes"]}, {"subject": {"date_of_birth": "2012-05-01"}}]
        for overrides in bad:
            assert_problem(teacher.post("/api/referrals", json=referral_body(**overrides)), 422)
        rows = audit_rows(users["auditor"], action="api:referral:create", outcome="refused")
        assert len(rows) == len(bad), [r["summary"] for r in rows]
        case_id = refer(teacher)["case_id"]
        body = {"event": "screen", "data": {"rag": "red", "rationale": "x"}, "expected_version": 1}
        assert_problem(officer.post(f"/api/cases/{case_id}/events", json={**body, "x": 1}), 422)
        rows = audit_rows(users["auditor"], case_id=case_id, outcome="refused")
        assert [r["action"] for r in rows] == ["api:case:screen"]

    def test_only_auditors_read_the_log(self, users):
        for who in ("officer", "manager", "admin", "teacher"):
            assert_problem(users[who].get("/api/audit"), 403)
        refused = audit_rows(users["auditor"], outcome="refused", action="api:audit:search")
        who = {r["actor"]["username"] for r in refused}
        assert who == {"officer", "manager", "admin", "teacher"}
        r = users["auditor"].get("/api/audit", params={"outcome": "maybe"})
        assert_problem(r, 422)
        assert "outcome" in error_fields(r)

    def test_reads_of_lists_people_and_history_are_audited(self, users):
        officer, auditor = users["officer"], users["auditor"]
        case_id = refer(users["teacher"])["case_id"]
        person_id = case(officer, case_id)["person_id"]
        ok(officer.get("/api/cases"))
        ok(officer.get(f"/api/cases/{case_id}/history"))
        ok(officer.get(f"/api/people/{person_id}"))
        for action, params in (
            ("api:case:list", {}),
            ("api:case:history", {"case_id": case_id}),
            ("api:person:view", {"person_id": person_id}),
        ):
            rows = audit_rows(auditor, action=action, actor_id=officer.user_id, **params)
            assert [r["outcome"] for r in rows] == ["allowed"], action

    def test_verify_seals_and_checks_the_chain(self, users):
        case_id = refer(users["teacher"])["case_id"]
        screen(users["officer"], case_id)
        for who in ("auditor", "admin"):
            result = ok(users[who].get("/api/audit/verify"))
            assert result["ok"] is True and result["rows"] > 0
        rows = audit_rows(users["auditor"], case_id=case_id)
        assert rows and all(r["seq"] is not None and r["hash"] for r in rows)
        for who in ("officer", "teacher"):
            assert_problem(users[who].get("/api/audit/verify"), 403)


# --- /healthz, /openapi.json, headers, body limit --------------------------------------


CSP_FRAME = "frame-ancestors 'none'"


def assert_security_headers(r) -> None:
    assert CSP_FRAME in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


class TestPlatform:
    def test_healthz_needs_no_sign_in(self, client):
        r = client.get("/healthz")
        assert ok(r) == {"status": "ok"}
        assert_security_headers(r)

    def test_security_headers_on_api_answers_and_errors(self, users, client):
        for r in (users["officer"].get("/api/me"), client.get("/api/me"),
                  users["officer"].get("/api/cases/999999")):  # fmt: skip
            assert_security_headers(r)
            assert r.headers["cache-control"] == "no-store"
            assert r.headers["x-request-id"]
        r = users["officer"].get("/api/me", headers={"X-Request-ID": "trace-42"})
        assert r.headers["x-request-id"] == "trace-42"
        r = users["officer"].get("/api/me", headers={"X-Request-ID": "bad id; <script>"})
        assert r.headers["x-request-id"] != "bad id; <script>"

    def test_body_over_the_limit_is_413_and_nothing_is_created(self, users):
        body = referral_body(summary="x" * 1_000_001)
        r = users["teacher"].post("/api/referrals", json=body)
        assert_problem(r, 413)
        assert_security_headers(r)
        assert ok(users["teacher"].get("/api/referrals"))["total"] == 0

    def test_chunked_body_over_the_limit_is_413(self, users):
        data = json.dumps(referral_body(summary="x" * 1_000_001)).encode()

        def chunks():
            for i in range(0, len(data), 65536):
                yield data[i : i + 65536]

        r = users["teacher"].post(
            "/api/referrals", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_problem(r, 413)
        assert ok(users["teacher"].get("/api/referrals"))["total"] == 0

    def test_openapi_describes_every_endpoint_and_the_referral_body(self, client):
        doc = ok(client.get("/openapi.json"))
        paths = {re.sub(r"\{[^}]+\}", "{}", p): set(ops) for p, ops in doc["paths"].items()}
        expected = {
            "/api/auth/token": {"post"},
            "/api/auth/logout": {"post"},
            "/api/me": {"get"},
            "/api/referrals": {"get", "post"},
            "/api/referrals/{}": {"get"},
            "/api/cases": {"get"},
            "/api/cases/{}": {"get"},
            "/api/cases/{}/events": {"post"},
            "/api/cases/{}/history": {"get"},
            "/api/people/{}": {"get"},
            "/api/workflows": {"get"},
            "/api/workflows/{}": {"get"},
            "/api/audit": {"get"},
            "/api/audit/verify": {"get"},
            "/healthz": {"get"},
        }
        for path, methods in expected.items():
            assert path in paths, path
            assert methods <= paths[path], (path, paths[path])
        schemas = doc["components"]["schemas"]

        def resolve(node: dict) -> dict:
            return schemas[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

        post = doc["paths"]["/api/referrals"]["post"]
        referral = resolve(post["requestBody"]["content"]["application/json"]["schema"])
        assert {"pathway", "subject", "concerns", "summary", "immediate_danger", "consent",
                "consent_reason", "dash"} <= set(referral["properties"])  # fmt: skip
        assert {"subject", "concerns", "summary", "consent"} <= set(referral["required"])
        subject = resolve(referral["properties"]["subject"])
        assert {"given_name", "family_name", "date_of_birth"} <= set(subject["properties"])
        events = doc["paths"]["/api/cases/{case_id}/events"]["post"]
        event_in = resolve(events["requestBody"]["content"]["application/json"]["schema"])
        assert {"event", "data", "expected_version"} <= set(event_in["properties"])
        assert PROBLEM in post["responses"]["422"]["content"]
