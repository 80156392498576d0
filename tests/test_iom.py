"""The engine stays generic: Integrated Offender Management (`iom`) works from YAML alone,
and a pathway nobody has seen before, written into a temporary folder with a role granted
in a temporary copy of policies/, loads and can be walked to its end.

Each test runs on SQLite and on PostgreSQL (the `runtime` / `db_url` fixtures).
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, Team, add_user, make_settings, referral_body
from dateutil.relativedelta import relativedelta

from referral_engine.errors import (
    Forbidden,
    InvalidData,
    NotFound,
    NotValidNow,
)
from referral_engine.runtime import Runtime
from referral_engine.settings import PROJECT_ROOT
from referral_engine.storage.models import Case

OFFENDER = {
    "given_name": "Darren",
    "family_name": "Holt",
    "date_of_birth": "1988-07-19",
    "gender": "male",
    "address": "4 Mill Lane",
    "postcode": "AB9 1XY",
}


# --- helpers ---------------------------------------------------------------------------


def ok(r, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def error_fields(r) -> set[str]:
    return {e["field"] for e in r.json().get("errors") or []}


def at(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    assert t.tzinfo is not None, value
    return t


def sign_in(person) -> None:
    form = {"username": person.username, "password": PASSWORD}
    person.token = ok(person.client.post("/api/auth/token", data=form))["access_token"]


def view(person, case_id: int) -> dict[str, Any]:
    return ok(person.get(f"/api/cases/{case_id}"))


def fire(person, case_id: int, event: str, data: dict | None = None):
    version = view(person, case_id)["version"]
    body = {"event": event, "data": data or {}, "expected_version": version}
    return person.post(f"/api/cases/{case_id}/events", json=body)


def step(person, case_id: int, event: str, data: dict | None = None) -> dict[str, Any]:
    return ok(fire(person, case_id, event, data))


@pytest.fixture
def users(runtime, client) -> Team:
    return Team(runtime, client)


@pytest.fixture
def iom(runtime, client):
    """An IOM officer (not one of conftest's STAFF), signed in."""
    person = add_user(runtime, "iomofficer", ["iom_officer"], "City Police", "police")
    person.client = client
    sign_in(person)
    return person


def refer_iom(person) -> dict[str, Any]:
    body = referral_body(
        pathway="iom", subject=dict(OFFENDER), concerns=["other"],
        summary="Prolific acquisitive offender; 14 thefts this year.", consent="not_sought",
        consent_reason="Offender management; consent not required.",
    )  # fmt: skip
    return ok(person.post("/api/referrals", json=body), 201)


def review(case: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in case["deadlines"] if d["name"] == "monthly_review"]


# --- IOM -------------------------------------------------------------------------------


def test_iom_is_defined_by_yaml_alone():
    """No Python module of the engine or the web layer names the pathway or its role
    (demo data aside): it lives in workflows/iom.yaml and policies/ only."""
    word = re.compile(r"\biom(_officer)?\b")
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for folder in ("referral_engine", "web")
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        if path.name != "demo.py" and word.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert (PROJECT_ROOT / "workflows" / "iom.yaml").is_file()
    assert "iom_officer:" in (PROJECT_ROOT / "policies" / "roles.yaml").read_text(encoding="utf-8")


def test_iom_select_rate_monthly_review_rate_again_and_exit(users, iom, runtime, clock):
    body = referral_body(pathway="iom", subject=dict(OFFENDER))
    assert users["teacher"].post("/api/referrals", json=body).status_code == 403
    created = refer_iom(iom)
    assert created["pathway"] == "iom" and created["state"] == "identified"
    case_id = created["case_id"]
    # Others do not see an IOM case.
    assert users["officer"].get(f"/api/cases/{case_id}").status_code == 404
    assert users["gangs"].get(f"/api/cases/{case_id}").status_code == 404

    events = {e["event"] for e in view(iom, case_id)["available_events"]}
    assert events == {"select", "not_select"}
    assert fire(iom, case_id, "rate", {"rating": "red", "rationale": "r"}).status_code == 409
    selected = step(iom, case_id, "select", {"rationale": "Adopted at the IOM panel."})
    assert selected["state"] == "selected"
    assert selected["case"]["attributes"]["selection_rationale"] == "Adopted at the IOM panel."

    r = fire(iom, case_id, "rate", {"rating": "purple", "rationale": "r"})
    assert r.status_code == 422 and "rating" in error_fields(r), r.text
    r = fire(iom, case_id, "rate", {"rating": "red"})
    assert r.status_code == 422 and "rationale" in error_fields(r), r.text

    rated_at = clock.now()
    rated = step(iom, case_id, "rate", {"rating": "red", "rationale": "Reoffending weekly."})
    assert rated["state"] == "managed"
    case = rated["case"]
    assert case["rag"] == "red"
    (d,) = review(case)
    assert d["status"] == "open" and at(d["due_at"]) == rated_at + relativedelta(months=1)

    # The monthly review: not raised before a month, raised once after it.
    clock.at = rated_at + relativedelta(months=1) - timedelta(hours=1)
    assert runtime.scheduler.tick().reminded == []
    clock.at = rated_at + relativedelta(months=1) + timedelta(hours=1)
    assert len(runtime.scheduler.tick().reminded) == 1
    assert runtime.scheduler.tick().reminded == []
    sign_in(iom)
    assert [d["status"] for d in review(view(iom, case_id))] == ["reminded"]

    # Rated again at the review: amber, and the next review a month on.
    again_at = clock.now()
    again = step(iom, case_id, "rate", {"rating": "amber", "rationale": "Engaging with probation."})
    assert again["state"] == "managed" and again["case"]["rag"] == "amber"
    ratings = again["case"]["attributes"]["ratings"]
    assert [(x["rating"], x["rationale"]) for x in ratings] == [
        ("red", "Reoffending weekly."), ("amber", "Engaging with probation."),
    ]  # fmt: skip
    open_reviews = [d for d in review(again["case"]) if d["status"] == "open"]
    assert [at(d["due_at"]) for d in open_reviews] == [again_at + relativedelta(months=1)]

    r = fire(iom, case_id, "exit", {})
    assert r.status_code == 422 and "reason" in error_fields(r)
    done = step(iom, case_id, "exit", {"reason": "No offending for six months."})
    assert done["state"] == "exited"
    case = view(iom, case_id)
    assert case["closed"] is True and case["available_events"] == []
    assert case["attributes"]["exit_reason"] == "No offending for six months."
    # A closed case is due nothing: the pending review no longer applies.
    assert all(d["status"] != "open" for d in review(case))
    history = ok(iom.get(f"/api/cases/{case_id}/history"))["history"]
    assert [h["event"] for h in history] == ["open", "select", "rate", "rate", "exit"]
    assert runtime.verify_audit().ok


def test_iom_not_select(iom):
    case_id = refer_iom(iom)["case_id"]
    r = fire(iom, case_id, "not_select", {})
    assert r.status_code == 422 and "reason" in error_fields(r)
    done = step(iom, case_id, "not_select", {"reason": "Below the cohort threshold."})
    assert done["state"] == "not_selected"
    case = view(iom, case_id)
    assert case["closed"] is True and case["rag"] is None
    assert case["attributes"]["not_selected_reason"] == "Below the cohort threshold."
    assert fire(iom, case_id, "select", {}).status_code == 409


def test_iom_definition_is_served_with_its_states_events_and_roles(iom):
    d = ok(iom.get("/api/workflows/iom"))
    assert set(d["states"]) == {"identified", "selected", "managed", "exited", "not_selected"}
    assert set(d["events"]) == {"select", "not_select", "rate", "exit"}
    assert d["events"]["rate"]["roles"] == ["iom_officer"]
    assert set(d["events"]["rate"]["data"]["rating"]["choices"]) == {"red", "amber", "green"}
    assert "managed --> exited: exit" in d["mermaid"]


# --- a pathway nobody has seen ---------------------------------------------------------

BEFRIENDING = """\
# A pathway invented for this test: a volunteer befriender for an isolated older person.
pathway: befriending
label: Befriending
description: A volunteer befriender visits an isolated older person.
initial: waiting

states:
  waiting:
    label: Waiting for a befriender
  matched:
    label: Matched with a befriender
  ended:
    label: Ended
    terminal: true

events:
  match:
    label: Match with a volunteer
    from: [waiting]
    to: matched
    data:
      volunteer: {type: text, label: Volunteer}
      first_visit: {type: date, label: First visit}
    effects:
      - set_attributes: {values: {volunteer: volunteer, first_visit: first_visit}}

  end:
    label: End the befriending
    from: [matched]
    to: ended
"""

BEFRIENDING_ROLE = """
  befriending_coordinator:
    label: Befriending coordinator
    description: Matches isolated older people with volunteer befrienders.
    grants:
      - referral:referral:create
      - referral:own:view
      - workflow:definition:view
      - befriending:referral:create
      - befriending:case:view
      - befriending:history:view
      - befriending:case:match
      - befriending:case:end
"""


def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of workflows/ (plus the new pathway) and policies/ (plus its role)."""
    workflows = tmp_path / "workflows"
    shutil.copytree(PROJECT_ROOT / "workflows", workflows)
    (workflows / "befriending.yaml").write_text(BEFRIENDING, encoding="utf-8")
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    roles = policies / "roles.yaml"
    text = roles.read_text(encoding="utf-8")
    assert text.rstrip().splitlines()[-1].startswith("      - ")  # ends inside `roles:`
    roles.write_text(text.rstrip("\n") + "\n" + BEFRIENDING_ROLE, encoding="utf-8")
    return workflows, policies


@pytest.fixture
def generic_runtime(db_url, clock, tmp_path):
    workflows, policies = folders(tmp_path)
    rt = Runtime.build(make_settings(db_url, workflows_dir=workflows, policies_dir=policies), clock)
    rt.start()
    yield rt
    rt.stop()


def test_a_new_pathway_loads_from_a_folder_and_is_walked_to_its_end(
    generic_runtime, runtime, clock
):
    rt = generic_runtime
    assert "befriending" in rt.workflows.pathways
    assert "befriending" not in runtime.workflows.pathways  # the shipped folder is untouched
    coordinator = add_user(rt, "befriender", ["befriending_coordinator"], "Age Well", "voluntary")
    teacher = add_user(rt, "teacher", ["practitioner"], "Northgate Academy", "education")
    body = referral_body(
        pathway="befriending",
        subject={"given_name": "Edith", "family_name": "Marsh", "date_of_birth": "1941-01-09"},
        concerns=["self_neglect"],
        summary="Lives alone; has not left the house for weeks.",
    )

    with pytest.raises(Forbidden):
        rt.referrals.create(teacher.actor, body)
    # The installation without the new YAML does not know the pathway at all.
    with pytest.raises(InvalidData) as unknown:
        runtime.referrals.create(teacher.actor, body)
    assert [e.field for e in unknown.value.errors] == ["pathway"]

    created = rt.referrals.create(coordinator.actor, body)
    assert created["pathway"] == "befriending" and created["state"] == "waiting"
    case_id = created["case_id"]
    actor = coordinator.actor

    with pytest.raises(NotValidNow):
        rt.engine.fire(case_id, "end", actor, {}, 1)
    with pytest.raises(InvalidData) as bad:
        rt.engine.fire(case_id, "match", actor, {"first_visit": "not a date"}, 1)
    assert {e.field for e in bad.value.errors} == {"volunteer", "first_visit"}
    with pytest.raises(NotFound):  # the referrer may not see the case, let alone work it
        rt.engine.fire(case_id, "match", teacher.actor, {"volunteer": "Pat"}, 1)

    matched = rt.engine.fire(
        case_id, "match", actor, {"volunteer": "Pat Evans", "first_visit": "2026-12-01"}, 1
    )
    assert (matched.from_state, matched.to_state, matched.version) == ("waiting", "matched", 2)
    clock.advance(timedelta(days=1))
    ended = rt.engine.fire(case_id, "end", actor, {"note": "Moved to a care home."}, 2)
    assert (ended.from_state, ended.to_state, ended.version) == ("matched", "ended", 3)

    with rt.db.reading() as s:
        case = s.get(Case, case_id)
        assert (case.pathway, case.state, case.closed, case.version) == (
            "befriending", "ended", True, 3,
        )  # fmt: skip
        assert case.attributes["volunteer"] == "Pat Evans"
        assert case.attributes["first_visit"] == "2026-12-01"
    history = rt.cases.history(actor, case_id)
    assert [(h["event"], h["from_state"], h["to_state"]) for h in history] == [
        ("open", None, "waiting"), ("match", "waiting", "matched"), ("end", "matched", "ended"),
    ]  # fmt: skip
    assert rt.cases.view(actor, case_id)["available_events"] == []
    assert rt.verify_audit().ok

    # What GET /api/workflows/befriending serves: states, events, roles, a diagram.
    d = rt.workflows.get("befriending").describe(rt.policy)
    assert d["pathway"] == "befriending" and d["initial"] == "waiting"
    assert set(d["states"]) == {"waiting", "matched", "ended"}
    assert d["states"]["ended"]["terminal"] is True
    assert set(d["events"]) == {"match", "end"}
    assert d["events"]["match"]["roles"] == ["befriending_coordinator"]
    assert set(d["events"]["match"]["data"]) == {"volunteer", "first_visit"}
    assert "waiting --> matched: match" in d["mermaid"]
    assert "matched --> ended: end" in d["mermaid"]
