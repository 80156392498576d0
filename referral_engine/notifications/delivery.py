"""Draining the outbox by email: claim, send, mark; exactly once per row in practice.

1. Claim a batch in one short transaction: rows that are pending, or were claimed by a
   worker whose lease ran out (it crashed), and whose time has come. On PostgreSQL
   `FOR UPDATE SKIP LOCKED` gives each row to one worker; on SQLite the write lock taken
   at BEGIN IMMEDIATE serialises claims. A claim sets status `sending`, counts the
   attempt, stamps a claim token and moves `next_attempt_at` to the end of the lease.
2. Send, outside any transaction (an SMTP server that hangs holds no database lock).
3. Mark each row, only if it still carries our claim token: `sent`; or, after a
   temporary failure, `pending` again with a doubled wait; or `failed` with the reason
   after the last attempt or a permanent refusal.

A crash between 1 and 3 loses nothing: the lease runs out and another pass sends it.
A crash between the server accepting a message and 3 can send it twice; the message
keeps its Message-ID (see `mail`) so that receivers can tell. Rows whose recipient has no
email address, or is disabled, are marked `skipped`: they stay in the in-app list. A row
that cannot become a message (a line break in a stored name or address) is marked
`failed` with the reason, and the rows behind it are still sent.
"""

from __future__ import annotations

import logging
import smtplib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from referral_engine.clock import Clock
from referral_engine.notifications.mail import (
    Mailer,
    PermanentFailure,
    build,
    message_id,
)
from referral_engine.notifications.render import Renderer
from referral_engine.settings import Settings
from referral_engine.storage.db import Database
from referral_engine.storage.models import Outbox, User

log = logging.getLogger(__name__)

BATCH = 50
_outbox = Outbox.__table__


@dataclass
class DeliveryResult:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"sent": self.sent, "retrying": self.retrying, "failed": self.failed,
                "skipped": self.skipped}  # fmt: skip


@dataclass(frozen=True)
class _Job:
    row_id: int
    to: str | None
    to_name: str
    msg: object | None
    # Set when the row cannot become a message at all (a CR or LF in a stored name or
    # address, a template that fails): it is marked failed with this, and the rest go on.
    broken: str | None = None


