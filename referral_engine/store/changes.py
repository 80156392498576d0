"""Recorded changes that are not pathway events: the case store's record of them.

A pathway event moves a case through `Engine.fire`. Some changes to a case are not events
of its pathway, yet change what the case says: a merge re-points it to another person
record, and an undo puts it back. They are still changes of the case, so each one is
recorded the same way an event is (DESIGN.md "One writer"): the case's version goes up
(so a form opened before it is stale and gets a 409, not a silent overwrite), a history
entry says what it was before and after, and an audit row names the case and that version,
all in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from referral_engine.access.rules import Actor
from referral_engine.audit.log import AuditLog
from referral_engine.storage.models import Case, CaseHistory

# The changes recorded here, as history entries' `event`: a closed list, so a history
# entry names either an event of the case's pathway or one of these.
CHANGES = {
    "person_merged": "Person record merged",
    "person_unmerged": "Person record merge undone",
}


class CaseStore:
    def __init__(self, audit: AuditLog):
        self.audit = audit

    def record_change(
        self,
        s: Session,
        actor: Actor,
        case_id: int,
        change: str,
        *,
        before: dict[str, Any],
        after: dict[str, Any],
        at: datetime,
        summary: dict[str, Any] | None = None,
    ) -> int:
        """Apply `after` to the case's columns, bump its version, and record the change
        with `before` and `after` in its history and the audit log. Returns the new
        version."""
        if change not in CHANGES:
            raise ValueError(f"unknown recorded change {change!r}")
        row = s.execute(
            sa.select(Case.version, Case.state, Case.person_id).where(Case.id == case_id)
        ).one()
        version = row.version + 1
        s.execute(
            sa.update(Case)
            .where(Case.id == case_id)
            .values(**after, version=version, updated_at=at)
        )
        s.add(
            CaseHistory(
                case_id=case_id, version=version, event=change, from_state=row.state,
                to_state=row.state, actor_id=actor.user_id, actor_name=actor.display_name,
                at=at, data={"before": before, "after": after},
            )
        )  # fmt: skip
        s.flush()
        self.audit.record(
            s, actor, f"{actor.source}:case:{change}", target=f"case:{case_id}",
            case_id=case_id, person_id=after.get("person_id", row.person_id), at=at,
            summary={"version": version, **(summary or {})},
        )  # fmt: skip
        return version
