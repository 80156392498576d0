"""Receiving a referral: validate it, match its subject, spot repeats, open its case.

A referral either enters MASH (the default) or, for roles allowed to refer straight into
a pathway (policies/roles.yaml: `<pathway>:referral:create`), that pathway. A retried
request with the same Idempotency-Key returns the referral it already created.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.audit.log import AuditLog, canonical
from referral_engine.clock import Clock
from referral_engine.engine import intake
from referral_engine.engine.engine import Engine
from referral_engine.errors import (
    DomainError,
    FieldError,
    Forbidden,
    InvalidData,
    NotFound,
)
from referral_engine.notifications import Outbox
from referral_engine.pathways.eventdata import field_error
from referral_engine.policies.policy import Policy
from referral_engine.referrals import checks
from referral_engine.storage.db import Database
from referral_engine.storage.models import Case, Referral

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]


NAME_REQUIRED = "give the subject's given name or family name (or both)"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class HouseholdMember(Strict):
    name: Text
    relationship: Text | None = None
    date_of_birth: date | None = None
    age: int | None = Field(default=None, ge=0, le=130)
    is_child: bool | None = None


class Subject(Strict):
    given_name: Text | None = None
    family_name: Text | None = None
    other_names: Text | None = None
    date_of_birth: date | None = None
    estimated_age: int | None = Field(default=None, ge=0, le=130)
    gender: Text | None = None
    address: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None
    postcode: Annotated[str, StringConstraints(strip_whitespace=True, max_length=12)] | None = None
    ethnicity: Text | None = None
    language: Text | None = None
    interpreter_needed: bool = False
    household: list[HouseholdMember] = []

    @model_validator(mode="after")
    def _named(self):
        if not (self.given_name or self.family_name):
            raise ValueError(NAME_REQUIRED)
        return self


class Dash(Strict):
    answers: dict[str, Literal["yes", "no", "not_known"]] = {}
    version: str | None = None
    professional_judgement: bool = False
    rationale: LongText | None = None
    # Blank is "not known", never 0: no incidents and no count are different answers.
    police_incidents_12m: int | None = Field(default=None, ge=0, le=1000)
    # Why there are no answers (a domestic-abuse referral needs the answers or this).
    not_completed_reason: LongText | None = None


class FgmDuty(Strict):
    """Regulated professionals must report known FGM in a girl under 18 to the police."""

    reported_to_police: bool
    reported_on: date | None = None


class Contact(Strict):
    phone: Text | None = None
    email: EmailStr | None = None


class ReferralIn(Strict):
    pathway: str = "mash"
    subject: Subject
    concerns: list[str] = Field(min_length=1)
    summary: LongText
    immediate_danger: bool = False
    consent: str
    consent_reason: LongText | None = None
    dash: Dash | None = None
    referrer_contact: Contact | None = None
    victim_aware: bool | None = None
    victim_aware_reason: LongText | None = None
    fgm_duty: FgmDuty | None = None


# What of a referral, besides its subject and narrative, is kept in its `details`.
DETAILS = {"dash", "referrer_contact", "victim_aware", "victim_aware_reason", "fgm_duty"}


class Referrals:
    def __init__(
        self,
        db: Database,
        engine: Engine,
        access: Access,
        policy: Policy,
        clock: Clock,
        audit: AuditLog,
        outbox: Outbox,
    ):
        self.db, self.engine, self.access, self.policy = db, engine, access, policy
        self.clock, self.audit, self.outbox = clock, audit, outbox

    # --- receiving -----------------------------------------------------------------------

    def parse(self, body: Any, actor: Actor | None = None) -> ReferralIn:
        """Validate a referral body; errors name each field and say why, all at once.

        The schema's errors and the referral rules (`checks`) are reported together, so a
        second submit never shows an error that was already there on the first.
        """
        if not isinstance(body, dict):
            raise InvalidData(FieldError("body", "must be a JSON object"))
        # Checked before the schema, so it is reported with every other error at once.
        subject = body.get("subject")
        unnamed = isinstance(subject, dict) and not any(
            str(subject.get(k) or "").strip() for k in ("given_name", "family_name")
        )
        name_error = FieldError("subject.given_name", NAME_REQUIRED)
        ref: ReferralIn | None = None
        errors: list[FieldError] = []
        try:
            ref = ReferralIn.model_validate(body)
        except ValidationError as exc:
            errors = [field_error(e) for e in exc.errors()]
            if unnamed and all(not e.field.startswith("subject.given_name") for e in errors):
                errors.insert(0, name_error)
        seen = {e.field for e in errors}
        kind = actor.agency_kind if actor else None
        rules = checks.check(self.policy, body, self.clock.now().date(), agency_kind=kind)
        errors += [e for e in rules if e.field not in seen]
        pathway = body.get("pathway", "mash")
        if isinstance(pathway, str) and pathway not in self.engine.workflows.pathways:
            errors.append(FieldError("pathway", f"{pathway!r} is not set up in this installation"))
        if errors or ref is None:
            raise InvalidData(errors)
        return ref

    def create(self, actor: Actor, body: Any, idempotency_key: str | None = None) -> dict:
        action = f"{actor.source}:referral:create"
        try:
            ref = self.parse(body, actor)
            permission = (
                "referral:referral:create" if ref.pathway == "mash"
                else f"{ref.pathway}:referral:create"
            )  # fmt: skip
            if not self.access.can(actor, permission):
                raise Forbidden(f"you may not refer directly into {ref.pathway}")
            if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
                raise InvalidData(FieldError("Idempotency-Key", "must be 1-200 characters"))
            digest = hashlib.sha256(canonical(body)).hexdigest()
            if idempotency_key:
                replay = self._replay(actor, idempotency_key, digest)
                if replay is not None:
                    return replay
            try:
                with self.db.transaction() as s:
                    return self._create(s, actor, ref, idempotency_key, digest)
            except IntegrityError:
                # A concurrent request with the same key won the race: answer with its result.
                replay = self._replay(actor, idempotency_key, digest) if idempotency_key else None
                if replay is None:
                    raise
                return replay
        except DomainError as exc:
            self.engine.refused(actor, action, exc, target="referral", summary={})
            raise

    def _replay(self, actor: Actor, key: str, digest: str) -> dict | None:
        with self.db.transaction() as s:
            row = s.execute(
                sa.select(Referral).where(
                    Referral.referrer_id == actor.user_id, Referral.idempotency_key == key
                )
            ).scalar_one_or_none()
            if row is None:
                return None
            if row.request_hash != digest:
                raise InvalidData(
                    FieldError("Idempotency-Key", "was already used for a different referral")
                )
            case = s.get(Case, row.case_id)
            self.audit.record(
                s, actor, f"{actor.source}:referral:replay", target=f"referral:{row.id}",
                case_id=row.case_id, person_id=row.person_id, summary={"key": key},
            )  # fmt: skip
            return self._created(actor, row, case, replayed=True)

    def _create(
        self, s: Session, actor: Actor, ref: ReferralIn, key: str | None, digest: str
    ) -> dict:
        now = self.clock.now()
        got = intake.receive(
            s, self.engine, self.policy, now, actor,
            referrer_id=actor.user_id,  # type: ignore[arg-type]
            agency_id=actor.agency_id,
            agency_kind=actor.agency_kind,
            pathway=ref.pathway,
            subject=ref.subject.model_dump(mode="json"),
            concerns=ref.concerns,
            summary=ref.summary,
            immediate_danger=ref.immediate_danger,
            consent=ref.consent,
            consent_reason=ref.consent_reason,
            details=ref.model_dump(mode="json", include=DETAILS, exclude_none=True),
            idempotency_key=key,
            request_hash=digest,
        )  # fmt: skip
        referral, case_id, match = got.referral, got.case_id, got.match
        self.outbox.enqueue(
            s, kind="referral_received", user_ids=[actor.user_id] if actor.user_id else [],
            referral_id=referral.id, payload={"reference": referral.reference},
            dedupe=f"referral:{referral.id}:received",
        )  # fmt: skip
        self.audit.record(
            s, actor, f"{actor.source}:referral:create", target=f"referral:{referral.id}",
            case_id=case_id, person_id=match.person_id, at=now,
            summary={"reference": referral.reference, "pathway": ref.pathway,
                     "repeat_of": referral.repeat_of_referral_id,
                     "matched_person": match.matched, "possible_matches": list(match.possible)},
        )  # fmt: skip
        case = s.get(Case, case_id)
        return self._created(actor, referral, case, replayed=False)

    def _created(
        self, actor: Actor, referral: Referral, case: Case | None, *, replayed: bool
    ) -> dict:
        out = {
            "id": referral.id,
            "reference": referral.reference,
            "case_id": referral.case_id,
            "pathway": referral.pathway,
            "state": case.state if case else None,
            "received_at": referral.received_at.isoformat(),
            "replayed": replayed,
        }
        # Whether this person was referred before is someone else's referral: only a
        # reader of the case it opened (a MASH officer, not the referrer) is told.
        if case is not None and self.access.can_see(actor, case):
            out["repeat"] = referral.repeat_of_referral_id is not None
        return out

    # --- reading -------------------------------------------------------------------------

    def view(self, actor: Actor, referral_id: int) -> dict:
        """A referral as this caller may see it: the referrer sees status and outcome
        only; those who may see the case see the referral in full."""
        action = f"{actor.source}:referral:view"
        try:
            with self.db.transaction() as s:
                row = s.get(Referral, referral_id)
                case = s.get(Case, row.case_id) if row and row.case_id else None
                full = case is not None and self.access.can_see(actor, case)
                own = (
                    row is not None
                    and row.referrer_id == actor.user_id
                    and self.access.can(actor, "referral:own:view")
                )
                if row is None or not (full or own):
                    raise NotFound(f"referral {referral_id} not found")
                self.audit.record(
                    s, actor, action, target=f"referral:{row.id}", case_id=row.case_id,
                    person_id=row.person_id, summary={"view": "full" if full else "status"},
                )  # fmt: skip
                return self.describe(row, case, full=full)
        except DomainError as exc:
            self.engine.refused(actor, action, exc, target=f"referral:{referral_id}")
            raise

    def mine(self, actor: Actor, *, limit: int = 50, offset: int = 0) -> dict:
        """The caller's own referrals, newest first, as their referrer may see them."""
        action = f"{actor.source}:referral:list"
        try:
            if not self.access.can(actor, "referral:own:view"):
                raise Forbidden("you may not list referrals")
            if not 1 <= limit <= 200 or offset < 0:
                raise InvalidData(FieldError("limit", "must be 1-200, with offset 0 or more"))
            with self.db.transaction() as s:
                mine = Referral.referrer_id == actor.user_id
                total = s.execute(sa.select(sa.func.count()).where(mine)).scalar_one()
                rows = s.execute(
                    sa.select(Referral, Case)
                    .outerjoin(Case, Case.id == Referral.case_id)
                    .where(mine)
                    .order_by(Referral.received_at.desc(), Referral.id.desc())
                    .limit(limit)
                    .offset(offset)
                ).all()
                items = [self.describe(r, c, full=False) for r, c in rows]
                self.audit.record(
                    s, actor, action, target="referrals",
                    summary={"total": total, "listed": [i["id"] for i in items]},
                )  # fmt: skip
        except DomainError as exc:
            self.engine.refused(actor, action, exc, target="referrals")
            raise
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    def describe(self, row: Referral, case: Case | None, *, full: bool) -> dict:
        ref = self.policy.reference
        outcomes = {**ref.mash_outcomes, **ref.pathway_outcomes}
        status = "decided" if row.outcome else ("closed" if case and case.closed else "in_progress")
        out: dict[str, Any] = {
            "id": row.id,
            "reference": row.reference,
            "pathway": row.pathway,
            "received_at": row.received_at.isoformat(),
            "subject": {
                "given_name": row.subject.get("given_name"),
                "family_name": row.subject.get("family_name"),
            },
            "concerns": row.concerns,
            "status": status,
            "outcome": row.outcome,
            "outcome_label": outcomes.get(row.outcome or ""),
            "outcome_at": row.outcome_at.isoformat() if row.outcome_at else None,
            "feedback": row.feedback_to_referrer,
        }
        if full:
            out.update(
                case_id=row.case_id,
                state=case.state if case else None,
                person_id=row.person_id,
                subject=row.subject,
                summary=row.summary,
                immediate_danger=row.immediate_danger,
                consent=row.consent,
                consent_reason=row.consent_reason,
                details=row.details,
                referrer_id=row.referrer_id,
                agency_kind=row.agency_kind,
                is_child=row.is_child,
                repeat_of_referral_id=row.repeat_of_referral_id,
                possible_matches=row.possible_matches,
            )
        return out
