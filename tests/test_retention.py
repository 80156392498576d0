"""Retention (policies/retention.yaml), legal holds and subject access, on both databases.

A closed case past its period loses its personal data (names, date of birth, free text)
and gains a tombstone; the audit chain verifies before and after because audit rows
never held that data (checked here over a case's whole life). A legal hold keeps a case
until released; a person with a case still kept keeps their name.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import START
from dateutil.relativedelta import relativedelta

from referral_engine.errors import DefinitionError, InvalidData, NotFound
from referral_engine.ops.retention import ERASED, load_retention
from referral_engine.pathways.definitions import Workflows
from referral_engine.policies.policy import load_policy
from referral_engine.settings import PROJECT_ROOT
from referral_engine.storage.models import (
    AuditEvent,
    Case,
    CaseHistory,
    Erasure,
    LegalHold,
    Outbox,
    Person,
    Referral,
)

GIVEN, FAMILY, DOB = "Zebediah", "Quillfeather", "2013-07-19"
SUMMARY = "Distinctive worry about <b>Zebediah</b> at breakfast club"
RATIONALE = "Spoke to Mrs Quillfeather at the school gate"
FEEDBACK = "Thank you; Zebediah's family accepted early help"
SECRETS = (GIVEN, FAMILY, DOB, "breakfast club", "school gate")
SEVEN_YEARS = START + relativedelta(years=7)


def subject(**kw: Any) -> dict[str, Any]:
    return {"given_name": GIVEN, "family_name": FAMILY, "date_of_birth": DOB,
            "gender": "male", "address": "7 Lark Rise", "postcode": "ZZ9 9ZZ", **kw}  # fmt: skip


def close(fire, case_id: int) -> None:
    fire(case_id, "officer", "screen", {"rag": "amber", "rationale": RATIONALE})
    fire(case_id, "officer", "refer_for_decision", {"rationale": RATIONALE})
    fire(case_id, "manager", "decide", {
        "outcome": "early_help", "onward": [], "rationale": RATIONALE,
        "feedback_to_referrer": FEEDBACK,
    })  # fmt: skip


def everything(rt) -> str:
    """Every row of every table that may hold personal data, as one string."""
    out = []
    with rt.db.reading() as s:
        conn = s.connection()
        for model in (Person, Referral, Case, CaseHistory, Outbox):
            out += [repr(dict(r._mapping)) for r in conn.execute(sa.select(model.__table__))]
    return "\n".join(out)


def audit_bodies(rt) -> str:
    with rt.db.reading() as s:
        rows = s.connection().execute(sa.select(AuditEvent.body)).scalars()
        return "\n".join(bytes(b).decode() for b in rows)


def one(rt, model, *where):
    with rt.db.reading() as s:
        return s.execute(sa.select(model).where(*where)).scalar_one()


@pytest.fixture
def closed_case(runtime, refer, fire, staff) -> dict[str, Any]:
    made = refer(subject=subject(), summary=SUMMARY)
    close(fire, made["case_id"])
    # reads are audited too: they must not copy personal data into the log either
    runtime.cases.view(staff["officer"].actor, made["case_id"])
    return made


def test_audit_rows_never_hold_a_subjects_personal_data(runtime, closed_case):
    bodies = audit_bodies(runtime)
    assert bodies
    for secret in SECRETS:
        assert secret not in bodies, secret
    assert GIVEN in everything(runtime)  # and the data is really there to be erased


def test_apply_erases_personal_data_past_its_period_and_keeps_a_tombstone(
    runtime, closed_case, staff
):
    case_id = closed_case["case_id"]
    actor = staff["admin"].actor
    early = runtime.retention.apply(actor, START + relativedelta(years=5))
    assert early.erased == [] and early.people == []
    assert GIVEN in everything(runtime)

    before = one(runtime, Case, Case.id == case_id)
    result = runtime.retention.apply(actor, SEVEN_YEARS)
    assert result.erased == [case_id]
    assert result.people == [before.person_id]

    dump = everything(runtime)
    for secret in SECRETS:
        assert secret not in dump, secret
    person = one(runtime, Person, Person.id == before.person_id)
    assert (person.given_name, person.family_name, person.date_of_birth) == (ERASED, ERASED, None)
    referral = one(runtime, Referral, Referral.case_id == case_id)
    assert referral.subject == {"erased": True} and referral.summary == ERASED
    assert referral.reference == closed_case["reference"]  # not personal: kept
    decided = one(runtime, CaseHistory, CaseHistory.case_id == case_id,
                  CaseHistory.event == "decide")  # fmt: skip
    assert decided.data["rationale"] == ERASED
    assert decided.data["outcome"] == "early_help"  # a code, not anyone's words: kept
    case = one(runtime, Case, Case.id == case_id)
    assert (case.state, case.version, case.rag) == ("closed", before.version, "amber")

    tomb = one(runtime, Erasure, Erasure.case_id == case_id)
    assert tomb.person_erased and tomb.person_id == before.person_id
    assert tomb.rule == "mash.default: 6 years after closing"
    assert tomb.erased["person"] == 1 and tomb.erased["case_history.data"] >= 3
    assert tomb.erased_by == "admin"
    erase_rows = [
        json.loads(b)
        for b in audit_bodies(runtime).splitlines()
        if json.loads(b)["action"] == "api:retention:erase"
    ]
    assert [(r["case_id"], r["summary"]["tombstone"]) for r in erase_rows] == [(case_id, tomb.id)]
    assert runtime.verify_audit(deep=True).ok

    again = runtime.retention.apply(actor, SEVEN_YEARS + timedelta(days=1))
    assert again.erased == []


def test_legal_hold_keeps_a_case_until_released(runtime, closed_case, staff):
    case_id = closed_case["case_id"]
    actor = staff["admin"].actor
    with pytest.raises(InvalidData):
        runtime.retention.hold(actor, case_id, "  ")
    with pytest.raises(NotFound):
        runtime.retention.hold(actor, 999_999, "Inquiry")
    with pytest.raises(NotFound):
        runtime.retention.release(actor, case_id, "nothing to release")
    hold_id = runtime.retention.hold(actor, case_id, "Serious case review for Zebediah")

    held = runtime.retention.apply(actor, SEVEN_YEARS)
    assert (held.erased, held.held) == ([], [case_id])
    assert GIVEN in everything(runtime)

    assert runtime.retention.release(actor, case_id, "Review concluded") == [hold_id]
    done = runtime.retention.apply(actor, SEVEN_YEARS)
    assert done.erased == [case_id]
    hold = one(runtime, LegalHold, LegalHold.id == hold_id)
    assert hold.released_by == "admin" and hold.release_reason == "Review concluded"
    actions = [json.loads(b)["action"] for b in audit_bodies(runtime).splitlines()]
    assert actions.count("api:retention:hold") == actions.count("api:retention:release") == 1
    # the hold's reason names the child: it stays in the hold's row, not the audit log
    assert "Zebediah" not in audit_bodies(runtime)
    with pytest.raises(InvalidData):
        runtime.retention.hold(actor, case_id, "too late")
    assert runtime.verify_audit().ok


def test_a_person_with_a_case_still_kept_keeps_their_name(runtime, refer, fire, staff):
    first = refer(subject=subject(), summary=SUMMARY)
    close(fire, first["case_id"])
    second = refer(subject=subject(), summary="A later, still open worry", key="second")
    first_case = one(runtime, Case, Case.id == first["case_id"])
    second_case = one(runtime, Case, Case.id == second["case_id"])
    assert first_case.person_id == second_case.person_id is not None

    result = runtime.retention.apply(staff["admin"].actor, SEVEN_YEARS)
    assert result.erased == [first["case_id"]] and result.people == []
    person = one(runtime, Person, Person.id == first_case.person_id)
    assert person.given_name == GIVEN
    assert one(runtime, Referral, Referral.case_id == second["case_id"]).summary != ERASED
    assert one(runtime, Referral, Referral.case_id == first["case_id"]).summary == ERASED
    assert not one(runtime, Erasure, Erasure.case_id == first["case_id"]).person_erased


def test_an_onward_case_still_open_keeps_the_shared_referral(runtime, refer, fire, staff):
    made = refer(subject=subject(), summary=SUMMARY)
    mash = made["case_id"]
    fire(mash, "officer", "screen", {"rag": "red", "rationale": RATIONALE})
    fire(mash, "officer", "refer_for_decision", {"rationale": RATIONALE})
    fired = fire(mash, "manager", "decide", {
        "outcome": "strategy_discussion", "onward": ["marac"], "rationale": RATIONALE,
        "feedback_to_referrer": FEEDBACK,
    })  # fmt: skip
    (onward,) = fired.opened
    assert one(runtime, Case, Case.id == onward).referral_id == made["id"]

    result = runtime.retention.apply(staff["admin"].actor, SEVEN_YEARS)
    assert result.erased == [mash] and result.people == []
    referral = one(runtime, Referral, Referral.id == made["id"])
    assert referral.summary == SUMMARY  # the open MARAC case still needs it
    decided = one(runtime, CaseHistory, CaseHistory.case_id == mash,
                  CaseHistory.event == "decide")  # fmt: skip
    assert decided.data["rationale"] == ERASED
    assert "referral" not in one(runtime, Erasure, Erasure.case_id == mash).erased


def test_open_cases_are_never_erased(runtime, refer, staff):
    made = refer(subject=subject(), summary=SUMMARY)
    result = runtime.retention.apply(staff["admin"].actor, START + relativedelta(years=50))
    assert result.erased == []
    assert one(runtime, Referral, Referral.case_id == made["case_id"]).summary == SUMMARY


# --- the command line ------------------------------------------------------------------


def test_cli_hold_apply_release_and_subject_access(runtime, closed_case, tmp_path, cli):
    case_id = closed_case["case_id"]
    person_id = one(runtime, Case, Case.id == case_id).person_id
    later = SEVEN_YEARS.isoformat()

    held = cli("retention", "hold", "--case", str(case_id), "--reason", "Inquiry")
    assert held.returncode == 0, held.stderr
    dry = cli("retention", "apply", "--now", later, "--dry-run")
    assert json.loads(dry.stdout)["held_cases"] == [case_id], dry.stderr

    sar = cli("sar", "export", "--person", str(person_id), "--output", "out")
    assert sar.returncode == 0, sar.stderr
    data = json.loads((tmp_path / "out" / f"person-{person_id}.json").read_text())
    assert data["person"]["given_name"] == GIVEN
    assert [r["summary"] for r in data["referrals"]] == [SUMMARY]
    (case,) = data["cases"]
    assert [h["event"] for h in case["history"]] == ["open", "screen", "refer_for_decision",
                                                     "decide"]  # fmt: skip
    assert case["legal_holds"][0]["reason"] == "Inquiry"
    assert any(n["kind"] == "referral_received" for n in data["notifications"])
    who = {(a["actor"]["username"], a["action"]) for a in data["access_log"]}
    assert ("officer", "api:case:view") in who and ("teacher", "api:referral:create") in who
    html = (tmp_path / "out" / f"person-{person_id}.html").read_text()
    assert "&lt;b&gt;Zebediah&lt;/b&gt;" in html and "<b>Zebediah" not in html
    assert "officer" in html and FAMILY in html

    released = cli("retention", "release", "--case", str(case_id), "--reason", "x")
    assert released.returncode == 0, released.stderr
    applied = cli("retention", "apply", "--now", later)
    assert json.loads(applied.stdout)["erased_cases"] == [case_id], applied.stderr
    missing = cli("retention", "hold", "--case", "999999", "--reason", "x")
    assert missing.returncode == 1 and "no case 999999" in missing.stderr

    actions = [json.loads(b)["action"] for b in audit_bodies(runtime).splitlines()]
    for action in ("cli:retention:hold", "cli:retention:release", "cli:retention:erase",
                   "cli:person:subject_access"):  # fmt: skip
        assert actions.count(action) == 1, action
    verify = cli("audit", "verify", "--json")
    assert json.loads(verify.stdout)["ok"] is True, verify.stdout + verify.stderr


# --- the policy file -------------------------------------------------------------------


def test_periods_for_pathways_not_installed_are_allowed(tmp_path):
    """A partnership's schedule covers every pathway; a MASH-only installation loads it."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    shutil.copy(PROJECT_ROOT / "workflows" / "mash.yaml", workflows / "mash.yaml")
    policy = load_policy(PROJECT_ROOT / "policies")
    rules = load_retention(PROJECT_ROOT / "policies", Workflows(workflows, policy))
    assert rules.rule_for("mash", "closed")[1] == "mash.default: 6 years after closing"


