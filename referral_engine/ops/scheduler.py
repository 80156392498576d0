"""`tick`: fire what has come due. Safe to run from cron, often, on several hosts at once.

A deadline that comes due is claimed (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so
several workers never take the same one), and in the same transaction marked and acted
on: an SLA deadline is marked breached and escalated to whoever holds the pathway's
`<pathway>:deadline:escalation` permission; a reminder is sent; a timer fires its event
through the engine as the system actor. A second run finds nothing left to do, and the
outbox's dedupe keys make a repeated notice a no-op besides. An SLA deadline that will
fall due within `due_soon_hours` (policies/rules.yaml, the queue's "due soon") is
claimed the same way once, and its officer and managers are warned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from referral_engine.access.rules import SYSTEM
from referral_engine.audit.log import AuditLog
from referral_engine.clock import Clock
from referral_engine.engine.engine import Engine
from referral_engine.errors import DomainError
from referral_engine.notifications import Outbox
from referral_engine.policies.policy import Policy
from referral_engine.storage.db import Database
from referral_engine.storage.models import Case, Deadline

BATCH = 200


@dataclass
class TickResult:
    breached: list[int] = field(default_factory=list)
    warned: list[int] = field(default_factory=list)
    reminded: list[int] = field(default_factory=list)
    fired: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "breached": len(self.breached),
            "warned": len(self.warned),
            "reminded": len(self.reminded),
            "fired": len(self.fired),
            "failed": [{"deadline": d, "reason": r} for d, r in self.failed],
        }


class Scheduler:
    def __init__(
        self,
        db: Database,
        engine: Engine,
        policy: Policy,
        clock: Clock,
        audit: AuditLog,
        outbox: Outbox,
    ):
        self.db, self.engine, self.policy = db, engine, policy
        self.clock, self.audit, self.outbox = clock, audit, outbox

    def tick(self, now: datetime | None = None) -> TickResult:
        now = now or self.clock.now()
        result = TickResult()
        while self._batch(now, result):
            pass
        while self._warn_batch(now, result):
            pass
        return result

    def _warn_batch(self, now: datetime, result: TickResult) -> bool:
        """Warn of SLA deadlines due soon, each once; False when none are left."""
        soon = now + timedelta(hours=self.policy.rules.due_soon_hours)
        with self.db.transaction() as s:
            query = (
                sa.select(Deadline, Case)
                .join(Case, Case.id == Deadline.case_id)
                .where(
                    Deadline.status == "open",
                    Deadline.on_due == "escalate",
                    Deadline.warned_at.is_(None),
                    Deadline.due_at >= now,
                    Deadline.due_at <= soon,
                )
                .order_by(Deadline.due_at, Deadline.id)
                .limit(BATCH)
            )
            if self.db.is_postgres:
                query = query.with_for_update(of=Deadline.__table__, skip_locked=True)
            claimed = s.execute(query).all()
            for d, case in claimed:
                d.warned_at = now
                s.add(d)
                users = self._audience(s, case)
                stamp = int(d.due_at.timestamp())
                self.outbox.enqueue(
                    s, kind="deadline_near", user_ids=users, case_id=case.id,
                    referral_id=case.referral_id, dedupe=f"deadline:{d.id}:near:{stamp}",
                    payload={"deadline": d.name, "label": d.label, "due_at": d.due_at.isoformat()},
                )  # fmt: skip
                self.audit.record(
                    s, SYSTEM, "tick:deadline:warn", target=f"case:{case.id}", case_id=case.id,
                    person_id=case.person_id, at=now,
                    summary={"deadline": d.name, "due_at": d.due_at.isoformat(), "notified": users},
                )  # fmt: skip
                result.warned.append(d.id)
        return len(claimed) == BATCH

    def _audience(self, s: Session, case: Case) -> list[int]:
        """The managers who hold the pathway's escalation permission, and the officer."""
        users = self.outbox.holders(s, self.policy, f"{case.pathway}:deadline:escalation")
        if case.assigned_to_id:
            users.append(case.assigned_to_id)
        return users

    def _claim(self, s: Session, now: datetime, limit: int):
        query = (
            sa.select(Deadline, Case)
            .join(Case, Case.id == Deadline.case_id)
            .where(Deadline.status == "open", Deadline.due_at < now)
            .order_by(Deadline.due_at, Deadline.id)
            .limit(limit)
        )
        if self.db.is_postgres:
            query = query.with_for_update(of=Deadline.__table__, skip_locked=True)
        return s.execute(query).all()

    def _batch(self, now: datetime, result: TickResult) -> bool:
        """Handle one batch in one transaction; False when nothing was due."""
        with self.db.transaction() as s:
            claimed = self._claim(s, now, BATCH)
            timers = []
            for deadline, case in claimed:
                if deadline.on_due.startswith("fire:"):
                    timers.append(deadline.id)
                else:
                    self._escalate(s, deadline, case, now, result)
        for deadline_id in timers:
            self._fire_timer(deadline_id, now, result)
        return len(claimed) == BATCH

    def _escalate(self, s: Session, d: Deadline, case: Case, now: datetime, r: TickResult) -> None:
        breach = d.on_due == "escalate"
        d.status = "breached" if breach else "reminded"
        d.breached_at = now if breach else None
        s.add(d)
        users = self._audience(s, case)
        kind = "deadline_breached" if breach else "deadline_reminder"
        self.outbox.enqueue(
            s, kind=kind, user_ids=users, case_id=case.id, referral_id=case.referral_id,
            payload={"deadline": d.name, "label": d.label, "due_at": d.due_at.isoformat()},
            dedupe=f"deadline:{d.id}:{kind}",
        )  # fmt: skip
        self.audit.record(
            s, SYSTEM, f"tick:deadline:{'breach' if breach else 'remind'}",
            target=f"case:{case.id}", case_id=case.id, person_id=case.person_id, at=now,
            summary={"deadline": d.name, "due_at": d.due_at.isoformat(), "notified": users},
        )  # fmt: skip
        (r.breached if breach else r.reminded).append(d.id)

    def _fire_timer(self, deadline_id: int, now: datetime, r: TickResult) -> None:
        """A timer fires its event through the engine, in the transaction that claims it."""
        try:
            with self.db.transaction() as s:
                query = sa.select(Deadline).where(
                    Deadline.id == deadline_id, Deadline.status == "open"
                )
                if self.db.is_postgres:
                    query = query.with_for_update(skip_locked=True)
                d = s.execute(query).scalar_one_or_none()
                if d is None:
                    return  # another worker took it
                case = s.get(Case, d.case_id)
                assert case is not None
                event = d.on_due.removeprefix("fire:")
                d.status, d.met_at = "fired", now
                s.add(d)
                s.flush()
                self.engine.fire_in(s, case.id, event, SYSTEM, {}, case.version)
                r.fired.append(deadline_id)
        except DomainError as exc:
            # The refusal is audited like every other (the one wrapper's `refused`), then
            # the timer is marked failed so that the next tick does not try it again.
            case_id = None
            with self.db.transaction() as s:
                d = s.get(Deadline, deadline_id)
                case_id = d.case_id if d is not None else None
                s.execute(
                    sa.update(Deadline)
                    .where(Deadline.id == deadline_id, Deadline.status == "open")
                    .values(status="failed", late_reason=f"timer could not fire: {exc.detail}")
                )
            self.engine.operations.refused(
                SYSTEM, "tick:case:timer", exc, case_id=case_id,
                summary={"deadline": deadline_id},
            )  # fmt: skip
            r.failed.append((deadline_id, exc.detail))
