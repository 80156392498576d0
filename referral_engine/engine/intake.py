"""Receiving a referral into the system: the subject matched against known people,
repeats spotted, the referral recorded and its case opened on its pathway.

Used for referrals people make (`referrals/`) and for those the engine makes itself
(a child in the household of a MARAC case is referred to MASH), so both are recorded the
same way. `Opening` describes what a new case starts from.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from dateutil.relativedelta import relativedelta
from sqlmodel import Session

from referral_engine.access.rules import Actor
from referral_engine.clock import age_on
from referral_engine.people import matching as people
from referral_engine.policies.dash import assess as assess_dash
from referral_engine.policies.policy import Policy
from referral_engine.storage.models import Referral

REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: read over the phone

# The attributes every case opens with, besides what its workflow's effects set. KPIs may
# name them: reports/measures.py checks a measure's attribute names against these.
OPENING_ATTRIBUTES = frozenset({"repeat", "immediate_danger", "concerns", "high_risk_criteria"})


@dataclass(frozen=True)
class Opening:
    """What a new case starts from: its person, and the referral it came from if any."""

    pathway: str
    person_id: int | None
    referral_id: int | None = None
    received_at: datetime | None = None
    subject: dict[str, Any] | None = None
    is_child: bool = False
    referrer_id: int | None = None
    agency_id: int | None = None
    parent_case_id: int | None = None
    attributes: dict[str, Any] | None = None
    details: dict[str, Any] | None = None
    agency_kind: str | None = None
    reason: str = "referral"


class Opens(Protocol):
    workflows: Any

    def open_case(self, s: Session, opening: Opening, actor: Actor) -> int: ...


@dataclass(frozen=True)
class Received:
    referral: Referral
    case_id: int
    match: people.Match


def is_child(subject: dict[str, Any], today: date, limit: int) -> bool:
    dob = subject.get("date_of_birth")
    if dob:
        dob = date.fromisoformat(dob) if isinstance(dob, str) else dob
        return age_on(dob, today) < limit
    for key in ("estimated_age", "age"):
        if subject.get(key) is not None:
            return int(subject[key]) < limit
    return bool(subject.get("is_child"))


def split_name(name: str) -> tuple[str | None, str | None]:
    """A household member's one name as given and family names: the last word is the
    family name, the rest the given names; a single word is a given name (a child listed
    as "Sam" is not a person whose family name is Sam)."""
    words = name.split()
    if len(words) <= 1:
        return (words[0] if words else None), None
    return " ".join(words[:-1]), words[-1]


def new_reference(s: Session, now: datetime) -> str:
    while True:
        code = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(6))
        reference = f"RE-{now:%Y}-{code}"
        if not s.execute(sa.select(Referral.id).where(Referral.reference == reference)).first():
            return reference


def identify(s: Session, subject: dict[str, Any]) -> people.Match:
    """Match a referral's subject against known people (see people.py)."""
    dob = subject.get("date_of_birth")
    return people.find_or_create(
        s,
        given_name=subject.get("given_name"),
        family_name=subject.get("family_name"),
        date_of_birth=date.fromisoformat(dob) if isinstance(dob, str) else dob,
        estimated_age=subject.get("estimated_age"),
        gender=subject.get("gender"),
    )


def receive(
    s: Session,
    engine: Opens,
    policy: Policy,
    now: datetime,
    actor: Actor,
    *,
    referrer_id: int | None,
    agency_id: int | None,
    agency_kind: str | None,
    pathway: str,
    subject: dict[str, Any],
    concerns: list[str],
    summary: str,
    immediate_danger: bool = False,
    consent: str,
    consent_reason: str | None = None,
    details: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    parent_case_id: int | None = None,
    reason: str = "referral",
) -> Received:
    if engine.workflows.get(pathway).definition.identify == "on_referral":
        match = identify(s, subject)
    else:
        match = people.Match(None, False, ())
    child = is_child(subject, now.date(), policy.rules.child_age_limit)
    months = policy.rules.repeat_referral_window_months
    repeat_of = (
        None
        if match.person_id is None
        else s.execute(
            sa.select(Referral.id)
            .where(
                # A repeat on the same pathway only: an earlier Channel referral must not
                # surface (even as a flag) on a MASH referral.
                Referral.person_id == match.person_id,
                Referral.pathway == pathway,
                Referral.received_at >= now - relativedelta(months=months),
            )
            .order_by(Referral.received_at.desc())
            .limit(1)
        ).scalar_one_or_none()
    )
    referral = Referral(
        reference=new_reference(s, now),
        referrer_id=referrer_id,
        agency_id=agency_id,
        agency_kind=agency_kind,
        pathway=pathway,
        person_id=match.person_id,
        subject=subject,
        concerns=list(dict.fromkeys(concerns)),
        summary=summary,
        immediate_danger=immediate_danger,
        consent=consent,
        consent_reason=consent_reason,
        details=details or {},
        received_at=now,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        is_child=child,
        repeat_of_referral_id=repeat_of,
        possible_matches=list(match.possible),
    )
    s.add(referral)
    s.flush()
    case_id = engine.open_case(
        s,
        Opening(
            pathway=pathway,
            person_id=match.person_id,
            referral_id=referral.id,
            received_at=now,
            subject=referral.subject,
            is_child=child,
            referrer_id=referrer_id,
            agency_id=agency_id,
            parent_case_id=parent_case_id,
            attributes={  # each name in OPENING_ATTRIBUTES
                "repeat": repeat_of is not None,
                "immediate_danger": immediate_danger,
                "concerns": referral.concerns,
                # Kept so the queue ranks it with the red ones until it is rated.
                "high_risk_criteria": high_risk_criteria(policy, details, agency_kind, now),
            },
            details=referral.details,
            agency_kind=agency_kind,
            reason=reason,
        ),
        actor,
    )
    referral.case_id = case_id
    s.flush()
    return Received(referral, case_id, match)


def high_risk_criteria(
    policy: Policy, details: dict[str, Any] | None, agency_kind: str | None, now: datetime
) -> list[str]:
    """The MARAC criteria a referral's DASH meets as it arrives (a score at the threshold,
    professional judgement with a reason, enough police incidents): a referral meeting
    one is high risk before anyone has rated it, and the queue treats it so."""
    dash = (details or {}).get("dash")
    if not dash:
        return []
    found = assess_dash(policy.dash, dash, agency_kind=agency_kind, referred_at=now,
                   last_marac_referral=None)  # fmt: skip
    return list(found["criteria"])
