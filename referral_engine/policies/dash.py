"""The DASH risk checklist and the MARAC referral criteria computed from it.

Pure: given the answers, the version, the police incident count and the date of the
person's last MARAC referral, say what the score is and which criteria hold. The engine
stores the result on the MARAC case, so the coordinator never re-keys the answers and
an auditor sees exactly what the decision to accept rested on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, model_validator

CRITERIA = ("visible_high_risk", "professional_judgement", "potential_escalation", "repeat")


class Version(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str
    threshold: int = Field(ge=1)
    items: tuple[str, ...]


class DashPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold_note: str = ""
    potential_escalation_incidents: int = Field(ge=1)
    repeat_months: int = Field(ge=1)
    default_version: str
    version_by_agency_kind: dict[str, str] = {}
    versions: dict[str, Version]
    items: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self):
        for name in (self.default_version, *self.version_by_agency_kind.values()):
            if name not in self.versions:
                raise ValueError(f"unknown DASH version {name!r}")
        for name, version in self.versions.items():
            missing = [i for i in version.items if i not in self.items]
            if missing:
                raise ValueError(f"version {name} lists items with no wording: {missing}")
        return self

    def version_for(self, requested: str | None, agency_kind: str | None) -> str:
        if requested:
            return requested
        return self.version_by_agency_kind.get(agency_kind or "", self.default_version)


def assess(
    policy: DashPolicy,
    dash: dict[str, Any] | None,
    *,
    agency_kind: str | None,
    referred_at: datetime,
    last_marac_referral: datetime | None,
) -> dict[str, Any]:
    """The assessment as stored on the case: version, answers, score, criteria met."""
    dash = dash or {}
    version_name = policy.version_for(dash.get("version"), agency_kind)
    version = policy.versions[version_name]
    answers = {k: v for k, v in (dash.get("answers") or {}).items() if k in version.items}
    score = sum(1 for v in answers.values() if v == "yes")
    # None when the referrer did not know the count: unknown, not none.
    raw = dash.get("police_incidents_12m")
    incidents = int(raw) if raw is not None else None
    criteria = []
    if score >= version.threshold:
        criteria.append("visible_high_risk")
    if dash.get("professional_judgement") and dash.get("rationale"):
        criteria.append("professional_judgement")
    if incidents is not None and incidents >= policy.potential_escalation_incidents:
        criteria.append("potential_escalation")
    if last_marac_referral is not None and referred_at < last_marac_referral + relativedelta(
        months=policy.repeat_months
    ):
        criteria.append("repeat")
    return {
        "version": version_name,
        "answers": answers,
        "score": score,
        "threshold": version.threshold,
        "unanswered": [i for i in version.items if i not in answers],
        "professional_judgement": bool(dash.get("professional_judgement")),
        "rationale": dash.get("rationale"),
        "police_incidents_12m": incidents,
        "last_marac_referral": last_marac_referral.isoformat() if last_marac_referral else None,
        "criteria": criteria,
    }


def why_not(assessment: dict[str, Any], policy: DashPolicy) -> str:
    """In words, why no criterion holds (for the 422 that refuses `accept`)."""
    incidents = assessment.get("police_incidents_12m")
    counted = (
        f"{incidents} police incidents in 12 months (fewer than "
        f"{policy.potential_escalation_incidents})"
        if incidents is not None
        else "the number of police incidents in 12 months is not known"
    )
    return (
        f"no MARAC criterion holds: DASH score {assessment['score']} is below "
        f"{assessment['threshold']} ({assessment['version']}), no professional judgement "
        f"with a rationale, {counted}, and no MARAC referral of this person in the last "
        f"{policy.repeat_months} months"
    )
