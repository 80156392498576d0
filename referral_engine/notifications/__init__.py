"""The outbox: notifications written in the same transaction as the change that causes
them, so a rolled-back change notifies nobody. Each row names one recipient and carries
a dedupe key: writing the same notice twice (a re-run `tick`, a retried request) is a
no-op at the database, not a second message. Delivery (email, in-app) drains this table.

The package: this module writes the outbox; `delivery` drains it by email (claim, send,
mark, with retries and a lease); `render` turns a row into what its recipient may read;
`inbox` is the in-app view. Templates live in `templates/`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session

from referral_engine.policies.policy import Policy
from referral_engine.storage.columns import utcnow
from referral_engine.storage.db import Statement, as_connection
from referral_engine.storage.models import Agency, User, UserRole
from referral_engine.storage.models import Outbox as OutboxRow

_outbox = OutboxRow.__table__
_COLUMNS = ("created_at", "kind", "recipient_user_id", "case_id", "referral_id", "payload",
            "dedupe_key", "status", "attempts", "next_attempt_at")  # fmt: skip
# Written on the hot path of many events, so compiled once per dialect (see `Statement`).
_INSERT = {
    name: Statement(
        dialect.insert(_outbox)
        .values({c: sa.bindparam(c) for c in _COLUMNS})
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


class Outbox:
    def enqueue(
        self,
        s: Session | Connection,
        *,
        kind: str,
        user_ids: list[int],
        dedupe: str,
        case_id: int | None = None,
        referral_id: int | None = None,
        payload: dict[str, Any] | None = None,
    ) -> int:
        """Queue one notification per recipient; returns how many were new."""
        if not user_ids:
            return 0
        now = utcnow()
        rows = [
            {
                "created_at": now,
                "kind": kind,
                "recipient_user_id": uid,
                "case_id": case_id,
                "referral_id": referral_id,
                "payload": payload or {},
                "dedupe_key": f"{dedupe}:u{uid}",
                "status": "pending",
                "attempts": 0,
                # None: as soon as possible. (Writers here have no product clock; the
                # sender compares retry and lease times with its own.)
                "next_attempt_at": None,
            }
            for uid in dict.fromkeys(user_ids)
        ]
        conn = as_connection(s)
        insert = _INSERT[conn.dialect.name]
        return sum(max(insert.run(conn, row).rowcount, 0) for row in rows)

    def holders(self, s: Session | Connection, policy: Policy, permission: str) -> list[int]:
        """Active users whose roles grant `permission` (e.g. who hears of a breach)."""
        roles = policy.roles_granting(permission)
        if not roles:
            return []
        return list(
            s.execute(
                sa.select(User.id)
                .join(UserRole, UserRole.user_id == User.id)
                .where(UserRole.role.in_(roles), User.disabled.is_(False))
                .distinct()
                .order_by(User.id)
            ).scalars()
        )

    def agency_contacts(
        self,
        s: Session | Connection,
        *,
        agency_ids: list[int] | None = None,
        kinds: list[str] | None = None,
    ) -> list[int]:
        """The named contacts of these agencies (by id or by kind), if active."""
        query = (
            sa.select(Agency.contact_user_id)
            .join(User, User.id == Agency.contact_user_id)
            .where(User.disabled.is_(False))
        )
        if agency_ids is not None:
            query = query.where(Agency.id.in_(agency_ids))
        if kinds is not None:
            query = query.where(Agency.kind.in_(kinds))
        return sorted(set(s.execute(query).scalars()))

    @staticmethod
    def set_agency_contact(s: Session, agency_id: int, user_id: int | None) -> None:
        """Name who receives what the agency owns (None: nobody; notices fall back)."""
        s.execute(sa.update(Agency).where(Agency.id == agency_id).values(contact_user_id=user_id))
