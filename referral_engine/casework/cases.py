"""Reading cases: one case, its history, the queue, a person's cases.

Every read is audited in the transaction that reads, and every list, count and person
view goes through `Access.visible_cases`, so a case the caller may not see is absent
(not merely hidden) and asking for it by id is a 404, exactly like a case that does not exist.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from dateutil.relativedelta import relativedelta
from sqlalchemy.engine import Connection
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.audit.log import AuditLog
from referral_engine.clock import Clock
from referral_engine.engine.engine import Engine
from referral_engine.errors import (
    FieldError,
    Forbidden,
    InvalidData,
    NotFound,
)
from referral_engine.policies.dash import assess as assess_dash
from referral_engine.policies.policy import Policy
from referral_engine.storage.db import Database, Statement, as_connection
from referral_engine.storage.models import (
    Case,
    CaseHistory,
    Deadline,
    Person,
    Referral,
    User,
)

# What a case page reads besides the case, compiled once (see `Statement`): these ran
# through the ORM at about 1 ms each and were most of the cost of answering a fired event.
_case, _deadline, _history = Case.__table__, Deadline.__table__, CaseHistory.__table__
_referral_t, _person_t = Referral.__table__, Person.__table__
_REFERRAL_COLUMNS = tuple(c.name for c in _referral_t.c)
_PERSON_COLUMNS = tuple(c.name for c in _person_t.c)
# Where the person's columns, then the time in the state, start in that row.
_PERSON_AT = len(_REFERRAL_COLUMNS)
_SINCE_AT = _PERSON_AT + len(_PERSON_COLUMNS)
# The rest of a case page's single values in one row: the referral, the person and since
# when the case has been in its state (three statements before, each ~25 µs of the
# busiest answer, bench/README.md). Bound by the caller's case, not joined from the
# stored one, so the page describes exactly the case it was given.
_one = sa.select(sa.literal(1).label("one")).subquery()
_READ_PAGE_VALUES = Statement(
    sa.select(
        *(_referral_t.c[n].label(f"r_{n}") for n in _REFERRAL_COLUMNS),
        *(_person_t.c[n].label(f"p_{n}") for n in _PERSON_COLUMNS),
        sa.select(sa.func.max(_history.c.at))
        .where(
            _history.c.case_id == sa.bindparam("case_id"),
            _history.c.to_state == sa.bindparam("state"),
        )
        .scalar_subquery()
        .label("since"),
    ).select_from(
        _one.outerjoin(_referral_t, _referral_t.c.id == sa.bindparam("referral_id")).outerjoin(
            _person_t, _person_t.c.id == sa.bindparam("person_id")
        )
    )
)
_READ_DEADLINES = Statement(
    sa.select(_deadline)
    .where(_deadline.c.case_id == sa.bindparam("case_id"))
    .order_by(_deadline.c.due_at, _deadline.c.id)
)
_READ_LINKS = Statement(
    sa.select(_case)
    .where(
        sa.or_(
            _case.c.parent_case_id == sa.bindparam("case_id"),
            _case.c.id == sa.bindparam("parent_id"),
        )
    )
    .order_by(_case.c.id)
)
_READ_CASE = Statement(sa.select(_case).where(_case.c.id == sa.bindparam("id")))
MAX_PAGE = 200
# The queue counts matching cases up to here and says "at least" beyond: an exact count
# of a million-case table costs more than the page itself, and nobody pages that far.
COUNT_CAP = 1_000


def linked_cases(s: Session | Connection, case: Any) -> list[Any]:
    """The parent and onward cases of `case`, by id: the order a link's number counts in
    (`Cases._links` shows them, `BreakGlass.open_linked` opens one by its number)."""
    return _READ_LINKS.rows(
        as_connection(s), {"case_id": case.id, "parent_id": case.parent_case_id or -1}
    )


def read_case(s: Session | Connection, case_id: int) -> Any | None:
    """A case row as stored, read-only, with the attribute names of `Case`: for reads that
    only look (the ORM's load cost more than the rest of a case page)."""
    return _READ_CASE.first(s, {"id": case_id})


class Cases:
    def __init__(
        self,
        db: Database,
        engine: Engine,
        access: Access,
        policy: Policy,
        clock: Clock,
        audit: AuditLog,
    ):
        self.db, self.engine, self.access = db, engine, access
        self.policy, self.clock, self.audit = policy, clock, audit

    def _audited(self, actor: Actor, action: str, target: str, fn, **ids):
        """Run a read in a transaction that also audits it; audit refusals too."""
        return self.engine.operations.run(actor, action, fn, target=target, **ids)

    # --- one case ------------------------------------------------------------------------

    def _visible(self, s: Session, actor: Actor, case_id: int) -> Any:
        case = read_case(s, case_id)
        self.access.require_visible(
            actor, case, case_id,
            reachable=lambda: self.access.linked_to_visible(s, actor, case),
        )  # fmt: skip
        assert case is not None
        return case

    def view(self, actor: Actor, case_id: int) -> dict[str, Any]:
        action = f"{actor.source}:case:view"

        def read(s: Session) -> dict[str, Any]:
            case = self._visible(s, actor, case_id)
            self.audit.record(
                s, actor, action, target=f"case:{case_id}", case_id=case_id,
                person_id=case.person_id, summary=self._read_summary(actor, case),
            )  # fmt: skip
            return self.describe(s, actor, case)

        return self._audited(actor, action, f"case:{case_id}", read, case_id=case_id)

    def permits(self, actor: Actor, case_id: int, event: str) -> bool:
        """Whether `event` is one of the case's pathway's that policy lets `actor` fire on
        this case in some state (a form for it may be stale, but was not forbidden): the
        difference between "not available now" (409) and "not yours to do" (403). Asked
        after `view`, so the case is one the actor may see."""
        with self.db.reading() as s:
            row = s.get(Case, case_id)
            if row is None:
                return False
            wf = self.engine.workflow_for(s, row.workflow_version)
            if event not in wf.definition.events or wf.definition.events[event].system:
                return False
            return self.access.can(actor, wf.permission(event), row)

    def _read_summary(self, actor: Actor, case: Case, version: bool = True) -> dict[str, Any]:
        """What a read's audit row says beyond who and which case: the version read, and
        whether it was read through a break-glass grant (so reviewers can find it)."""
        out: dict[str, Any] = {"version": case.version} if version else {}
        if self.access.through_glass(actor, case):
            out["break_glass"] = True
        return out

    def describe(self, s: Session | Connection, actor: Actor, case: Any) -> dict[str, Any]:
        """The case page, for a `Case` or a row from `read_case`. Reads what is stored
        (the caller has no unflushed changes)."""
        conn = as_connection(s)
        wf = self.engine.workflow_for(conn, case.workflow_version)
        now = self.clock.now()
        values = _READ_PAGE_VALUES.first(
            conn,
            {"case_id": case.id, "state": case.state, "referral_id": case.referral_id,
             "person_id": case.person_id},
        )  # fmt: skip
        referral = _named(_REFERRAL_COLUMNS, values[:_PERSON_AT])
        person = _named(_PERSON_COLUMNS, values[_PERSON_AT:_SINCE_AT])
        since = values[_SINCE_AT]
        deadlines = _READ_DEADLINES.rows(conn, {"case_id": case.id})
        # Events the caller could fire but that would be refused now, and why (shown, not
        # offered: "Pause" on a paused case).
        blocked = self.engine.blocked_events(conn, actor, case)
        events = self.engine.available_events(conn, actor, case, blocked=blocked)
        return {
            "id": case.id,
            "pathway": case.pathway,
            "pathway_label": wf.definition.label,
            "state": case.state,
            "state_label": wf.definition.states[case.state].label,
            "version": case.version,
            "workflow_version": case.workflow_version,
            "rag": case.rag,
            "due_at": _iso(case.due_at),
            "overdue": bool(case.due_at and not case.closed and case.due_at < now),
            "closed": case.closed,
            "opened_at": _iso(case.opened_at),
            "updated_at": _iso(case.updated_at),
            "closed_at": _iso(case.closed_at),
            # How long the case has waited in this state (e.g. for a conclusive grounds
            # decision, which has no target).
            "in_state_since": _iso(since),
            "days_in_state": (now - since).days if since else None,
            "person_id": case.person_id,
            "person": _person(person),
            "referral": _referral(referral),
            "attributes": self.access.redact_pathways(actor, case.attributes, wf.pathway_fields),
            "assigned_to_id": case.assigned_to_id,
            "allocated_to_id": case.allocated_to_id,
            "deadlines": [
                {
                    "name": d.name,
                    "label": d.label,
                    "due_at": _iso(d.due_at),
                    "status": d.status,
                    "overdue": d.status in ("open", "breached") and d.due_at < now,
                    "met_at": _iso(d.met_at),
                    "breached_at": _iso(d.breached_at),
                    "late_reason": d.late_reason,
                }
                for d in deadlines
            ],
            "linked_cases": self._links(conn, actor, case),
            "history_visible": self.access.can(actor, f"{case.pathway}:history:view", case),
            "break_glass": self.access.through_glass(actor, case),
            "available_events": [
                {
                    "event": e,
                    "label": wf.definition.events[e].label,
                    "data": wf.schemas[e].describe(),
                }
                for e in events
            ],
            "blocked_events": [
                {"event": e, "label": wf.definition.events[e].label, "reason": reason}
                for e, reason in blocked.items()
            ],
        }

    def _links(self, conn: Connection, actor: Actor, case: Any) -> list[dict[str, Any]]:
        """Parent and onward cases. One the caller may not see says only that it exists:
        no id, no pathway, no state (DESIGN.md: never named). A case policy lets the caller
        open with a reason is offered by the link's number on this case, still unnamed."""
        out: list[dict[str, Any]] = []
        for n, link in enumerate(linked_cases(conn, case)):
            relation = "parent" if link.id == case.parent_case_id else "onward"
            if self.access.can_see(actor, link):
                out.append({"relation": relation, "id": link.id, "pathway": link.pathway,
                            "state": link.state, "visible": True})  # fmt: skip
            elif self.access.may_break_glass(actor, link):
                # Opened through this case (`BreakGlass.open_linked`, by the link's
                # number): the record is named only once it is open.
                out.append({"relation": relation, "visible": False, "link": n,
                            "open_with_reason": True})  # fmt: skip
            else:
                out.append({"relation": relation, "visible": False})
        return out

    # --- history -------------------------------------------------------------------------

    def history(self, actor: Actor, case_id: int) -> list[dict[str, Any]]:
        action = f"{actor.source}:case:history"

        def read(s: Session) -> list[dict[str, Any]]:
            case = self._visible(s, actor, case_id)
            if not self.access.can(actor, f"{case.pathway}:history:view", case):
                raise Forbidden("you may not read this case's history")
            rows = s.execute(
                sa.select(CaseHistory)
                .where(CaseHistory.case_id == case_id)
                .order_by(CaseHistory.version)
            ).scalars()
            hide = self.engine.workflow_for(s, case.workflow_version).pathway_fields
            out = [
                {
                    "version": h.version,
                    "event": h.event,
                    "from_state": h.from_state,
                    "to_state": h.to_state,
                    "actor_id": h.actor_id,
                    "actor_name": h.actor_name,
                    "at": _iso(h.at),
                    "data": self.access.redact_pathways(actor, h.data, hide),
                }
                for h in rows
            ]
            self.audit.record(
                s, actor, action, target=f"case:{case_id}", case_id=case_id,
                person_id=case.person_id,
                summary={"entries": len(out), **self._read_summary(actor, case, version=False)},
            )  # fmt: skip
            return out

        return self._audited(actor, action, f"case:{case_id}", read, case_id=case_id)

    # --- the queue -----------------------------------------------------------------------

    def queue(
        self,
        actor: Actor,
        *,
        pathway: str | None = None,
        state: str | None = None,
        overdue: bool | None = None,
        rag: str | None = None,
        assigned_to_me: bool = False,
        include_closed: bool = False,
        limit: int = 50,
        offset: int = 0,
        sort: str | None = None,
        after_id: int | None = None,
    ) -> dict[str, Any]:
        """Cases the caller may see, most urgent first: red (and unrated referrals that
        met a high-risk criterion), then by due time; or by `sort` (a key of QUEUE_SORTS,
        '-' before it for the other way), over every case the caller may see.

        `after_id` pages by id instead (keyset: the cases after that id, in id order, with
        no count): how an export walks every case, however many, without the count's cap
        or an offset that grows with each page."""
        action = f"{actor.source}:case:list"
        filters = {
            k: v
            for k, v in dict(
                pathway=pathway, state=state, overdue=overdue, rag=rag,
                assigned_to_me=assigned_to_me or None, include_closed=include_closed or None,
                limit=limit, offset=offset, sort=sort, after_id=after_id,
            ).items()
            if v is not None
        }  # fmt: skip

        def read(s: Session) -> dict[str, Any]:
            if not 1 <= limit <= MAX_PAGE:
                raise InvalidData(FieldError("limit", f"must be between 1 and {MAX_PAGE}"))
            if offset < 0:
                raise InvalidData(FieldError("offset", "must not be negative"))
            if pathway is not None and pathway not in self.access.pathways:
                raise InvalidData(FieldError("pathway", f"unknown pathway {pathway!r}"))
            if rag is not None and rag not in ("red", "amber", "green"):
                raise InvalidData(FieldError("rag", "must be red, amber or green"))
            if sort is not None and sort.removeprefix("-") not in QUEUE_SORTS:
                raise InvalidData(FieldError(
                    "sort", f"Sort by one of: {', '.join(QUEUE_SORTS)} (or '-' before one)"
                ))  # fmt: skip
            now = self.clock.now()
            where = [self.access.visible_cases(actor, glass=False)]
            if pathway:
                where.append(Case.pathway == pathway)
            if state:
                where.append(Case.state == state)
            elif not include_closed:
                where.append(Case.closed.is_(False))
            if rag:
                where.append(Case.rag == rag)
            if overdue is True:
                where.append(sa.and_(Case.due_at < now, Case.closed.is_(False)))
            elif overdue is False:
                where.append(sa.or_(Case.due_at.is_(None), Case.due_at >= now))
            if assigned_to_me:
                # Assigned to work it, or allocated (an IDVA's cases are allocated to them).
                me = actor.user_id
                where.append(sa.or_(Case.assigned_to_id == me, Case.allocated_to_id == me))
            ids = sa.select(Case.id).where(*where)
            matching = ids.limit(COUNT_CAP + 1).subquery()
            outer_order: tuple[Any, ...] = _QUEUE_ORDER
            page_ids = None
            if after_id is not None:
                page_ids = (
                    ids.where(Case.id > after_id).order_by(Case.id).limit(limit).offset(offset)
                ).subquery()
                outer_order = (page_ids.c.id,)
            elif sort:
                key = QUEUE_SORTS[sort.removeprefix("-")]
                joined = sa.select(Case.id, key.label("sort_key")).where(*where)
                if key is _CONCERN_KEY:
                    joined = joined.outerjoin(Referral, Referral.id == Case.referral_id)
                elif key is _ASSIGNEE_KEY:
                    joined = joined.outerjoin(User, User.id == Case.assigned_to_id)
                direction = sa.desc if sort.startswith("-") else sa.asc
                ids = joined.order_by(key.is_(None), direction(key), Case.id)
                page_ids = ids.limit(limit).offset(offset).subquery()
                outer_order = (page_ids.c.sort_key.is_(None), direction(page_ids.c.sort_key),
                               page_ids.c.id)  # fmt: skip
            if after_id is not None:
                total, capped = None, None
            else:
                total = s.execute(sa.select(sa.func.count()).select_from(matching)).scalar() or 0
                capped = total > COUNT_CAP
                total = min(total, COUNT_CAP)
            # The page's ids first, from the queue index alone, then only those rows joined
            # to their person and referral: skipping `offset` rows then costs index entries,
            # not rows with their joins (page 20 of a 10k queue: 5.3 ms of SQL, now 1.2).
            # Only the columns a queue row shows: whole ORM objects (with every JSON column
            # decoded) cost more than the page's query itself.
            if page_ids is None:
                page_ids = ids.order_by(*_QUEUE_ORDER).limit(limit).offset(offset).subquery()
            page = page_ids
            rows = s.execute(
                sa.select(*_QUEUE_COLUMNS)
                .select_from(page)
                .join(Case, Case.id == page.c.id)
                .outerjoin(Person, Person.id == Case.person_id)
                .outerjoin(Referral, Referral.id == Case.referral_id)
                .order_by(*outer_order)
            ).all()
            soon = timedelta(hours=self.policy.rules.due_soon_hours)
            items = [
                {
                    "id": c.id,
                    "pathway": c.pathway,
                    "state": c.state,
                    "version": c.version,
                    "rag": c.rag,
                    "due_at": _iso(c.due_at),
                    "overdue": bool(c.due_at and not c.closed and c.due_at < now),
                    "due_soon": bool(c.due_at and not c.closed and now <= c.due_at < now + soon),
                    "seconds_left": int((c.due_at - now).total_seconds()) if c.due_at else None,
                    "person_id": c.person_id,
                    "person": _person(p) if p.id is not None else None,
                    "reference": r.reference,
                    "concerns": r.concerns if r.concerns is not None else [],
                    "immediate_danger": bool(r.immediate_danger),
                    "repeat": bool(r.repeat_of_referral_id),
                    "opened_at": _iso(c.opened_at),
                    "assigned_to_id": c.assigned_to_id,
                    "received_at": _iso(r.received_at),
                    "risk": self._risk_cues(r),
                }
                for c, p, r in (_queue_row(row) for row in rows)
            ]
            self.audit.record(
                s, actor, action, target="cases",
                summary={"filters": filters, "total": total, "listed": [i["id"] for i in items]},
            )  # fmt: skip
            return {
                "items": items,
                "total": total,
                "total_capped": capped,  # true: there are more than `total`
                "limit": limit,
                "offset": offset,
            }

        return self._audited(actor, action, "cases", read)

    # --- people --------------------------------------------------------------------------

    def _risk_cues(self, r: Any) -> dict[str, Any]:
        """What the queue shows of a referral's risk before anyone opens it: domestic
        abuse, its DASH score out of the checklist's questions, the criteria it meets."""
        dash = (r.details or {}).get("dash") if r.details else None
        cues: dict[str, Any] = {
            "domestic_abuse": "domestic_abuse" in (r.concerns or []), "dash": None,
            "criteria": [],
        }  # fmt: skip
        if dash:
            found = assess_dash(self.policy.dash, dash, agency_kind=r.agency_kind,
                                referred_at=r.received_at or self.clock.now(),
                                last_marac_referral=None)  # fmt: skip
            version = self.policy.dash.versions[found["version"]]
            cues["dash"] = {"version": found["version"], "score": found["score"],
                            "threshold": found["threshold"]}  # fmt: skip
            cues["dash_questions"] = len(version.items)
            cues["criteria"] = found["criteria"]
        return cues

    def case_for_reference(self, actor: Actor, reference: str) -> int | None:
        """The case a referral's reference ("RE-2026-XLUBMJ") opened, if the caller may
        see it (the first, when onward cases share it); None otherwise, whether or not
        such a case exists."""
        action = f"{actor.source}:case:search"

        def read(s: Session) -> int | None:
            found = s.execute(
                sa.select(Case.id)
                .join(Referral, Referral.id == Case.referral_id)
                .where(Referral.reference == reference.strip().upper(),
                       self.access.visible_cases(actor))
                .order_by(Case.id)
                .limit(1)
            ).scalar()  # fmt: skip
            self.audit.record(
                s, actor, action, target="cases",
                summary={"kind": "reference", "found": 1 if found else 0},
            )  # fmt: skip
            return found

        return self._audited(actor, action, "cases", read)

    def person(self, actor: Actor, person_id: int) -> dict[str, Any]:
        action = f"{actor.source}:person:view"

        def read(s: Session) -> dict[str, Any]:
            if not self.access.can(actor, "person:person:view"):
                raise Forbidden("you may not view people")
            person = s.get(Person, person_id)
            cases = (
                s.execute(
                    sa.select(Case)
                    .where(Case.person_id == person_id, self.access.visible_cases(actor))
                    .order_by(Case.opened_at.desc(), Case.id.desc())
                ).scalars().all()
                if person
                else []
            )  # fmt: skip
            if person is None or not cases:
                raise NotFound(f"person {person_id} not found")
            now = self.clock.now()
            window = now - relativedelta(months=self.policy.rules.repeat_referral_window_months)
            referral_ids = {c.referral_id for c in cases if c.referral_id}
            referrals = s.execute(
                sa.select(Referral)
                .where(Referral.id.in_(referral_ids))
                .order_by(Referral.received_at.desc())
            ).scalars().all()  # fmt: skip
            recent = [r for r in referrals if r.received_at >= window]
            # Only records the caller could open themselves: a person known only to a
            # pathway they may not see (Channel) is not theirs to hear of.
            flagged = {p for r in referrals for p in (r.possible_matches or []) if p != person_id}
            possible = sorted(
                s.execute(
                    sa.select(Case.person_id)
                    .distinct()
                    .where(
                        Case.person_id.in_(sorted(flagged)),
                        self.access.visible_cases(actor, glass=False),
                    )
                ).scalars()
            ) if flagged else []  # fmt: skip
            # A parent case (a MARAC case whose household this child came from) is named
            # only to those who may see it.
            parents = {c.parent_case_id for c in cases if c.parent_case_id}
            seen_parents = set(
                s.execute(
                    sa.select(Case.id).where(
                        Case.id.in_(sorted(parents)), self.access.visible_cases(actor)
                    )
                ).scalars()
            ) if parents else set()  # fmt: skip
            months = self.policy.rules.repeat_referral_window_months
            warnings = []
            if len(recent) > 1:
                warnings.append(
                    {"kind": "repeat", "referrals": len(recent), "months": months,
                     "text": f"{len(recent)} referrals in the last {months} months"}
                )  # fmt: skip
            if possible:
                warnings.append(
                    {"kind": "possible_duplicates", "people": possible,
                     "text": f"{len(possible)} other record(s) may be the same person"}
                )  # fmt: skip
            self.audit.record(
                s, actor, action, target=f"person:{person_id}", person_id=person_id,
                summary={"cases": [c.id for c in cases]},
            )  # fmt: skip
            return {
                **_person(person),
                "cases": [
                    {
                        "id": c.id,
                        "pathway": c.pathway,
                        "state": c.state,
                        "rag": c.rag,
                        "opened_at": _iso(c.opened_at),
                        "closed": c.closed,
                        "parent_case_id": (
                            c.parent_case_id if c.parent_case_id in seen_parents else None
                        ),
                    }
                    for c in cases
                ],
                "referrals": [
                    {
                        "id": r.id,
                        "reference": r.reference,
                        "received_at": _iso(r.received_at),
                        "concerns": r.concerns,
                        "repeat": r.repeat_of_referral_id is not None,
                    }
                    for r in referrals
                ],
                "possible_matches": possible,
                "warnings": warnings,
            }

        return self._audited(actor, action, f"person:{person_id}", read, person_id=person_id)


_QUEUE_CASE = (
    "id",
    "pathway",
    "state",
    "version",
    "rag",
    "due_at",
    "closed",
    "person_id",
    "opened_at",
    "assigned_to_id",
)
_QUEUE_PERSON = (
    "id",
    "given_name",
    "family_name",
    "date_of_birth",
    "estimated_age",
    "gender",
    "merged_into_id",
)
_QUEUE_REFERRAL = ("reference", "concerns", "immediate_danger", "repeat_of_referral_id",
                   "details", "agency_kind", "received_at")  # fmt: skip
# What the queue can be sorted by, besides its urgency order: each covers every case the
# caller may see (the sort is the query's, not one page's).
_CONCERN_KEY = sa.cast(Referral.concerns, sa.String)
_ASSIGNEE_KEY = User.display_name
QUEUE_SORTS: dict[str, Any] = {
    "received": Case.opened_at,
    "concern": _CONCERN_KEY,
    "assignee": _ASSIGNEE_KEY,
}
# Most urgent first: red, then by due time (none last), oldest case first on a tie. The
# queue indexes (migration 0006) hold these expressions in this order.
_QUEUE_ORDER = (Case.priority, Case.due_at.is_(None), Case.due_at, Case.id)
_QUEUE_COLUMNS = (
    *(_case.c[n].label(f"c_{n}") for n in _QUEUE_CASE),
    *(Person.__table__.c[n].label(f"p_{n}") for n in _QUEUE_PERSON),
    *(Referral.__table__.c[n].label(f"r_{n}") for n in _QUEUE_REFERRAL),
)  # fmt: skip


def _queue_row(row: Any) -> tuple[SimpleNamespace, SimpleNamespace, SimpleNamespace]:
    """A queue row's case, person and referral columns, each by its own names."""
    c, p = len(_QUEUE_CASE), len(_QUEUE_CASE) + len(_QUEUE_PERSON)
    return (
        _columns(_QUEUE_CASE, row[:c]),
        _columns(_QUEUE_PERSON, row[c:p]),
        _columns(_QUEUE_REFERRAL, row[p:]),
    )


def _columns(names: tuple[str, ...], values: Any) -> SimpleNamespace:
    """One table's columns of a joined row, by their own names."""
    return SimpleNamespace(**dict(zip(names, values, strict=True)))


def _named(names: tuple[str, ...], values: Any) -> SimpleNamespace | None:
    """`_columns`, or None if the outer join found no row (its id is NULL: the case has
    no referral or person, or its id names none)."""
    got = _columns(names, values)
    return got if got.id is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _person(p: Person | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "id": p.id,
        "given_name": p.given_name,
        "family_name": p.family_name,
        "date_of_birth": p.date_of_birth.isoformat() if p.date_of_birth else None,
        "estimated_age": p.estimated_age,
        "gender": p.gender,
        "merged_into_id": p.merged_into_id,
    }


def _referral(r: Referral | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "id": r.id,
        "reference": r.reference,
        "received_at": _iso(r.received_at),
        "referrer_id": r.referrer_id,
        "agency_id": r.agency_id,
        "agency_kind": r.agency_kind,
        "subject": r.subject,
        "concerns": r.concerns,
        "summary": r.summary,
        "immediate_danger": r.immediate_danger,
        "consent": r.consent,
        "consent_reason": r.consent_reason,
        "details": r.details,
        "is_child": r.is_child,
        "repeat_of_referral_id": r.repeat_of_referral_id,
        "possible_matches": r.possible_matches,
    }
