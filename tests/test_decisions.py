"""A MASH decision as a MASH records it (issue 18): more than one outcome at once (a police
investigation and a strategy discussion together) while `outcome` alone still works; IOM
among the onward pathways; and a MARAC case's `repeat` flag agreeing with the MARAC
criteria worked out for the same case. Each runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from conftest import referral_body

from referral_engine.storage.models import Case

DECIDE = {"rationale": "Assaulted by a cousin; police are investigating.",
          "feedback_to_referrer": "A strategy discussion is being held."}  # fmt: skip


def decided(runtime, refer, fire, data: dict, **referral) -> Case:
    case_id = refer(**referral)["case_id"]
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "Injuries"})
    fire(case_id, "officer", "refer_for_decision", {"rationale": "Cannot wait"})
    fire(case_id, "manager", "decide", {**DECIDE, **data})
    with runtime.db.reading() as s:
        return s.get(Case, case_id)


def onward_pathways(runtime, case_id: int) -> list[str]:
    with runtime.db.reading() as s:
        rows = s.execute(sa.select(Case.pathway).where(Case.parent_case_id == case_id))
        return sorted(p for (p,) in rows)


def test_a_decision_records_several_outcomes_and_their_timescales(runtime, refer, fire, staff):
    case = decided(
        runtime, refer, fire,
        {"outcome": "police_investigation", "further_outcomes": ["strategy_discussion"],
         "onward": []},
    )  # fmt: skip
    assert case.state == "closed"
    assert case.attributes["outcome"] == "police_investigation"
    assert case.attributes["further_outcomes"] == ["strategy_discussion"]
    view = runtime.cases.view(staff["manager"].actor, case.id)
    # The strategy discussion starts the initial child protection conference clock.
    assert "initial_child_protection_conference" in {d["name"] for d in view["deadlines"]}


def test_a_single_outcome_still_works_and_further_outcomes_fit_the_age(runtime, refer, fire):
    case = decided(runtime, refer, fire, {"outcome": "early_help", "onward": []})
    assert case.attributes["outcome"] == "early_help"
    assert not case.attributes.get("further_outcomes")
    # An adult-only outcome among the further ones is refused for a child, by name.
    case_id = refer()["case_id"]
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "Injuries"})
    fire(case_id, "officer", "refer_for_decision", {"rationale": "Cannot wait"})
    try:
        fire(case_id, "manager", "decide", {**DECIDE, "outcome": "police_investigation",
             "further_outcomes": ["adult_safeguarding_enquiry"], "onward": []})  # fmt: skip
    except Exception as exc:
        assert "further_outcomes" in str(exc.errors)  # type: ignore[attr-defined]
    else:
        raise AssertionError("an adult-only outcome was accepted for a child")


def test_iom_is_an_onward_pathway(runtime, refer, fire):
    adult = {"given_name": "Lee", "family_name": "Hart", "date_of_birth": "1990-01-01"}
    case = decided(
        runtime, refer, fire,
        {"outcome": "police_investigation", "onward": ["iom"]}, subject=adult,
    )  # fmt: skip
    assert onward_pathways(runtime, case.id) == ["iom"]


def test_a_marac_cases_repeat_flag_agrees_with_its_criteria(runtime, refer, fire, staff):
    # First heard through the MASH (an onward case), then referred straight to MARAC
    # within twelve months: a repeat by the MARAC criteria, so flagged a repeat.
    victim = {"given_name": "Kay", "family_name": "Hughes", "date_of_birth": "1994-06-02",
              "gender": "female"}  # fmt: skip
    decided(runtime, refer, fire, {"outcome": "police_investigation", "onward": ["marac"]},
            subject=victim, concerns=["domestic_abuse"])  # fmt: skip
    body = referral_body(pathway="marac", subject=victim, concerns=["domestic_abuse"],
                         consent="not_sought", consent_reason="High risk",
                         dash={"answers": {"1": "yes"}})  # fmt: skip
    again = runtime.referrals.create(staff["constable"].actor, body)
    with runtime.db.reading() as s:
        case = s.get(Case, again["case_id"])
    assert "repeat" in case.attributes["criteria"]
    assert case.attributes["repeat"] is True
