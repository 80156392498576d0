"""The one audited-operation wrapper: every service's reads and changes run through it.

An operation authorises, reads or changes, and audits what it did, all in one
transaction (it writes its own allowed audit row, because only it knows what it read or
changed). If it is refused (a `DomainError`: not allowed, not visible, bad data, stale),
that transaction rolls back and nothing it did is kept, and the refusal is audited here,
in a transaction of its own, the same way for every service. Before this there were a
dozen hand-written copies of this try/except, and they disagreed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlmodel import Session

from referral_engine.access.rules import Actor
from referral_engine.audit.log import AuditLog
from referral_engine.errors import DomainError
from referral_engine.storage.db import Database

T = TypeVar("T")


class Operations:
    def __init__(self, db: Database, audit: AuditLog):
        self.db, self.audit = db, audit

    def run(
        self,
        actor: Actor,
        action: str,
        fn: Callable[[Session], T],
        *,
        target: str | None = None,
        case_id: int | None = None,
        person_id: int | None = None,
        summary: dict[str, Any] | None = None,
        connection: bool = False,
    ) -> T:
        """Run `fn` in one transaction (an ORM session, or with `connection` a Core
        connection, as the engine's hot path uses); audit its refusal if it is refused."""
        try:
            with self.db.writing() if connection else self.db.transaction() as s:
                return fn(s)  # type: ignore[arg-type]
        except DomainError as exc:
            self.refused(
                actor, action, exc, target=target, case_id=case_id, person_id=person_id,
                summary=summary,
            )  # fmt: skip
            raise

    def refused(
        self,
        actor: Actor,
        action: str,
        exc: DomainError,
        *,
        case_id: int | None = None,
        person_id: int | None = None,
        target: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Audit a refused attempt, after its own transaction rolled back."""
        with self.db.writing() as conn:
            self.audit.record(
                conn, actor, action, outcome="refused",
                target=target or (f"case:{case_id}" if case_id else None),
                case_id=case_id, person_id=person_id,
                summary={**(summary or {}), "status": exc.status, "reason": exc.detail},
            )  # fmt: skip
