"""The one path for change: every change of a case's state goes through `Engine.fire`.

In one transaction: authorise (the actor may see the case and holds the event's
permission), check the expected version and that the event is valid from the current
state, validate the data, let the pathway's machine pick the next state and check its
guards, plan the effects (pure), then write: the case row (state, version + 1, guarded by
`WHERE version = expected` so a concurrent change makes this one a 409), deadlines,
linked cases, the outbox, history and the audit row. Any failure rolls all of it back;
the refusal itself is then audited in a transaction of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session

from referral_engine.access.rules import SYSTEM, Access, Actor
from referral_engine.audit.log import AuditLog
from referral_engine.audit.operation import Operations
from referral_engine.audit.vocabulary import event_action
from referral_engine.clock import LONDON, Clock
from referral_engine.engine import intake
from referral_engine.engine.intake import Opening
from referral_engine.errors import (
    DomainError,
    FieldError,
    Forbidden,
    InvalidData,
    NotValidNow,
    StaleVersion,
)
from referral_engine.notifications import Outbox
from referral_engine.pathways.definitions import Workflow, Workflows
from referral_engine.pathways.effects import (
    Anonymise,
    AppendAttribute,
    Assign,
    LinkPerson,
    ListAtMeeting,
    MeetDeadline,
    Notify,
    Op,
    OpenCase,
    PauseClock,
    ReferChildren,
    ResumeClock,
    SetAttributes,
    SetDeadline,
    SetRag,
    TellReferrer,
    plan_effects,
)
from referral_engine.pathways.guards import failing_case_guard
from referral_engine.pathways.snapshot import Context, DeadlineView, Snapshot
from referral_engine.policies.policy import Policy
from referral_engine.storage.db import (
    Database,
    Statement,
    as_connection,
    orm_session,
)
from referral_engine.storage.models import (
    Case,
    CaseHistory,
    Deadline,
    Meeting,
    MeetingCase,
    Person,
    Referral,
    User,
    WorkflowVersion,
)

_case = Case.__table__
_history = CaseHistory.__table__
_deadline = Deadline.__table__
_referral = Referral.__table__
_meeting = Meeting.__table__
_meeting_case = MeetingCase.__table__

OPEN_DEADLINE = ("open", "breached")
LIVE_DEADLINE = (*OPEN_DEADLINE, "paused")

# The statements every fire runs, compiled once (see `Statement`): the case with its
# referral in one read, its live deadlines, the guarded case update, the history row.
_REFERRAL_COLUMNS = ("received_at", "subject", "is_child", "referrer_id", "details", "agency_kind")
_READ_CASE = Statement(
    sa.select(_case, *(_referral.c[n].label(f"ref_{n}") for n in _REFERRAL_COLUMNS))
    .select_from(_case.outerjoin(_referral, _referral.c.id == _case.c.referral_id))
    .where(_case.c.id == sa.bindparam("case_id"))
)
_READ_DEADLINES = Statement(
    sa.select(_deadline).where(
        _deadline.c.case_id == sa.bindparam("case_id"),
        sa.or_(*(_deadline.c.status == s for s in LIVE_DEADLINE)),
    )
)
# Indexed columns are set only when their value changes: SQLite rewrites an index entry
# (and so writes its page to the WAL) for every indexed column named in SET, changed or not.
_INDEXED = ("priority", "due_at", "assigned_to_id", "allocated_to_id", "closed", "closed_at")
_UPDATE_CASE: dict[tuple[str, ...], Statement] = {}


def _update_case(indexed: tuple[str, ...]) -> Statement:
    stmt = _UPDATE_CASE.get(indexed)
    if stmt is None:
        columns = ("state", "version", "updated_at", "attributes", "rag", *indexed)
        stmt = _UPDATE_CASE[indexed] = Statement(
            _case.update()
            .where(
                _case.c.id == sa.bindparam("case_id"), _case.c.version == sa.bindparam("expected")
            )
            .values({c: sa.bindparam(c) for c in columns})
        )
    return stmt


_INSERT_HISTORY = Statement(
    _history.insert().values(
        {c: sa.bindparam(c) for c in ("case_id", "version", "event", "from_state", "to_state",
                                      "actor_id", "actor_name", "at", "data")}
    )
)  # fmt: skip


# What effects write, compiled once too. An open deadline is `open` or `breached`.
_is_open = sa.or_(*(_deadline.c.status == s for s in OPEN_DEADLINE))
_open_named = sa.and_(
    _deadline.c.case_id == sa.bindparam("case_id"),
    _deadline.c.name == sa.bindparam("dname"),
    _is_open,
)
_RESET_DEADLINE = Statement(
    _deadline.update()
    .where(_open_named)
    .values(due_at=sa.bindparam("due_at"), label=sa.bindparam("label"),
            on_due=sa.bindparam("on_due"), warned_at=None)
)  # fmt: skip
_INSERT_DEADLINE = Statement(
    _deadline.insert().values(
        {c: sa.bindparam(c) for c in ("case_id", "name", "label", "due_at", "set_at", "status",
                                      "on_due")}
    )
)  # fmt: skip
_MEET_DEADLINE = Statement(
    _deadline.update()
    .where(_open_named)
    .values(status="met", met_at=sa.bindparam("met_at"), late_reason=sa.bindparam("late_reason"))
)  # fmt: skip
_TELL_REFERRER = Statement(
    _referral.update()
    .where(_referral.c.id == sa.bindparam("referral_id"),
           _referral.c.case_id == sa.bindparam("case_id"))
    .values(outcome=sa.bindparam("outcome"), outcome_at=sa.bindparam("outcome_at"),
            feedback_to_referrer=sa.bindparam("feedback"))
)  # fmt: skip
_CANCEL_OPEN = Statement(
    _deadline.update()
    .where(_deadline.c.case_id == sa.bindparam("case_id"), _is_open)
    .values(status="cancelled")
)
_LIST_AT_MEETING = Statement(
    _meeting_case.insert().values(
        {c: sa.bindparam(c) for c in ("meeting_id", "case_id", "listed_at")}
    )
)


@dataclass(frozen=True)
class Fired:
    case_id: int
    event: str
    from_state: str
    to_state: str
    version: int
    opened: tuple[int, ...]


class Engine:
    def __init__(
        self,
        db: Database,
        workflows: Workflows,
        access: Access,
        policy: Policy,
        clock: Clock,
        audit: AuditLog,
        outbox: Outbox,
    ):
        self.db, self.workflows, self.access = db, workflows, access
        self.policy, self.clock, self.audit, self.outbox = policy, clock, audit, outbox
        # The one audited-operation wrapper, shared with every service (runtime.py).
        self.operations = Operations(db, audit)
        # Audits a refused attempt, for callers outside a service (the pages, the CLI).
        self.refused = self.operations.refused
        self._known_events: frozenset[str] | None = None  # every pathway's events

    # --- definitions ---------------------------------------------------------------------

    def register_versions(self) -> None:
        """Store every current definition so cases can keep running on it later."""
        rows = [
            {"version": wf.version, "pathway": wf.pathway, "source": wf.source, "loaded_at": now}
            for wf in self.workflows.current.values()
            for now in [self.clock.now()]
        ]
        dialect = postgresql if self.db.is_postgres else sqlite
        with self.db.transaction() as s:
            # Several processes may start at once: the first to insert a version wins.
            s.execute(
                dialect.insert(WorkflowVersion.__table__).on_conflict_do_nothing(
                    index_elements=["version"]
                ),
                rows,
            )

    def workflow_for(self, session: Session | Connection, version: str) -> Workflow:
        def load(v: str) -> str | None:
            return session.execute(
                sa.select(WorkflowVersion.source).where(WorkflowVersion.version == v)
            ).scalar_one_or_none()

        return self.workflows.version(version, load)

    # --- the one path for change ---------------------------------------------------------

    def fire(
        self,
        case_id: int,
        event: str,
        actor: Actor,
        data: dict[str, Any] | None,
        expected_version: int,
    ) -> Fired:
        # The audit action names the event only if some pathway has it; anything else
        # is `unknown_event` with a keyed hash of what was asked (audit/vocabulary.py).
        action, asked = self.event_action(actor.source, event)
        try:
            with self.db.writing() as conn:
                return self._fire(conn, case_id, event, actor, data or {}, expected_version)
        except DomainError as exc:
            exc_audited = exc
            if "event_hmac" in asked and repr(event) in exc.detail:
                # the refusal's words would repeat what was typed
                exc_audited = NotValidNow("no pathway has the event asked for")
            self.operations.refused(actor, action, exc_audited, case_id=case_id, summary=asked)
            raise

    def event_action(self, source: str, event: Any) -> tuple[str, dict[str, str]]:
        """The audit action for asking to fire `event` (`audit.vocabulary`): an event no
        pathway has is recorded as `unknown_event` with a keyed hash, never its text."""
        if self._known_events is None:
            self._known_events = frozenset(
                e for w in self.workflows.current.values() for e in w.definition.events
            )
        return event_action(self.audit.key, source, event, self._known_events)

    def fire_in(
        self,
        s: Session | Connection,
        case_id: int,
        event: str,
        actor: Actor,
        data: dict[str, Any] | None,
        expected_version: int,
    ) -> Fired:
        """`fire` inside a transaction the caller owns (the scheduler's claim)."""
        return self._fire(as_connection(s), case_id, event, actor, data or {}, expected_version)

    def _fire(
        self,
        conn: Connection,
        case_id: int,
        event: str,
        actor: Actor,
        data: dict[str, Any],
        expected_version: int,
    ) -> Fired:
        now = self.clock.now()
        row = _READ_CASE.first(conn, {"case_id": case_id})
        self.access.require_visible(actor, row, case_id)
        wf = self.workflow_for(conn, row.workflow_version)
        if event not in wf.definition.events:
            # repr: what was typed, escaped (a lone surrogate cannot be sent back as UTF-8)
            raise NotValidNow(f"{event!r} is not an event of the {wf.pathway} pathway")
        ev = wf.definition.events[event]
        if (ev.system and actor is not SYSTEM) or not self.access.can(
            actor, wf.permission(event), row
        ):
            raise Forbidden(f"you may not {event} on a {wf.pathway} case")
        if expected_version != row.version:
            raise StaleVersion(
                f"the case is at version {row.version}, not {expected_version}: "
                "someone else changed it; reload and try again"
            )
        if event not in wf.triggers(row.state):
            raise NotValidNow(f"{event} cannot happen while the case is {row.state}")
        clean = wf.schemas[event].validate(data)
        users = self._resolve_users(conn, wf, event, clean)
        meetings = self._resolve_meetings(conn, wf, event, clean, now)
        snap = self._snapshot(conn, row, history=wf.needs_history(event))
        ctx = Context(
            snap, event, clean, actor, now, self.policy, self.workflows.pathways, users, meetings
        )
        to_state = wf.next_state(ctx)
        ops = plan_effects(ctx, wf.effects[event])
        stored = {c: getattr(row, c) for c in _INDEXED}
        opened = self._apply(conn, wf, snap, to_state, ops, actor, now, stored)
        _INSERT_HISTORY.run(
            conn,
            {
                "case_id": case_id,
                "version": snap.version + 1,
                "event": event,
                "from_state": snap.state,
                "to_state": to_state,
                "actor_id": actor.user_id,
                "actor_name": actor.display_name,
                "at": now,
                "data": clean,
            },
        )
        # An anonymised record is no longer linked to a person, not even in its audit row.
        anonymous = any(isinstance(op, Anonymise) for op in ops)
        self.audit.record(
            conn, actor, f"{actor.source}:case:{event}", target=f"case:{case_id}",
            case_id=case_id, person_id=None if anonymous else snap.person_id, at=now,
            summary={"pathway": wf.pathway, "event": event, "from": snap.state,
                     "to": to_state, "version": snap.version + 1,
                     "fields": sorted(clean), "opened": list(opened)},
        )  # fmt: skip
        return Fired(case_id, event, snap.state, to_state, snap.version + 1, tuple(opened))

    def _resolve_users(
        self, conn: Connection, wf: Workflow, event: str, data: dict[str, Any]
    ) -> dict[str, int]:
        """`user` fields name a username; it must be an active user holding the
        permission the field asks for (e.g. only an IDVA can be allocated as one)."""
        out: dict[str, int] = {}
        for name, spec in wf.schemas[event].users.items():
            if name not in data:
                continue
            uid = conn.execute(
                sa.select(User.id).where(User.username == data[name], User.disabled.is_(False))
            ).scalar_one_or_none()
            if uid is None:
                raise InvalidData(FieldError(name, f"no active user {data[name]!r}"))
            if spec.holds_permission and uid not in self.outbox.holders(
                conn, self.policy, spec.holds_permission
            ):
                raise InvalidData(
                    FieldError(name, f"{data[name]!r} does not hold {spec.holds_permission}")
                )
            out[name] = uid
        return out

    def _resolve_meetings(
        self, conn: Connection, wf: Workflow, event: str, data: dict[str, Any], now: datetime
    ) -> dict[str, tuple[int, Any]]:
        """A `meeting` field names a future meeting of this pathway with room; left out,
        it means the next such meeting."""
        out = {}
        today = now.astimezone(LONDON).date()
        for name in wf.schemas[event].meetings:
            listed = (
                sa.select(sa.func.count())
                .where(_meeting_case.c.meeting_id == _meeting.c.id)
                .scalar_subquery()
            )
            query = (
                sa.select(_meeting.c.id, _meeting.c.date, _meeting.c.capacity, listed)
                .where(_meeting.c.pathway == wf.pathway, _meeting.c.date >= today)
                .order_by(_meeting.c.date, _meeting.c.id)
            )
            if name in data:
                row = conn.execute(query.where(_meeting.c.id == data[name])).first()
                if row is None:
                    raise InvalidData(
                        FieldError(name, f"no {wf.pathway} meeting {data[name]} from today on")
                    )
                if row[3] >= row.capacity:
                    raise InvalidData(FieldError(name, f"meeting {row.id} is full"))
            else:
                row = next((r for r in conn.execute(query) if r[3] < r.capacity), None)
                if row is None:
                    raise InvalidData(
                        FieldError(name, f"no {wf.pathway} meeting with room; set one up first")
                    )
            out[name] = (row.id, row.date)
        return out

    def _refer_children(
        self, conn: Connection, snap: Snapshot, pathway: str, reason: str, actor: Actor
    ) -> list[int]:
        """Refer each child in the subject's household, as a referral of their own."""
        if snap.referrer_id is None:
            return []
        now = self.clock.now()
        limit = self.policy.rules.child_age_limit
        opened = []
        for member in snap.subject.get("household") or []:
            if not intake.is_child(member, now.date(), limit):
                continue
            given, family = intake.split_name(member.get("name") or "")
            subject = {
                "given_name": given,
                "family_name": family,
                "date_of_birth": member.get("date_of_birth"),
                "estimated_age": member.get("age"),
                "is_child": True,
                "address": snap.subject.get("address"),
                "postcode": snap.subject.get("postcode"),
                "household": [],
            }
            with orm_session(conn) as s:
                got = intake.receive(
                    s, self, self.policy, now, actor,
                    # The system refers, on behalf of the parent case's pathway: not the
                    # person who referred the adult (it is not in their "My referrals").
                    referrer_id=None, agency_id=snap.agency_id,
                    agency_kind=snap.agency_kind, pathway=pathway, subject=subject,
                    details={"referred_by": "system", "on_behalf_of": snap.pathway,
                             "parent_case_id": snap.case_id},
                    concerns=["domestic_abuse"],
                    summary=(f"A child in the household of a {snap.pathway} case, referred "
                             "automatically for a safeguarding check."),
                    consent="not_sought",
                    consent_reason=("Automatic referral: child in a high-risk domestic "
                                    "abuse household"),
                    parent_case_id=snap.case_id, reason=reason,
                )  # fmt: skip
            opened.append(got.case_id)
        return opened

    def _link_person(self, conn: Connection, snap: Snapshot) -> int | None:
        """Match the subject to a person now, and link the case and its referral."""
        with orm_session(conn) as s:  # a new person is added through the model
            match = intake.identify(s, snap.subject)
        conn.execute(
            _case.update().where(_case.c.id == snap.case_id).values(person_id=match.person_id)
        )
        conn.execute(
            _referral.update()
            .where(_referral.c.id == snap.referral_id, _referral.c.person_id.is_(None))
            .values(person_id=match.person_id, possible_matches=list(match.possible))
        )
        return match.person_id

    def _anonymise(self, conn: Connection, snap: Snapshot, keep: tuple[str, ...]) -> None:
        """Remove every identifying detail of the subject, and the link to the person.

        Used for a Duty to Notify record: an adult who did not consent is reported
        anonymously, so nothing here may say who they are.
        """
        kept = {k: snap.subject.get(k) for k in keep if snap.subject.get(k) is not None}
        kept.update(anonymised=True, age_group="child" if snap.is_child else "adult")
        if snap.referral_id is not None:
            conn.execute(
                _referral.update()
                .where(_referral.c.id == snap.referral_id)
                .values(
                    subject=kept, summary="[withheld: Duty to Notify, anonymous]", details={},
                    person_id=None, possible_matches=[], request_hash=None,
                    idempotency_key=None, consent_reason=None, repeat_of_referral_id=None,
                )
            )  # fmt: skip
        attributes = {k: v for k, v in snap.attributes.items() if k != "repeat"}
        conn.execute(
            _case.update()
            .where(_case.c.id == snap.case_id)
            .values(person_id=None, attributes=attributes)
        )
        if snap.person_id is not None:
            still_used = conn.execute(
                sa.select(
                    sa.exists().where(_case.c.person_id == snap.person_id)
                    | sa.exists().where(_referral.c.person_id == snap.person_id)
                )
            ).scalar()
            if not still_used:
                conn.execute(sa.delete(Person).where(Person.id == snap.person_id))

    def _snapshot(self, conn: Connection, row: Any, *, history: bool) -> Snapshot:
        """The case as `_READ_CASE` read it (with its referral's columns), its live
        deadlines and, only for events whose effects look at it, the person's history."""
        ref = row.referral_id is not None
        deadlines = {
            d.name: DeadlineView(d.name, d.label, d.due_at, d.status, d.on_due, d.paused_at)
            for d in _READ_DEADLINES.rows(conn, {"case_id": row.id})
        }
        return Snapshot(
            case_id=row.id,
            pathway=row.pathway,
            state=row.state,
            version=row.version,
            workflow_version=row.workflow_version,
            attributes=dict(row.attributes or {}),
            rag=row.rag,
            opened_at=row.opened_at,
            received_at=row.ref_received_at if ref else None,
            subject=dict(row.ref_subject or {}) if ref else {},
            is_child=bool(row.ref_is_child) if ref else False,
            person_id=row.person_id,
            referral_id=row.referral_id,
            referrer_id=row.ref_referrer_id if ref else None,
            agency_id=row.agency_id,
            allocated_to_id=row.allocated_to_id,
            assigned_to_id=row.assigned_to_id,
            deadlines=deadlines,
            details=dict(row.ref_details or {}) if ref else {},
            agency_kind=row.ref_agency_kind if ref else None,
            last_opened=self._last_opened(conn, row.person_id, row.id) if history else {},
        )

    @staticmethod
    def _last_opened(conn: Connection, person_id: int | None, case_id: int | None) -> dict:
        """When this person's other cases on each pathway were last opened."""
        if person_id is None:
            return {}
        rows = conn.execute(
            sa.select(_case.c.pathway, sa.func.max(_case.c.opened_at))
            .where(_case.c.person_id == person_id, _case.c.id != (case_id or -1))
            .group_by(_case.c.pathway)
        )
        return {pathway: _aware(at) for pathway, at in rows if at is not None}

    def _apply(
        self,
        conn: Connection,
        wf: Workflow,
        snap: Snapshot,
        to_state: str,
        ops: list[Op],
        actor: Actor,
        now: datetime,
        stored: dict[str, Any],
    ) -> list[int]:
        """Write the planned change. The case row first: it is the concurrency check.
        `stored` holds the case row's indexed columns as read."""
        closing = wf.is_terminal(to_state) and not wf.is_terminal(snap.state)
        after = _fold(snap, ops, now, closing=closing)
        values = {
            "case_id": snap.case_id,
            "expected": snap.version,
            "state": to_state,
            "version": snap.version + 1,
            "updated_at": now,
            **_row_values(after),
            **({"closed": True, "closed_at": now} if closing else {}),
        }
        indexed = tuple(c for c in _INDEXED if c in values and values[c] != stored[c])
        changed = _update_case(indexed).run(conn, values).rowcount
        if changed != 1:
            raise StaleVersion("someone else changed the case first; reload and try again")
        opened: list[int] = []
        for op in ops:
            if isinstance(op, LinkPerson):
                after = replace(after, person_id=self._link_person(conn, after))
            else:
                opened.extend(self._apply_op(conn, after, op, actor, now))
        if closing:
            # Whatever the closing event did not meet or set itself no longer applies.
            kept = [op.name for op in ops if isinstance(op, SetDeadline)]
            if not kept:  # nearly always: one compiled statement
                _CANCEL_OPEN.run(conn, {"case_id": snap.case_id})
                return opened
            conn.execute(
                _deadline.update()
                .where(
                    _deadline.c.case_id == snap.case_id,
                    _deadline.c.status.in_(OPEN_DEADLINE),
                    _deadline.c.name.not_in(kept),
                )
                .values(status="cancelled")
            )
        return opened

    def _apply_op(self, conn: Connection, snap: Snapshot, op: Op, actor: Actor, now: datetime):
        match op:
            case SetDeadline(name, label, due, on_due):
                values = {"case_id": snap.case_id, "dname": name, "label": label, "due_at": due,
                          "on_due": on_due}  # fmt: skip
                if not _RESET_DEADLINE.run(conn, values).rowcount:
                    _INSERT_DEADLINE.run(
                        conn, {**values, "name": name, "set_at": now, "status": "open"}
                    )
            case MeetDeadline(name, late_reason):
                _MEET_DEADLINE.run(
                    conn,
                    {"case_id": snap.case_id, "dname": name, "met_at": now,
                     "late_reason": late_reason},
                )  # fmt: skip
            case OpenCase(pathway, reason):
                return [
                    self.open_case(
                        conn,
                        Opening(
                            pathway=pathway,
                            person_id=snap.person_id,
                            referral_id=snap.referral_id,
                            received_at=snap.received_at,
                            subject=snap.subject,
                            is_child=snap.is_child,
                            referrer_id=snap.referrer_id,
                            agency_id=snap.agency_id,
                            parent_case_id=snap.case_id,
                            details=snap.details,
                            agency_kind=snap.agency_kind,
                            reason=reason,
                        ),
                        actor,
                    )
                ]
            case TellReferrer(outcome, feedback):
                # Only the case a referral opened answers it: an onward case (MARAC after
                # a MASH decision) must not overwrite the MASH outcome the referrer was told.
                told = _TELL_REFERRER.run(
                    conn,
                    {"referral_id": snap.referral_id, "case_id": snap.case_id,
                     "outcome": outcome, "outcome_at": now, "feedback": feedback},
                ).rowcount  # fmt: skip
                if told and snap.referrer_id is not None:
                    self.outbox.enqueue(
                        conn, kind="referral_outcome", user_ids=[snap.referrer_id],
                        case_id=snap.case_id, referral_id=snap.referral_id,
                        payload={"outcome": outcome, "feedback": feedback},
                        dedupe=f"referral:{snap.referral_id}:outcome:{snap.case_id}",
                    )  # fmt: skip
            case ReferChildren(pathway, reason):
                return self._refer_children(conn, snap, pathway, reason, actor)
            case ListAtMeeting(meeting_id):
                _LIST_AT_MEETING.run(
                    conn, {"meeting_id": meeting_id, "case_id": snap.case_id, "listed_at": now}
                )
            case PauseClock():
                conn.execute(
                    _deadline.update()
                    .where(_deadline.c.case_id == snap.case_id, _deadline.c.status == "open")
                    .values(status="paused", paused_at=now)
                )
            case ResumeClock(dues):
                # From the rows as stored: `snap` is already folded (shows them running).
                paused = conn.execute(
                    sa.select(
                        _deadline.c.id, _deadline.c.name, _deadline.c.due_at, _deadline.c.paused_at
                    ).where(_deadline.c.case_id == snap.case_id, _deadline.c.status == "paused")
                )
                for row_id, name, due, since in paused.all():
                    conn.execute(
                        _deadline.update()
                        .where(_deadline.c.id == row_id)
                        .values(
                            status="open",
                            paused_at=None,
                            due_at=dues.get(name, _aware(due) + (now - _aware(since))),
                            warned_at=None,
                        )
                    )
            case Anonymise(keep):
                self._anonymise(conn, snap, keep)
            case LinkPerson():
                raise AssertionError("_apply links the person and passes the id on")
            case Notify(kind, audience, payload, key, fallback):
                users = self.audience(conn, audience, snap)
                if not users and fallback:
                    users = self.audience(conn, fallback, snap)
                suffix = f":{key}" if key else ""
                self.outbox.enqueue(
                    conn, kind=kind, user_ids=users, case_id=snap.case_id,
                    referral_id=snap.referral_id, payload=payload,
                    dedupe=f"case:{snap.case_id}:v{snap.version + 1}:{kind}{suffix}",
                )  # fmt: skip
        return []

    def audience(self, conn: Connection, audience: str, snap: Snapshot) -> list[int]:
        if audience == "referrer":
            return [snap.referrer_id] if snap.referrer_id else []
        if audience == "allocated":
            return [snap.allocated_to_id] if snap.allocated_to_id else []
        if audience == "assigned":
            return [snap.assigned_to_id] if snap.assigned_to_id else []
        if audience.startswith("permission:"):
            return self.outbox.holders(conn, self.policy, audience.removeprefix("permission:"))
        if audience == "agency_contact":
            ids = [snap.agency_id] if snap.agency_id else []
            return self.outbox.agency_contacts(conn, agency_ids=ids) if ids else []
        if audience.startswith("agency_kind:"):
            return self.outbox.agency_contacts(conn, kinds=[audience.removeprefix("agency_kind:")])
        raise ValueError(f"unknown audience {audience!r}")

    # --- opening cases -------------------------------------------------------------------

    def open_case(self, s: Session | Connection, opening: Opening, actor: Actor) -> int:
        """Open a case in its pathway's first state, with its opening effects."""
        conn = as_connection(s)
        wf = self.workflows.get(opening.pathway)
        now = self.clock.now()
        case_id = conn.execute(
            _case.insert().returning(_case.c.id),
            {
                "pathway": wf.pathway,
                "state": wf.definition.initial,
                "version": 1,
                "workflow_version": wf.version,
                "person_id": opening.person_id,
                "referral_id": opening.referral_id,
                "parent_case_id": opening.parent_case_id,
                "agency_id": opening.agency_id,
                "priority": _priority(None, opening.attributes or {}),
                "closed": False,
                "attributes": dict(opening.attributes or {}),
                "opened_at": now,
                "updated_at": now,
            },
        ).scalar_one()
        snap = Snapshot(
            case_id=case_id, pathway=wf.pathway, state=wf.definition.initial, version=1,
            workflow_version=wf.version, attributes=dict(opening.attributes or {}), rag=None,
            opened_at=now, received_at=opening.received_at, subject=opening.subject or {},
            is_child=opening.is_child, person_id=opening.person_id,
            referral_id=opening.referral_id, referrer_id=opening.referrer_id,
            agency_id=opening.agency_id, allocated_to_id=None, assigned_to_id=None,
            details=dict(opening.details or {}), agency_kind=opening.agency_kind,
            last_opened=self._last_opened(conn, opening.person_id, case_id),
        )  # fmt: skip
        ctx = Context(snap, "open", {}, actor, now, self.policy, self.workflows.pathways)
        ops = plan_effects(ctx, wf.on_open)
        after = _fold(snap, ops, now, closing=False)
        conn.execute(_case.update().where(_case.c.id == case_id).values(**_row_values(after)))
        for op in ops:
            self._apply_op(conn, after, op, actor, now)
        conn.execute(
            _history.insert(),
            {"case_id": case_id, "version": 1, "event": "open", "from_state": None,
             "to_state": wf.definition.initial, "actor_id": actor.user_id,
             "actor_name": actor.display_name, "at": now,
             "data": {"reason": opening.reason, "parent_case_id": opening.parent_case_id}},
        )  # fmt: skip
        self.audit.record(
            conn, actor, f"{actor.source}:case:open", target=f"case:{case_id}", case_id=case_id,
            person_id=opening.person_id, at=now,
            summary={"pathway": wf.pathway, "state": wf.definition.initial,
                     "reason": opening.reason, "parent_case_id": opening.parent_case_id},
        )  # fmt: skip
        return case_id

    # --- what a caller may do now --------------------------------------------------------

    def available_events(
        self, s: Session | Connection, actor: Actor, row: Any,
        blocked: dict[str, str] | None = None,
    ) -> list[str]:  # fmt: skip
        """What this caller may fire now: allowed to them, and not bound to be refused by a
        guard that depends on the case alone (see `blocked_events` for why not)."""
        if blocked is None:
            blocked = self.blocked_events(s, actor, row)
        return [e for e in self._permitted(s, actor, row) if e not in blocked]

    def blocked_events(self, s: Session | Connection, actor: Actor, row: Any) -> dict[str, str]:
        """Events the caller may fire in this state whose case-only guards fail now, each
        with the reason in words (e.g. "the clock is already paused")."""
        wf = self.workflow_for(s, row.workflow_version)
        guarded = [e for e in self._permitted(s, actor, row) if wf.definition.events[e].guards]
        if not guarded:
            return {}
        conn = as_connection(s)
        snap = self._snapshot(conn, _READ_CASE.first(conn, {"case_id": row.id}), history=False)
        out = {}
        for event in guarded:
            ctx = Context(snap, event, {}, actor, self.clock.now(), self.policy,
                          self.workflows.pathways)  # fmt: skip
            failure = failing_case_guard(ctx, wf.definition.events[event].guards)
            if failure is not None:
                out[event] = failure[1]
        return out

    def _permitted(self, s: Session | Connection, actor: Actor, row: Any) -> list[str]:
        wf = self.workflow_for(s, row.workflow_version)
        return [
            e for e in wf.events_from(row.state) if self.access.can(actor, wf.permission(e), row)
        ]


def _fold(snap: Snapshot, ops: list[Op], now: datetime, *, closing: bool) -> Snapshot:
    """The case as the planned operations leave it (in memory; nothing is written)."""
    attributes = dict(snap.attributes)
    rag = snap.rag
    people = {"assigned": snap.assigned_to_id, "allocated": snap.allocated_to_id}
    deadlines = {} if closing else dict(snap.deadlines)  # a closed case is due nothing
    for op in ops:
        match op:
            case SetAttributes(values):
                attributes.update(values)
            case AppendAttribute(name, item):
                attributes[name] = [*attributes.get(name, []), item]
            case SetRag(value):
                rag = value
            case SetDeadline(name, label, due, on_due):
                deadlines[name] = DeadlineView(name, label, due, "open", on_due)
            case MeetDeadline(name):
                deadlines.pop(name, None)
            case Assign(relation, user_id):
                people[relation] = user_id
            case PauseClock():
                deadlines = {
                    k: replace(d, status="paused", paused_at=now) if d.status == "open" else d
                    for k, d in deadlines.items()
                }
            case ResumeClock(dues):
                deadlines = {k: _resumed(d, now, dues.get(k)) for k, d in deadlines.items()}
    return replace(
        snap,
        attributes=attributes,
        rag=rag,
        deadlines=deadlines,
        assigned_to_id=people["assigned"],
        allocated_to_id=people["allocated"],
    )


def _priority(rag: str | None, attributes: dict[str, Any]) -> int:
    """The queue's first key: 0 for red, and for an unrated referral that met a high-risk
    criterion as it arrived (DASH at the threshold, professional judgement, repeated
    police incidents) until someone rates it; 1 otherwise."""
    if rag == "red" or (rag is None and attributes.get("high_risk_criteria")):
        return 0
    return 1


def _row_values(snap: Snapshot) -> dict[str, Any]:
    """The case row's columns that operations can change."""
    return {
        "attributes": snap.attributes,
        "rag": snap.rag,
        "priority": _priority(snap.rag, snap.attributes),
        "due_at": _case_due(snap.deadlines),
        "assigned_to_id": snap.assigned_to_id,
        "allocated_to_id": snap.allocated_to_id,
    }


def _case_due(deadlines: dict[str, DeadlineView]) -> datetime | None:
    """The case's due time: its earliest running deadline that escalates when missed."""
    dues = [d.due_at for d in deadlines.values() if d.on_due == "escalate" and d.status != "paused"]
    return min(dues) if dues else None


def _resumed(d: DeadlineView, now: datetime, due: datetime | None) -> DeadlineView:
    """A paused deadline, running again: the paused time does not count against it (`due`
    is the new due time the resume effect counted in the clock's own units)."""
    if d.status != "paused" or d.paused_at is None:
        return d
    due = due or d.due_at + (now - d.paused_at)
    return replace(d, status="open", due_at=due, paused_at=None)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
