"""The rules a referral must meet beyond its shape, each reported with every other at once.

The schema (`ReferralIn`) says what a field may hold; these say what a referral may say:
a date of birth not in the future, a reason when consent was not given, reasons for a
professional judgement, DASH answers only to the questions of the checklist used, and a
domestic-abuse referral with its DASH answers or a reason why there are none. They read
the body as sent, so they still run when the schema has refused some other field: the
referrer sees every error on the first submit, not a new one on each.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from referral_engine.engine import intake
from referral_engine.errors import FieldError
from referral_engine.policies.policy import Policy

# Genders for which the FGM duty may apply: a girl, or a child whose gender is not given.
FGM_GENDERS = ("", "female", "girl", "f", "not known")
FGM_REMINDER = (
    "you have a legal duty to report known FGM in a girl under 18 to the police "
    "(call 101); say whether you have"
)
DASH_CONCERN = "domestic_abuse"
DASH_MISSING = (
    "answer the DASH checklist with the victim, or say why it could not be done "
    "(for example, it was not safe to ask)"
)


def check(
    policy: Policy, body: dict[str, Any], today: date, *, agency_kind: str | None
) -> list[FieldError]:
    """Every rule the referral breaks, read from the body as sent (tolerant of bad types)."""
    vocab = policy.reference
    errors: list[FieldError] = []
    subject = _dict(body.get("subject"))
    concerns = [c for c in _list(body.get("concerns")) if isinstance(c, str)]
    errors += [
        FieldError(f"concerns.{i}", f"unknown concern {c!r}")
        for i, c in enumerate(concerns)
        if c not in vocab.concerns
    ]
    consent, reason = body.get("consent"), _text(body.get("consent_reason"))
    if isinstance(consent, str) and consent:
        if consent not in vocab.consent:
            errors.append(FieldError("consent", f"must be one of {', '.join(vocab.consent)}"))
        elif consent != "given" and not reason:
            errors.append(FieldError("consent_reason", "say why consent was refused or not sought"))
    dob = _date(subject.get("date_of_birth"))
    if dob and dob > today:
        errors.append(FieldError("subject.date_of_birth", "is in the future"))
    pathway = body.get("pathway", "mash")
    errors += _dash(policy, body, concerns, pathway, agency_kind)
    errors += _fgm(policy, body, subject, concerns, today, agency_kind)
    return errors


def _dash(
    policy: Policy, body: dict[str, Any], concerns: list[str], pathway: Any,
    agency_kind: str | None,
) -> list[FieldError]:  # fmt: skip
    raw = body.get("dash")
    dash = _dict(raw)
    errors: list[FieldError] = []
    version = dash.get("version")
    if isinstance(version, str) and version and version not in policy.dash.versions:
        errors.append(
            FieldError(
                "dash.version",
                f"must be one of {', '.join(policy.dash.versions)} (or left out)",
            )
        )
        version = None
    if dash.get("professional_judgement") is True and not _text(dash.get("rationale")):
        errors.append(FieldError("dash.rationale", "professional judgement needs its reasons"))
    name = policy.dash.version_for(version if isinstance(version, str) else None, agency_kind)
    checklist = policy.dash.versions[name]
    answers = _dict(dash.get("answers"))
    errors += [
        FieldError(
            f"dash.answers.{key}",
            f"question {key} is not on the {checklist.label}; answer only its questions",
        )
        for key in answers
        if key not in checklist.items
    ]
    if (
        DASH_CONCERN in concerns
        and not answers
        and not _text(dash.get("not_completed_reason"))
        and not (dash.get("professional_judgement") is True and _text(dash.get("rationale")))
    ):
        errors.append(FieldError("dash.not_completed_reason", DASH_MISSING))
    return errors


def _fgm(
    policy: Policy, body: dict[str, Any], subject: dict[str, Any], concerns: list[str],
    today: date, agency_kind: str | None,
) -> list[FieldError]:  # fmt: skip
    """The mandatory reporting duty (FGM Act 2003 s5B): a teacher, health or social care
    professional who learns of FGM in a girl under 18 must report it to the police. The
    form reminds them, and the referral records whether and when they did; a child whose
    gender is not given may be a girl, so the reminder stands."""
    vocab = policy.reference
    if "female_genital_mutilation" not in concerns:
        return []
    if agency_kind not in vocab.fgm_duty_agency_kinds:
        return []
    gender = _text(subject.get("gender")).lower()
    # Only from values of the right kinds: the schema reports any others by name.
    known = {
        "date_of_birth": _date(subject.get("date_of_birth")),
        "estimated_age": _int(subject.get("estimated_age")),
    }
    child = intake.is_child(
        {k: v for k, v in known.items() if v is not None}, today, policy.rules.child_age_limit
    )
    if not child or gender not in FGM_GENDERS:
        return []
    duty = body.get("fgm_duty")
    if not isinstance(duty, dict) or "reported_to_police" not in duty:
        return [FieldError("fgm_duty.reported_to_police", FGM_REMINDER)]
    if duty.get("reported_to_police") is True and not duty.get("reported_on"):
        return [FieldError("fgm_duty.reported_on", "give the date you reported it")]
    return []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