@pytest.fixture(scope="module")
def definitions():
    policy = load_policy(PROJECT_ROOT / "policies")
    return Workflows(PROJECT_ROOT / "workflows", policy)


@pytest.mark.parametrize(
    ("old", "new", "field", "reason"),
    [
        ("    declined: {years: 2}", "    screening: {years: 2}", "retention.marac.screening",
         "not a closed state"),
        ("    declined: {years: 2}", "    declined: {years: 2, days: 3}",
         "retention.marac.declined", "exactly one"),
        ("default_period: {years: 6}\n", "", "retention.marac", "no retention period"),
    ],
)  # fmt: skip
def test_a_bad_retention_file_names_file_line_and_field(
    tmp_path, definitions, old, new, field, reason
):
    directory = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", directory)
    path = directory / "retention.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    broken = text.replace(old, new)
    if "no retention period" in reason:  # and take marac's own entry out too
        broken = re.sub(r"  marac:\n(    .*\n)+", "", broken)
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(DefinitionError) as exc:
        load_retention(directory, definitions)
    err = exc.value
    assert err.path == str(path) and err.field == field, str(err)
    assert reason in str(err) and err.line is not None
    anchor = new.strip().split("\n")[0] if new.strip() else "retention:"
    expected = broken[: broken.index(anchor)].count("\n") + 1
    assert err.line == expected, str(err)