class Sender:
    def __init__(
        self, db: Database, clock: Clock, settings: Settings, renderer: Renderer,
        mailer: Mailer | None = None,
    ):  # fmt: skip
        self.db, self.clock, self.settings, self.renderer = db, clock, settings, renderer
        self.mailer = mailer or Mailer(settings)

    def deliver(self, now: datetime | None = None) -> DeliveryResult:
        """Send everything due now, batch by batch; returns what happened."""
        result = DeliveryResult()
        if not self.mailer.configured:
            return result
        now = now or self.clock.now()
        while True:
            token = uuid.uuid4().hex
            jobs = self._claim(now, token)
            if not jobs:
                break
            self._send(jobs, now, token, result)
            if len(jobs) < BATCH:
                break
        return result

    # --- 1. claim ------------------------------------------------------------------------

    def _claim(self, now: datetime, token: str) -> list[_Job]:
        lease = now + timedelta(seconds=self.settings.notify_lease_seconds)
        with self.db.transaction() as s:
            query = (
                sa.select(_outbox.c.id)
                .where(
                    _outbox.c.status.in_(("pending", "sending")),
                    sa.or_(_outbox.c.next_attempt_at.is_(None), _outbox.c.next_attempt_at <= now),
                )
                .order_by(_outbox.c.id)
                .limit(BATCH)
            )
            if self.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            ids = list(s.execute(query).scalars())
            if not ids:
                return []
            s.execute(
                _outbox.update()
                .where(_outbox.c.id.in_(ids))
                .values(
                    status="sending",
                    claimed_by=token,
                    attempts=_outbox.c.attempts + 1,
                    next_attempt_at=lease,
                )
            )
            jobs = []
            rows = s.execute(sa.select(Outbox).where(Outbox.id.in_(ids)).order_by(Outbox.id))
            for row in rows.scalars():
                user = s.get(User, row.recipient_user_id) if row.recipient_user_id else None
                if user is None or user.disabled or not user.email:
                    jobs.append(_Job(row.id, None, "", None))
                    continue
                try:
                    notice = self.renderer.render(s, row)
                    sender = self.settings.smtp_from
                    msg = build(notice, to=user.email, to_name=user.display_name, sender=sender,
                                msg_id=message_id(row.id, row.dedupe_key, sender))  # fmt: skip
                    msg.as_bytes()  # headers are checked when written: fail here, not later
                except Exception as exc:  # any row that cannot be built, whatever the cause
                    # Never raise inside the claim: a rollback would leave this row to
                    # fail every later run, and nothing behind it would ever be sent.
                    log.error("notification %s cannot be built: %s", row.id, exc)
                    jobs.append(_Job(row.id, None, "", None, broken=_reason(exc)))
                    continue
                jobs.append(_Job(row.id, user.email, user.display_name, msg))
            return jobs

    # --- 2. send, 3. mark ----------------------------------------------------------------

    def _send(self, jobs: list[_Job], now: datetime, token: str, r: DeliveryResult) -> None:
        outcomes: dict[int, tuple[str, str | None]] = {}
        to_send = []
        for job in jobs:
            if job.broken:
                outcomes[job.row_id] = ("broken", f"cannot be sent: {job.broken}")
            elif job.msg is None:
                outcomes[job.row_id] = ("skipped", "no email address for the recipient")
            else:
                to_send.append(job)
        smtp = None
        if to_send:
            try:
                smtp = self.mailer.open()
            except (OSError, smtplib.SMTPException) as exc:
                reason = _reason(exc)
                for job in to_send:
                    outcomes[job.row_id] = ("retry", reason)
                to_send = []
        try:
            for job in to_send:
                try:
                    self.mailer.send(smtp, job.msg)  # type: ignore[arg-type]
                    outcomes[job.row_id] = ("sent", None)
                except PermanentFailure as exc:
                    outcomes[job.row_id] = ("failed", str(exc))
                except (OSError, smtplib.SMTPException) as exc:
                    outcomes[job.row_id] = ("retry", _reason(exc))
                    if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
                        # The connection is gone; the rest wait for the next pass.
                        for rest in to_send[to_send.index(job) + 1 :]:
                            outcomes[rest.row_id] = ("retry", _reason(exc))
                        break
        finally:
            if smtp is not None:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()
        self._mark(outcomes, now, token, r)

    def _mark(
        self, outcomes: dict[int, tuple[str, str | None]], now: datetime, token: str,
        r: DeliveryResult,
    ) -> None:  # fmt: skip
        max_attempts = self.settings.notify_max_attempts
        with self.db.transaction() as s:
            attempts = dict(
                s.execute(
                    sa.select(_outbox.c.id, _outbox.c.attempts).where(
                        _outbox.c.id.in_(list(outcomes)), _outbox.c.claimed_by == token
                    )
                ).all()
            )
            for row_id, (outcome, reason) in outcomes.items():
                if row_id not in attempts:
                    continue  # our lease ran out and someone else holds the row now
                values: dict = {"claimed_by": None, "last_error": reason}
                if outcome == "sent":
                    values.update(status="sent", sent_at=now, next_attempt_at=None)
                    r.sent += 1
                elif outcome == "skipped":
                    values.update(status="skipped", next_attempt_at=None)
                    r.skipped += 1
                elif outcome == "broken":
                    values.update(status="failed", next_attempt_at=None)
                    r.failed += 1
                elif outcome == "retry" and attempts[row_id] < max_attempts:
                    wait = self.settings.notify_backoff_seconds * 2 ** (attempts[row_id] - 1)
                    values.update(status="pending", next_attempt_at=now + timedelta(seconds=wait))
                    r.retrying += 1
                else:
                    tries = attempts[row_id]
                    values.update(
                        status="failed",
                        next_attempt_at=None,
                        last_error=f"{reason} (after {tries} attempt{'s' * (tries != 1)})",
                    )
                    r.failed += 1
                    log.error("notification %s failed: %s", row_id, reason)
                if reason and outcome != "skipped":
                    r.errors.append(reason)
                s.execute(
                    _outbox.update()
                    .where(_outbox.c.id == row_id, _outbox.c.claimed_by == token)
                    .values(**values)
                )


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
