"""Merging two records of the same person, and undoing it.

Matching (people.py) never merges on its own: it flags possible duplicates, and a MASH
manager decides. A merge moves the cases of one record that the manager may see (in their
own right, not through a break-glass grant), with their referrals, onto the other, and
remembers exactly what it moved, so undoing it puts back those rows and no others. A case
the manager may not see (a Channel case, say) stays where it is and is never named in
the answer: a merge is not a way to learn what else is known about someone. Both records
must be visible to the manager (they see a case of each). Each moved case is a recorded
change (`CaseStore.record_change`: version, history with before and after, audit row),
and the merge and the undo are audited too.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.audit.log import AuditLog
from referral_engine.audit.operation import Operations
from referral_engine.clock import Clock
from referral_engine.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidData,
    NotFound,
)
from referral_engine.storage.db import Database
from referral_engine.storage.models import (
    Case,
    Person,
    PersonMerge,
    Referral,
)
from referral_engine.store.changes import CaseStore


class Merges:
    def __init__(
        self, db: Database, access: Access, clock: Clock, audit: AuditLog, store: CaseStore,
        operations: Operations,
    ):  # fmt: skip
        self.db, self.access, self.clock, self.audit = db, access, clock, audit
        self.store = store
        self.operations = operations

    def _move(
        self, s: Session, actor: Actor, cases: list[int], change: str, frm: int, to: int,
        merge_id: int,
    ) -> None:  # fmt: skip
        now = self.clock.now()
        for case_id in cases:
            self.store.record_change(
                s, actor, case_id, change, before={"person_id": frm},
                after={"person_id": to}, at=now, summary={"merge": merge_id},
            )  # fmt: skip

    def _visible_person(self, s: Session, actor: Actor, person_id: int) -> Person:
        person = s.get(Person, person_id)
        seen = (
            person is not None
            and s.execute(
                sa.select(Case.id)
                .where(Case.person_id == person_id, self.access.visible_cases(actor, glass=False))
                .limit(1)
            ).first()
        )
        if not seen:
            raise NotFound(f"person {person_id} not found")
        return person  # type: ignore[return-value]

    def merge(self, actor: Actor, from_id: int, into_id: int, reason: str) -> dict[str, Any]:
        action = f"{actor.source}:person:merge"

        def run(s: Session) -> Any:
            if not self.access.can(actor, "person:person:merge"):
                raise Forbidden("you may not merge person records")
            if from_id == into_id:
                raise InvalidData(FieldError("into", "is the same person"))
            if not reason.strip():
                raise InvalidData(FieldError("reason", "say why these are the same person"))
            source = self._visible_person(s, actor, from_id)
            target = self._visible_person(s, actor, into_id)
            if source.merged_into_id or target.merged_into_id:
                raise Conflict("one of these records is already merged into another")
            cases = list(
                s.execute(
                    sa.select(Case.id)
                    .where(
                        Case.person_id == from_id,
                        self.access.visible_cases(actor, glass=False),
                    )
                    .order_by(Case.id)
                ).scalars()
            )
            # A referral goes with the cases it opened, and only when all of them
            # move (onward cases share their referral).
            referrals = list(
                s.execute(
                    sa.select(Referral.id)
                    .where(Referral.person_id == from_id)
                    .where(
                        ~sa.exists().where(Case.referral_id == Referral.id, Case.id.not_in(cases))
                    )
                ).scalars()
            )
            s.execute(
                sa.update(Referral).where(Referral.id.in_(referrals)).values(person_id=into_id)
            )
            # The record is marked merged only when nothing of it is left behind;
            # otherwise it stays, for those who may see what remains.
            left = s.execute(
                sa.select(Case.id).where(Case.person_id == from_id, Case.id.not_in(cases))
            ).first()
            if left is None:
                source.merged_into_id = into_id
            record = PersonMerge(
                from_person_id=from_id, into_person_id=into_id, reason=reason.strip(),
                moved_cases=cases, moved_referrals=referrals, merged_at=self.clock.now(),
                merged_by_id=actor.user_id,
            )  # fmt: skip
            s.add_all([source, record])
            s.flush()
            self._move(s, actor, cases, "person_merged", from_id, into_id, record.id)
            self.audit.record(
                s, actor, action, target=f"person:{from_id}", person_id=into_id,
                summary={"merge": record.id, "from": from_id, "into": into_id,
                         "cases": cases, "referrals": referrals},
            )  # fmt: skip
            return self.describe(record)

        return self.operations.run(
            actor, action, run, target=f"person:{from_id}", person_id=from_id
        )

    def undo(self, actor: Actor, merge_id: int) -> dict[str, Any]:
        action = f"{actor.source}:person:unmerge"

        def run(s: Session) -> Any:
            if not self.access.can(actor, "person:person:merge"):
                raise Forbidden("you may not undo merges")
            record = s.get(PersonMerge, merge_id)
            if record is None:
                raise NotFound(f"merge {merge_id} not found")
            self._visible_person(s, actor, record.into_person_id)
            if record.undone_at is not None:
                raise Conflict(f"merge {merge_id} was already undone")
            back = list(
                s.execute(
                    sa.select(Case.id)
                    .where(
                        Case.id.in_(record.moved_cases),
                        Case.person_id == record.into_person_id,
                    )
                    .order_by(Case.id)
                ).scalars()
            )
            self._move(
                s, actor, back, "person_unmerged", record.into_person_id,
                record.from_person_id, merge_id,
            )  # fmt: skip
            s.execute(
                sa.update(Referral)
                .where(
                    Referral.id.in_(record.moved_referrals),
                    Referral.person_id == record.into_person_id,
                )
                .values(person_id=record.from_person_id)
            )
            source = s.get(Person, record.from_person_id)
            if source is not None:
                source.merged_into_id = None
                s.add(source)
            record.undone_at, record.undone_by_id = self.clock.now(), actor.user_id
            s.add(record)
            s.flush()
            self.audit.record(
                s, actor, action, target=f"person:{record.from_person_id}",
                person_id=record.from_person_id,
                summary={"merge": merge_id, "cases": record.moved_cases},
            )  # fmt: skip
            return self.describe(record)

        return self.operations.run(actor, action, run, target=f"merge:{merge_id}")

    @staticmethod
    def describe(record: PersonMerge) -> dict[str, Any]:
        return {
            "id": record.id,
            "from_person_id": record.from_person_id,
            "into_person_id": record.into_person_id,
            "reason": record.reason,
            "moved_cases": record.moved_cases,
            "moved_referrals": record.moved_referrals,
            "merged_at": record.merged_at.isoformat(),
            "undone_at": record.undone_at.isoformat() if record.undone_at else None,
        }
