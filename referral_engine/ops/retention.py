"""Retention: personal data of closed cases is erased when its period is over.

`policies/retention.yaml` sets a period per pathway and per closed (terminal) state,
counted from the day the case closed. `retention apply` erases, for each case past its
period and under no legal hold: the referral's subject, summary, details and consent
reason; the free text of the case's event data, attributes and notifications; and the
person record (names, date of birth, gender) once none of that person's cases is still
kept. What is left (states, dates, vocabulary codes, ids) keeps the partnership's
figures right and the history readable as "what happened, when, by whom".

The audit chain is untouched: audit rows hold identifiers and vocabulary codes, never a
subject's name, date of birth or the free text of a referral (tests/test_retention.py
checks that after a case's whole life), so there is nothing in them to erase and the
chain verifies before and after. Each erasure leaves a tombstone row (`erasure`) and an
audit row saying what was erased, when, and under which rule.

A legal hold (`retention hold --case ID --reason ...`) keeps a case's data past its
period until released; placing and releasing are audited (the reason is kept in the
hold's row, not in the audit row, because a reason may name someone).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session

from referral_engine.access.rules import Actor
from referral_engine.audit.log import AuditLog
from referral_engine.clock import Clock
from referral_engine.errors import (
    DefinitionError,
    FieldError,
    InvalidData,
    NotFound,
)
from referral_engine.pathways.definitions import Workflows
from referral_engine.policies.policy import Policy
from referral_engine.policies.yamlfile import line_for, parse_model
from referral_engine.storage.db import Database
from referral_engine.storage.models import (
    Case,
    CaseHistory,
    Erasure,
    LegalHold,
    Outbox,
    Person,
    PersonMerge,
    Referral,
)

log = logging.getLogger(__name__)

ERASED = "[erased]"
DEFAULT = "default"
# Outbox payload keys that never hold personal data (a reference, a deadline's name).
PAYLOAD_KEEP = frozenset({"reference", "deadline", "label", "due_at", "outcome"})
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.+\-Z]*)?$")


class Period(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    years: int | None = Field(default=None, ge=0)
    months: int | None = Field(default=None, ge=0)
    days: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _exactly_one(self):
        if sum(v is not None for v in (self.years, self.months, self.days)) != 1:
            raise ValueError("give exactly one of years, months, days")
        return self

    def delta(self) -> relativedelta:
        return relativedelta(years=self.years or 0, months=self.months or 0, days=self.days or 0)

    def describe(self) -> str:
        for unit in ("years", "months", "days"):
            value = getattr(self, unit)
            if value is not None:
                return f"{value} {unit}"
        raise AssertionError("validated: one unit is set")


class RetentionFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # For a pathway with no entry of its own (a new pathway added with YAML alone).
    default_period: Period | None = None
    # pathway -> closed state (or "default") -> period after closing
    retention: dict[str, dict[str, Period]]


@dataclass(frozen=True)
class RetentionPolicy:
    periods: dict[str, dict[str, Period]]

    def rule_for(self, pathway: str, state: str) -> tuple[Period, str]:
        rules = self.periods[pathway]
        key = state if state in rules else DEFAULT
        period = rules[key]
        return period, f"{pathway}.{key}: {period.describe()} after closing"


def load_retention(directory: Path, workflows: Workflows) -> RetentionPolicy:
    """Load and check policies/retention.yaml against the pathways: every installed
    pathway needs a period for each of its closed states (or a default), and names only
    states that are closed states of that pathway."""
    path = directory / "retention.yaml"
    parsed, lines = parse_model(RetentionFile, path)
    periods = dict(parsed.retention)
    for pathway in sorted(workflows.pathways):
        if pathway not in periods and parsed.default_period is not None:
            periods[pathway] = {DEFAULT: parsed.default_period}
        elif pathway not in periods:
            raise DefinitionError(
                str(path), line_for(lines, ("retention",)), f"retention.{pathway}",
                f"pathway {pathway!r} has no retention period (and there is no "
                "default_period): its records would be kept forever",
            )  # fmt: skip
    for pathway, rules in parsed.retention.items():
        if pathway not in workflows.pathways:
            # The partnership's schedule may cover pathways this installation has not set
            # up (a MASH-only council); they have no cases to erase.
            log.info("%s: retention.%s: no such pathway is installed", path, pathway)
            continue
        states = workflows.get(pathway).definition.states
        terminal = sorted(s for s, d in states.items() if d.terminal)
        for state in rules:
            if state != DEFAULT and state not in terminal:
                raise DefinitionError(
                    str(path), line_for(lines, ("retention", pathway, state)),
                    f"retention.{pathway}.{state}",
                    f"not a closed state of {pathway} (closed states: {', '.join(terminal)})",
                )  # fmt: skip
        missing = [s for s in terminal if s not in rules]
        if missing and DEFAULT not in rules:
            raise DefinitionError(
                str(path), line_for(lines, ("retention", pathway)), f"retention.{pathway}",
                f"no period for {', '.join(missing)}: give them one or a default",
            )  # fmt: skip
    return RetentionPolicy(periods)


@dataclass
class RetentionResult:
    erased: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    people: list[int] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "erased_cases": self.erased,
            "held_cases": self.held,
            "erased_people": self.people,
            "dry_run": self.dry_run,
        }


class Retention:
    def __init__(
        self,
        db: Database,
        workflows: Workflows,
        policy: Policy,
        rules: RetentionPolicy,
        clock: Clock,
        audit: AuditLog,
    ):
        self.db, self.workflows, self.policy, self.rules = db, workflows, policy, rules
        self.clock, self.audit = clock, audit

    # --- what is kept -------------------------------------------------------------------

    def codes(self) -> frozenset[str]:
        """Strings that are vocabulary, not anybody's words: kept when text is erased."""
        out: set[str] = set()
        for vocab in self.policy.reference.model_dump().values():
            out.update(vocab)
        for wf in self.workflows.current.values():
            out.update(wf.definition.states)
            out.update(wf.definition.events)
            for schema in wf.schemas.values():
                for choices in schema.choices.values():
                    out.update(choices)
        return frozenset(out)

    def scrub(self, value: Any, codes: frozenset[str], counter: list[int]) -> Any:
        """`value` with every string that is not a code or a date replaced by [erased]."""
        if isinstance(value, str):
            if value in codes or value == ERASED or ISO_DATE.match(value):
                return value
            counter[0] += 1
            return ERASED
        if isinstance(value, list):
            return [self.scrub(v, codes, counter) for v in value]
        if isinstance(value, dict):
            return {k: self.scrub(v, codes, counter) for k, v in value.items()}
        return value

    def due(self, s: Session, now: datetime) -> tuple[list[tuple[Case, str]], list[int]]:
        """Closed cases past their period and not yet erased, with the rule that applies;
        and the ids of those kept only by a legal hold."""
        erased = sa.select(Erasure.case_id)
        held = set(
            s.execute(sa.select(LegalHold.case_id).where(LegalHold.released_at.is_(None))).scalars()
        )
        cases = s.execute(
            sa.select(Case)
            .where(Case.closed.is_(True), Case.closed_at.is_not(None), Case.id.not_in(erased))
            .order_by(Case.id)
        ).scalars()
        due, kept = [], []
        for case in cases:
            if case.pathway not in self.rules.periods:
                continue
            period, rule = self.rules.rule_for(case.pathway, case.state)
            if case.closed_at + period.delta() > now:
                continue
            if case.id in held:
                kept.append(case.id)
            else:
                due.append((case, rule))
        return due, kept

    # --- erasing ------------------------------------------------------------------------

    def apply(
        self, actor: Actor, now: datetime | None = None, *, dry_run: bool = False
    ) -> RetentionResult:
        """Erase every case that is due, one transaction per case (a failure part way
        leaves each case either wholly erased, with its tombstone, or untouched)."""
        now = now or self.clock.now()
        result = RetentionResult(dry_run=dry_run)
        with self.db.reading() as s:
            due, result.held = self.due(s, now)
            due_ids = [(c.id, rule) for c, rule in due]
        if dry_run:
            result.erased = [i for i, _ in due_ids]
            return result
        codes = self.codes()
        for case_id, rule in due_ids:
            with self.db.transaction() as s:
                person = self._erase_case(s, actor, case_id, rule, now, codes)
                if person is not None:
                    result.people.append(person)
            result.erased.append(case_id)
        return result

    def _erase_case(
        self, s: Session, actor: Actor, case_id: int, rule: str, now: datetime,
        codes: frozenset[str],
    ) -> int | None:  # fmt: skip
        case = s.get(Case, case_id, with_for_update=True)
        assert case is not None
        if s.execute(sa.select(Erasure.id).where(Erasure.case_id == case_id)).first():
            return None  # another run erased it first
        counts: dict[str, int] = {}

        def count(name: str, n: int) -> None:
            if n:
                counts[name] = counts.get(name, 0) + n

        def scrubbed(row: Any, column: str, keep: frozenset[str] = frozenset()) -> None:
            """Scrub one JSON column of a row (top-level keys in `keep` as they are)."""
            c = [0]
            value = {
                k: (v if k in keep else self.scrub(v, codes, c))
                for k, v in (getattr(row, column) or {}).items()
            }
            if c[0]:
                setattr(row, column, value)
                s.add(row)
            count(f"{type(row).__tablename__}.{column}", c[0])

        for h in s.execute(sa.select(CaseHistory).where(CaseHistory.case_id == case_id)).scalars():
            scrubbed(h, "data")
        scrubbed(case, "attributes")
        for row in s.execute(sa.select(Outbox).where(Outbox.case_id == case_id)).scalars():
            scrubbed(row, "payload", PAYLOAD_KEEP)
        if case.referral_id is not None and not self._still_kept(
            s, Case.referral_id == case.referral_id, case_id
        ):  # onward cases share their referral: it goes with the last of them
            count("referral", self._erase_referral(s, case.referral_id))
        person_erased = False
        if case.person_id is not None:
            person_erased = self._erase_person_if_done(s, case.person_id, case_id, counts)
        tombstone = Erasure(
            case_id=case_id, pathway=case.pathway, closed_state=case.state,
            closed_at=case.closed_at, rule=rule, person_id=case.person_id,
            person_erased=person_erased, erased=counts, erased_at=now,
            erased_by=actor.username,
        )  # fmt: skip
        s.add(tombstone)
        s.flush()
        self.audit.record(
            s, actor, f"{actor.source}:retention:erase", target=f"case:{case_id}",
            case_id=case_id, person_id=case.person_id, at=now,
            summary={"rule": rule, "erased": counts, "person_erased": person_erased,
                     "tombstone": tombstone.id},
        )  # fmt: skip
        return case.person_id if person_erased else None

    @staticmethod
    def _still_kept(s: Session, which: Any, erasing: int) -> int:
        """How many cases matching `which`, besides `erasing`, are not erased."""
        return s.execute(
            sa.select(sa.func.count())
            .select_from(Case)
            .where(which, Case.id != erasing, Case.id.not_in(sa.select(Erasure.case_id)))
        ).scalar_one()

    def _erase_referral(self, s: Session, referral_id: int) -> int:
        ref = s.get(Referral, referral_id)
        if ref is None or ref.summary == ERASED:
            return 0
        erased = 0
        for name in ("given_name", "family_name", "date_of_birth", "address", "postcode"):
            erased += bool(ref.subject.get(name))
        ref.subject = {"erased": True}
        ref.summary = ERASED
        ref.consent_reason = None
        ref.details = {}
        ref.feedback_to_referrer = None
        ref.possible_matches = []
        s.add(ref)
        return erased + 1

    def _erase_person_if_done(
        self, s: Session, person_id: int, erasing: int, counts: dict[str, int]
    ) -> bool:
        """Erase the person record (and records merged into it) once every case of theirs
        is erased; a person with a case still kept keeps their name."""
        ids = {person_id} | set(
            s.execute(sa.select(Person.id).where(Person.merged_into_id == person_id)).scalars()
        )
        erased_cases = sa.select(Erasure.case_id)
        kept = self._still_kept(s, Case.person_id.in_(ids), erasing)
        kept_referrals = s.execute(
            sa.select(sa.func.count())
            .select_from(Referral)
            .where(
                Referral.person_id.in_(ids),
                Referral.case_id != erasing,
                Referral.case_id.not_in(erased_cases),
            )
        ).scalar_one()
        if kept or kept_referrals:
            return False
        for person in s.execute(sa.select(Person).where(Person.id.in_(ids))).scalars():
            if person.given_name == ERASED:
                continue
            person.given_name = person.family_name = ERASED
            person.given_key = person.family_key = person.family_phonetic = None
            person.date_of_birth = None
            person.estimated_age = None
            person.gender = None
            s.add(person)
            counts["person"] = counts.get("person", 0) + 1
        for merge in s.execute(
            sa.select(PersonMerge).where(
                sa.or_(PersonMerge.from_person_id.in_(ids), PersonMerge.into_person_id.in_(ids))
            )
        ).scalars():
            merge.reason = ERASED
            s.add(merge)
        return True

    # --- legal holds --------------------------------------------------------------------

    def hold(self, actor: Actor, case_id: int, reason: str) -> int:
        reason = (reason or "").strip()
        if not reason:
            raise InvalidData(FieldError("reason", "say why the case is held"))
        with self.db.transaction() as s:
            if s.get(Case, case_id) is None:
                raise NotFound(f"no case {case_id}")
            if s.execute(sa.select(Erasure.id).where(Erasure.case_id == case_id)).first():
                raise InvalidData(FieldError("case", f"case {case_id} was already erased"))
            hold = LegalHold(
                case_id=case_id, reason=reason, placed_at=self.clock.now(),
                placed_by=actor.username,
            )  # fmt: skip
            s.add(hold)
            s.flush()
            self.audit.record(
                s, actor, f"{actor.source}:retention:hold", target=f"case:{case_id}",
                case_id=case_id, summary={"hold": hold.id},
            )  # fmt: skip
            assert hold.id is not None
            return hold.id

    def release(self, actor: Actor, case_id: int, reason: str) -> list[int]:
        reason = (reason or "").strip()
        if not reason:
            raise InvalidData(FieldError("reason", "say why the hold is released"))
        with self.db.transaction() as s:
            holds = list(
                s.execute(
                    sa.select(LegalHold).where(
                        LegalHold.case_id == case_id, LegalHold.released_at.is_(None)
                    )
                ).scalars()
            )
            if not holds:
                raise NotFound(f"case {case_id} has no legal hold in force")
            for hold in holds:
                hold.released_at = self.clock.now()
                hold.released_by = actor.username
                hold.release_reason = reason
                s.add(hold)
            ids = [h.id for h in holds if h.id is not None]
            self.audit.record(
                s, actor, f"{actor.source}:retention:release", target=f"case:{case_id}",
                case_id=case_id, summary={"holds": ids},
            )  # fmt: skip
            return ids
