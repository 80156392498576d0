"""Opening a record outside one's need-to-know with a reason ("break-glass"), and the
supervisor's review of each opening.

Some records are closed to most staff (Channel cases; MARAC cases not allocated to an
IDVA), yet in an emergency someone the policy trusts may need to read one. Refusing
outright would put a person at risk; opening silently would make need-to-know
meaningless. So the record is opened only for a stated reason, only for the time set in
policies/rules.yaml (`break_glass.minutes`), only for reading, and every opening waits on
a review page for a supervisor of that pathway (`<pathway>:break_glass:review`), who may
not review their own. The opening, each read made through it and each review are audited.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.audit.log import AuditLog
from referral_engine.audit.operation import Operations
from referral_engine.casework.cases import linked_cases
from referral_engine.clock import Clock
from referral_engine.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidData,
    NotFound,
)
from referral_engine.policies.policy import Policy
from referral_engine.storage.db import Database
from referral_engine.storage.models import AccessGrant, Case, User

MAX_REASON = 2000
MAX_PAGE = 200


class BreakGlass:
    def __init__(
        self,
        db: Database,
        access: Access,
        policy: Policy,
        clock: Clock,
        audit: AuditLog,
        operations: Operations,
    ):
        self.db, self.access, self.policy = db, access, policy
        self.clock, self.audit, self.operations = clock, audit, operations

    @property
    def minutes(self) -> int:
        return self.policy.rules.break_glass.minutes

    def _audited(self, actor: Actor, action: str, fn, **ids):
        return self.operations.run(actor, action, fn, **ids)

    # --- opening a record ----------------------------------------------------------------

    def open(self, actor: Actor, case_id: int, reason: str) -> dict[str, Any]:
        """Grant `actor` read access to one case for the policy's time, for `reason`.

        Only a case the actor reached through a link of their own (`Access.
        linked_to_visible`); any other id is 404, whether or not it exists."""
        action = f"{actor.source}:case:break_glass"

        def grant(s: Session) -> dict[str, Any]:
            case = s.get(Case, case_id)
            if case is None or not (
                self.access.can_see(actor, case)
                or (
                    self.access.may_break_glass(actor, case)
                    and self.access.linked_to_visible(s, actor, case)
                )
            ):
                raise NotFound(f"case {case_id} not found")
            return self._grant(s, actor, case, reason, action)

        return self._audited(actor, action, grant, case_id=case_id)

    def open_linked(self, actor: Actor, case_id: int, link: int, reason: str) -> dict[str, Any]:
        """Open, with a reason, the case behind link number `link` of a case the actor
        sees (`Cases.describe`'s `linked_cases`): how the case page offers it without
        ever naming the record before it is opened."""
        action = f"{actor.source}:case:break_glass"

        def grant(s: Session) -> dict[str, Any]:
            here = s.get(Case, case_id)
            if here is None or not self.access.can_see(replace(actor, glass=frozenset()), here):
                raise NotFound(f"case {case_id} not found")
            links = linked_cases(s, here)
            if not 0 <= link < len(links) or not self.access.may_break_glass(actor, links[link]):
                raise NotFound(f"link {link} of case {case_id} not found")
            return self._grant(s, actor, links[link], reason, action)

        return self._audited(actor, action, grant, case_id=case_id)

    def _grant(
        self, s: Session, actor: Actor, case: Case, reason: str, action: str
    ) -> dict[str, Any]:
        reason = (reason or "").strip()
        if not self.access.may_break_glass(actor, case):
            raise Conflict("you may already see this case: no reason is needed")
        least = self.policy.rules.break_glass.reason_min_length
        if len(reason) < least:
            raise InvalidData(
                FieldError("reason", f"say why you need this record ({least}+ characters)")
            )
        if len(reason) > MAX_REASON:
            raise InvalidData(FieldError("reason", f"must be at most {MAX_REASON} characters"))
        now = self.clock.now()
        row = AccessGrant(
            user_id=actor.user_id,
            case_id=case.id,
            pathway=case.pathway,
            reason=reason,
            granted_at=now,
            expires_at=now + timedelta(minutes=self.minutes),
        )
        s.add(row)
        s.flush()
        self.audit.record(
            s, actor, action, target=f"case:{case.id}", case_id=case.id,
            person_id=case.person_id,
            # The reason stays in the grant's row (retention may erase it); the audit
            # row names the grant, so the chain never holds free text.
            summary={"grant": row.id, "pathway": case.pathway,
                     "expires_at": row.expires_at.isoformat()},
        )  # fmt: skip
        return _grant(row, actor.display_name, None, now)

    # --- reviewing openings --------------------------------------------------------------

    def review_pathways(self, actor: Actor) -> list[str]:
        """The pathways whose openings `actor` reviews."""
        return [
            p
            for p in sorted(self.access.pathways)
            if self.access.can(actor, f"{p}:break_glass:review")
        ]

    def queue(
        self, actor: Actor, *, reviewed: bool = False, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        """Openings of the pathways the reviewer supervises: waiting for review (oldest
        first), or already reviewed (newest first)."""
        action = f"{actor.source}:break_glass:list"

        def read(s: Session) -> dict[str, Any]:
            pathways = self.review_pathways(actor)
            if not pathways:
                raise Forbidden("you do not review records opened with a reason")
            if not 1 <= limit <= MAX_PAGE:
                raise InvalidData(FieldError("limit", f"must be between 1 and {MAX_PAGE}"))
            if offset < 0:
                raise InvalidData(FieldError("offset", "must not be negative"))
            where = [
                AccessGrant.pathway.in_(pathways),
                AccessGrant.reviewed_at.is_not(None)
                if reviewed
                else AccessGrant.reviewed_at.is_(None),
            ]
            order = (
                (AccessGrant.reviewed_at.desc(), AccessGrant.id.desc())
                if reviewed
                else (AccessGrant.granted_at, AccessGrant.id)
            )
            total = s.execute(
                sa.select(sa.func.count()).select_from(AccessGrant).where(*where)
            ).scalar()
            rows = list(
                s.execute(
                    sa.select(AccessGrant)
                    .where(*where)
                    .order_by(*order)
                    .limit(limit)
                    .offset(offset)
                ).scalars()
            )
            names = _names(s, {g.user_id for g in rows} | {g.reviewed_by_id for g in rows})
            now = self.clock.now()
            items = [
                _grant(g, names.get(g.user_id, "?"), names.get(g.reviewed_by_id or -1), now)
                for g in rows
            ]
            self.audit.record(
                s, actor, action, target="break_glass",
                summary={"reviewed": reviewed, "total": total,
                         "listed": [i["id"] for i in items]},
            )  # fmt: skip
            return {"items": items, "total": total, "limit": limit, "offset": offset,
                    "pathways": pathways}  # fmt: skip

        return self._audited(actor, action, read, target="break_glass")

    def review(
        self, actor: Actor, grant_id: int, note: str, *, justified: bool = True
    ) -> dict[str, Any]:
        """Mark one opening reviewed, with the reviewer's note. An opening the reviewer
        finds not justified ends there and then, if it is still open."""
        action = f"{actor.source}:break_glass:review"
        note = (note or "").strip()

        def mark(s: Session) -> dict[str, Any]:
            row = s.get(AccessGrant, grant_id)
            if row is None or not self.access.can(actor, f"{row.pathway}:break_glass:review"):
                if not self.review_pathways(actor):
                    raise Forbidden("you do not review records opened with a reason")
                raise NotFound(f"access grant {grant_id} not found")
            if row.user_id == actor.user_id:
                raise Forbidden("you cannot review your own opening of a record")
            if row.reviewed_at is not None:
                raise Conflict("this opening has already been reviewed")
            if not note:
                raise InvalidData(FieldError("note", "say what you found"))
            if len(note) > MAX_REASON:
                raise InvalidData(FieldError("note", f"must be at most {MAX_REASON} characters"))
            now = self.clock.now()
            row.reviewed_at = now
            row.reviewed_by_id = actor.user_id
            row.review_note = note
            ended = not justified and row.expires_at > now
            if ended:
                row.expires_at = now
            s.add(row)
            s.flush()
            self.audit.record(
                s, actor, action, target=f"break_glass:{grant_id}", case_id=row.case_id,
                summary={"grant": grant_id, "user_id": row.user_id, "noted": bool(note),
                         "justified": justified, "ended": ended},
            )  # fmt: skip
            names = _names(s, {row.user_id})
            return _grant(row, names.get(row.user_id, "?"), actor.display_name, self.clock.now())

        return self._audited(actor, action, mark, target=f"break_glass:{grant_id}")


def _names(s: Session, ids: set[int | None]) -> dict[int, str]:
    wanted = sorted(i for i in ids if i is not None)
    rows = s.execute(sa.select(User.id, User.display_name).where(User.id.in_(wanted))).all()
    return {i: n for i, n in rows}


def _grant(g: AccessGrant, user: str, reviewer: str | None, now: datetime) -> dict[str, Any]:
    return {
        "id": g.id,
        "case_id": g.case_id,
        "pathway": g.pathway,
        "user_id": g.user_id,
        "user": user,
        "reason": g.reason,
        "granted_at": g.granted_at.isoformat(),
        "expires_at": g.expires_at.isoformat(),
        "reviewed_at": g.reviewed_at.isoformat() if g.reviewed_at else None,
        "reviewed_by": reviewer,
        "review_note": g.review_note,
        "active": g.expires_at > now,
    }
