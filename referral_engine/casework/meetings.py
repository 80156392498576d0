"""MARAC and Channel meetings: setting them up, and the agenda each one works from.

A case is put on a meeting only by the engine (the `list` / `list_for_panel` events);
this module creates meetings and reads agendas. The agenda is built from the cases
listed, each with its repeat flag, DASH score and the action plan from earlier hearings,
and carries over the still-open actions of cases heard at earlier meetings. Everything
is read through `Access.visible_cases`, so an IDVA sees only their own cases on it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.audit.log import AuditLog
from referral_engine.audit.operation import Operations
from referral_engine.clock import LONDON, Clock
from referral_engine.errors import (
    FieldError,
    Forbidden,
    InvalidData,
    NotFound,
)
from referral_engine.pathways.definitions import Workflows
from referral_engine.storage.db import Database
from referral_engine.storage.models import (
    Case,
    Meeting,
    MeetingCase,
    Person,
    User,
)

MAX_CAPACITY = 500


class Meetings:
    def __init__(
        self,
        db: Database,
        access: Access,
        workflows: Workflows,
        clock: Clock,
        audit: AuditLog,
        operations: Operations,
    ):
        self.db, self.access, self.workflows = db, access, workflows
        self.clock, self.audit, self.operations = clock, audit, operations

    def pathways_with_meetings(self) -> list[str]:
        return sorted(
            wf.pathway
            for wf in self.workflows.current.values()
            if any(schema.meetings for schema in wf.schemas.values())
        )

    def _guarded(self, actor: Actor, action: str, target: str, fn):
        return self.operations.run(actor, action, fn, target=target)

    def create(self, actor: Actor, pathway: str, day: date, capacity: int) -> dict[str, Any]:
        action = f"{actor.source}:meeting:create"

        def make(s: Session) -> dict[str, Any]:
            if pathway not in self.pathways_with_meetings():
                raise InvalidData(
                    FieldError(
                        "pathway",
                        f"meetings are for {', '.join(self.pathways_with_meetings())}",
                    )
                )
            if not self.access.can(actor, f"{pathway}:meeting:manage"):
                raise Forbidden(f"you may not set up {pathway} meetings")
            errors = []
            if day < self.clock.now().astimezone(LONDON).date():
                errors.append(FieldError("date", "is in the past"))
            if not 1 <= capacity <= MAX_CAPACITY:
                errors.append(FieldError("capacity", f"must be 1 to {MAX_CAPACITY}"))
            if errors:
                raise InvalidData(errors)
            meeting = Meeting(
                pathway=pathway, date=day, capacity=capacity, created_by_id=actor.user_id
            )
            s.add(meeting)
            s.flush()
            self.audit.record(
                s, actor, action, target=f"meeting:{meeting.id}",
                summary={"pathway": pathway, "date": day.isoformat(), "capacity": capacity},
            )  # fmt: skip
            return self._describe(meeting, listed=0)

        return self._guarded(actor, action, "meeting", make)

    def list(self, actor: Actor, pathway: str | None = None) -> dict[str, Any]:
        action = f"{actor.source}:meeting:list"

        def read(s: Session) -> dict[str, Any]:
            allowed = [
                p for p in self.pathways_with_meetings() if self.access.can(actor, f"{p}:case:view")
            ]
            if pathway is not None:
                if pathway not in allowed:
                    raise NotFound(f"no {pathway} meetings")
                allowed = [pathway]
            # Counted through the caller's need-to-know: an IDVA hears of the cases on the
            # agenda they may open, never of the others (not even how many).
            listed = (
                sa.select(MeetingCase.meeting_id, sa.func.count().label("n"))
                .join(Case, Case.id == MeetingCase.case_id)
                .where(self.access.visible_cases(actor, glass=False))
                .group_by(MeetingCase.meeting_id)
                .subquery()
            )
            rows = s.execute(
                sa.select(Meeting, sa.func.coalesce(listed.c.n, 0))
                .outerjoin(listed, listed.c.meeting_id == Meeting.id)
                .where(Meeting.pathway.in_(allowed))
                .order_by(Meeting.date.desc(), Meeting.id.desc())
                .limit(200)
            ).all()
            items = [self._describe(m, listed=n) for m, n in rows]
            self.audit.record(
                s, actor, action, target="meetings",
                summary={"pathway": pathway, "listed": [i["id"] for i in items]},
            )  # fmt: skip
            return {"items": items}

        return self._guarded(actor, action, "meetings", read)

    def agenda(self, actor: Actor, meeting_id: int) -> dict[str, Any]:
        action = f"{actor.source}:meeting:view"

        def read(s: Session) -> dict[str, Any]:
            meeting = s.get(Meeting, meeting_id)
            if meeting is None or not self.access.can(actor, f"{meeting.pathway}:case:view"):
                raise NotFound(f"meeting {meeting_id} not found")
            visible = self.access.visible_cases(actor, glass=False)
            listed = s.execute(
                sa.select(Case, Person)
                .join(MeetingCase, MeetingCase.case_id == Case.id)
                .outerjoin(Person, Person.id == Case.person_id)
                .where(MeetingCase.meeting_id == meeting_id, visible)
                .order_by(MeetingCase.listed_at, Case.id)
            ).all()
            listed_ids = {c.id for c, _ in listed}
            earlier = {
                m.id
                for m in s.execute(
                    sa.select(Meeting).where(
                        Meeting.pathway == meeting.pathway, Meeting.date < meeting.date
                    )
                ).scalars()
            }
            candidates = s.execute(
                sa.select(Case, Person)
                .outerjoin(Person, Person.id == Case.person_id)
                .where(Case.pathway == meeting.pathway, Case.closed.is_(False), visible)
            ).all()
            carried = [
                (c, p)
                for c, p in candidates
                if c.id not in listed_ids
                and any(
                    a["status"] == "open" and a.get("meeting_id") in earlier
                    for a in c.attributes.get("actions") or []
                )
            ]
            out = self._describe(meeting, listed=len(listed))
            earlier_plans = self._earlier_plans(s, actor, [c for c, _ in listed], meeting.pathway)
            names = dict(
                s.execute(
                    sa.select(User.id, User.display_name).where(
                        User.id.in_({c.allocated_to_id for c, _ in listed if c.allocated_to_id})
                    )
                ).all()
            )
            out["cases"] = []
            for c, p in listed:
                item = self._agenda_item(c, p, meeting_id)
                item["earlier_cases"] = earlier_plans.get(c.id, [])
                item["allocated_to_name"] = names.get(c.allocated_to_id)
                # The plan from before: this case's earlier hearings, then a repeat's
                # earlier cases.
                item["previous_actions"] += [a for e in item["earlier_cases"] for a in e["actions"]]
                out["cases"].append(item)
            out["carried_over"] = [self._agenda_item(c, p, meeting_id) for c, p in carried]
            self.audit.record(
                s, actor, action, target=f"meeting:{meeting_id}",
                summary={"cases": sorted(listed_ids), "carried_over": [c.id for c, _ in carried]},
            )  # fmt: skip
            return out

        return self._guarded(actor, action, f"meeting:{meeting_id}", read)

    def _earlier_plans(
        self, s: Session, actor: Actor, cases: list[Case], pathway: str
    ) -> dict[int, list[dict[str, Any]]]:
        """For a repeat, the action plans of the person's earlier cases on this pathway."""
        out: dict[int, list[dict[str, Any]]] = {}
        for case in cases:
            if case.person_id is None:
                continue
            earlier = s.execute(
                sa.select(Case)
                .where(
                    Case.person_id == case.person_id,
                    Case.pathway == pathway,
                    Case.id != case.id,
                    sa.or_(
                        Case.opened_at < case.opened_at,
                        sa.and_(Case.opened_at == case.opened_at, Case.id < case.id),
                    ),
                    self.access.visible_cases(actor, glass=False),
                )
                .order_by(Case.opened_at.desc())
            ).scalars()
            out[case.id] = [
                {
                    "case_id": e.id,
                    "state": e.state,
                    "opened_at": e.opened_at.isoformat(),
                    "actions": (e.attributes or {}).get("actions") or [],
                }
                for e in earlier
            ]
        return out

    @staticmethod
    def _agenda_item(case: Case, person: Person | None, meeting_id: int) -> dict[str, Any]:
        attrs = case.attributes or {}
        actions = attrs.get("actions") or []
        dash = attrs.get("dash") or {}
        return {
            "case_id": case.id,
            "state": case.state,
            "version": case.version,
            "person": {
                "id": person.id,
                "given_name": person.given_name,
                "family_name": person.family_name,
            }
            if person
            else None,
            "repeat": "repeat" in (attrs.get("criteria") or []),
            "criteria": attrs.get("criteria") or [],
            "dash_score": dash.get("score"),
            "allocated_to_id": case.allocated_to_id,
            "actions": actions,
            "vaf": (attrs.get("vaf") or [None])[-1],
            "previous_actions": [a for a in actions if a.get("meeting_id") != meeting_id],
            "open_actions": [a for a in actions if a["status"] == "open"],
            "risks": attrs.get("risks"),
        }

    @staticmethod
    def _describe(m: Meeting, *, listed: int) -> dict[str, Any]:
        return {
            "id": m.id,
            "pathway": m.pathway,
            "date": m.date.isoformat(),
            "capacity": m.capacity,
            "listed": listed,
            "room": max(m.capacity - listed, 0),
        }
