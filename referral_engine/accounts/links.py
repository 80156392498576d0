"""One-time links for a user to set their own password.

An administrator never chooses or sees a password: a new account and a reset each get a
link, sent to the account's own email address through the outbox (never shown on the
administrator's screen), that works once and expires. Only the SHA-256 of the link's
secret is stored, so reading the table does not give a working link.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from referral_engine.storage.models import PasswordLink

PATH = "/account/password"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(s: Session, user_id: int, purpose: str, now: datetime, ttl: timedelta) -> str:
    """A new link's secret; every earlier unused link of this user stops working."""
    s.execute(
        sa.update(PasswordLink)
        .where(PasswordLink.user_id == user_id, PasswordLink.used_at.is_(None))
        .values(used_at=now)
    )
    secret = secrets.token_urlsafe(32)
    s.add(
        PasswordLink(
            user_id=user_id, secret_hash=digest(secret), purpose=purpose, created_at=now,
            expires_at=now + ttl,
        )
    )  # fmt: skip
    s.flush()
    return secret


def find(s: Session, secret: str, now: datetime) -> PasswordLink | None:
    """The link if it is live (unused, unexpired), else None."""
    if not secret or len(secret) > 100:
        return None
    link = s.execute(
        sa.select(PasswordLink).where(PasswordLink.secret_hash == digest(secret))
    ).scalar_one_or_none()
    if link is None or link.used_at is not None or link.expires_at <= now:
        return None
    return link
