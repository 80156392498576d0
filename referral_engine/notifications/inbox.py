"""In-app notifications: each user's own outbox rows, unread first, marked read by them.

Read/unread is the row's `read_at` alone, separate from email delivery (`status`): a
notice can be unread in the app whether its email was sent, is retrying or failed.
A user sees only rows addressed to them; the text is the same need-to-know rendering
as the email's.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from referral_engine.access.rules import Actor
from referral_engine.audit.log import AuditLog
from referral_engine.clock import Clock
from referral_engine.errors import (
    FieldError,
    InvalidData,
    NotFound,
    Unauthorised,
)
from referral_engine.notifications.render import Renderer
from referral_engine.storage.db import Database
from referral_engine.storage.models import Outbox

MAX_LIMIT = 200


class Inbox:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, renderer: Renderer):
        self.db, self.clock, self.audit, self.renderer = db, clock, audit, renderer

    @staticmethod
    def _who(actor: Actor) -> int:
        if actor.user_id is None:
            raise Unauthorised("notifications belong to a signed-in user")
        return actor.user_id

    def unread_count(self, actor: Actor) -> int:
        if actor.user_id is None:
            return 0
        with self.db.reading() as s:
            return s.execute(
                sa.select(sa.func.count())
                .select_from(Outbox)
                .where(Outbox.recipient_user_id == actor.user_id, Outbox.read_at.is_(None))
            ).scalar_one()

    def list(self, actor: Actor, *, unread_only: bool = False, limit: int = 50) -> dict[str, Any]:
        """Unread first (newest first within each), then read ones."""
        uid = self._who(actor)
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidData(FieldError("limit", f"must be between 1 and {MAX_LIMIT}"))
        with self.db.transaction() as s:
            query = sa.select(Outbox).where(Outbox.recipient_user_id == uid)
            if unread_only:
                query = query.where(Outbox.read_at.is_(None))
            rows = s.execute(
                query.order_by(Outbox.read_at.is_not(None), Outbox.id.desc()).limit(limit)
            ).scalars()
            items = []
            for row in rows:
                notice = self.renderer.render(s, row, in_app=True)
                items.append({
                    "id": row.id, "kind": row.kind, "title": notice.subject, "text": notice.text,
                    "link": notice.link.removeprefix(self.renderer.base_url) or "/",
                    "case_id": row.case_id, "referral_id": row.referral_id,
                    "created_at": row.created_at.isoformat(),
                    "read_at": row.read_at.isoformat() if row.read_at else None,
                    "email": row.status,
                })  # fmt: skip
            unread = s.execute(
                sa.select(sa.func.count())
                .select_from(Outbox)
                .where(Outbox.recipient_user_id == uid, Outbox.read_at.is_(None))
            ).scalar_one()
            self.audit.record(
                s, actor, f"{actor.source}:notification:list", target=f"user:{uid}",
                summary={"returned": len(items), "unread": unread},
            )  # fmt: skip
        return {"unread": unread, "items": items}

    def mark_one_read(self, actor: Actor, notice_id: int) -> int:
        """Mark one of the caller's notices read; someone else's (or none) is not found."""
        uid = self._who(actor)
        with self.db.reading() as s:
            mine = s.execute(
                sa.select(Outbox.id).where(Outbox.id == notice_id, Outbox.recipient_user_id == uid)
            ).first()
        if mine is None:
            raise NotFound(f"you have no notification {notice_id}")
        return self.mark_read(actor, [notice_id])

    def mark_read(self, actor: Actor, ids: list[int] | None) -> int:
        """Mark these (or, with None, all) of the caller's notices read; returns how many."""
        uid = self._who(actor)
        now = self.clock.now()
        with self.db.transaction() as s:
            where = [Outbox.recipient_user_id == uid, Outbox.read_at.is_(None)]
            if ids is not None:
                where.append(Outbox.id.in_(ids))
            changed = s.execute(sa.update(Outbox).where(*where).values(read_at=now)).rowcount
            self.audit.record(
                s, actor, f"{actor.source}:notification:read", target=f"user:{uid}",
                summary={"ids": ids if ids is not None else "all", "marked": changed},
            )  # fmt: skip
        return changed
