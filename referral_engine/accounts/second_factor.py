"""A second factor for the accounts that can see the most: TOTP (RFC 6238, `pyotp`).

While local passwords are on, a password alone does not sign in an administrator or an
auditor (the roles in identity.yaml's `second_factor_roles`): they also give a code from
an authenticator app, or one of their recovery codes. Enrolment shows the key as text
to type into the app (no QR code: nothing is fetched or drawn from elsewhere), and is
confirmed by a first code; ten recovery codes are then shown once and stored only as
keyed hashes. The TOTP key itself must be read back to check codes, so it is stored
sealed (Fernet) with a key derived from REFERRAL_ENGINE_SECRET_KEY, never in the clear.

A code works once: the last time step used is kept and a code of that step or an
earlier one is refused. A wrong code counts as a failed sign-in for the lockout, as a
wrong password does, so codes cannot be guessed faster than passwords.

Audited as `<source>:auth:second_factor` (checked) and `<source>:auth:second_factor_enrol`,
with a reason code on refusal; never a code or a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

import pyotp
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.accounts import tokens
from referral_engine.accounts.users import Accounts
from referral_engine.audit.log import AuditLog
from referral_engine.clock import Clock
from referral_engine.errors import Locked, Unauthorised
from referral_engine.storage.db import Database
from referral_engine.storage.models import (
    LoginFailure,
    RecoveryCode,
    SecondFactor,
    User,
    UserRole,
)

STEP_SECONDS = 30
RECOVERY_CODES = 10
ISSUER_NAME = "Referral Engine"


class SecondFactorNeeded(Unauthorised):
    """The password was right; a code must follow (or, `enrolled` False, enrolment)."""

    def __init__(self, user_id: int, enrolled: bool, detail: str):
        super().__init__(detail)
        self.user_id, self.enrolled = user_id, enrolled


def normalise(code: str) -> str:
    return "".join(c for c in (code or "").upper() if c.isalnum())


def format_key(key: str) -> str:
    """A base32 key in groups of four, easier to type into an app."""
    return " ".join(key[i : i + 4] for i in range(0, len(key), 4))


def matching_step(key: str, code: str, now: datetime, after: int) -> int | None:
    """The time step (now, or one either side for clock drift) whose code this is, if it
    is later than `after`; else None."""
    code = normalise(code)
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(key, interval=STEP_SECONDS)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in (current - 1, current, current + 1):
        if step > after and hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None


class SecondFactors:
    def __init__(
        self,
        db: Database,
        access: Access,
        audit: AuditLog,
        clock: Clock,
        accounts: Accounts,
        roles: frozenset[str],
        *,
        secret: str,
        enabled: bool = True,
    ):
        self.db, self.access, self.audit, self.clock = db, access, audit, clock
        self.accounts, self.roles, self.enabled = accounts, roles, enabled
        self._secret = secret.encode()
        sealing = hashlib.sha256(b"second-factor-key:" + self._secret).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(sealing))

    # --- who needs one -------------------------------------------------------------------

    def needed(self, s: Session, user_id: int) -> bool:
        held = s.execute(sa.select(UserRole.role).where(UserRole.user_id == user_id)).scalars()
        return bool(self.roles & set(held))

    def _factor(self, s: Session, user_id: int) -> SecondFactor | None:
        return s.get(SecondFactor, user_id)

    def enrolled(self, user_id: int) -> bool:
        with self.db.reading() as s:
            factor = self._factor(s, user_id)
            return factor is not None and factor.confirmed_at is not None

    # --- at sign-in ----------------------------------------------------------------------

    def checker(
        self, code: str | None, *, source: str, request_id: str | None
    ) -> Callable[[User], None] | None:
        """The hook `Accounts.sign_in` calls once the password is right: returns if this
        user needs no second factor or `code` is right; raises SecondFactorNeeded if no
        code was given (or the user has not enrolled), Unauthorised if it is wrong. None
        when second factors are switched off (REFERRAL_ENGINE_SECOND_FACTOR=0)."""
        if not self.enabled:
            return None

        def check(user: User) -> None:
            with self.db.reading() as s:
                if not self.needed(s, user.id):  # type: ignore[arg-type]
                    return
            if not self.enrolled(user.id):  # type: ignore[arg-type]
                raise SecondFactorNeeded(
                    user.id,  # type: ignore[arg-type]
                    False,
                    "this account needs a second factor: set it up by signing in on the "
                    "sign-in page (/login) first",
                )
            if not code:
                raise SecondFactorNeeded(
                    user.id,  # type: ignore[arg-type]
                    True,
                    "this account needs a second factor: send the 6-digit code from your "
                    "authenticator app (or a recovery code) as `otp`",
                )
            self.verify(user.id, code, source=source, request_id=request_id)  # type: ignore[arg-type]

        return check

    def _actor(self, s: Session, user_id: int, source: str, request_id: str | None) -> Actor:
        actor = self.accounts.actor_for_user(s, user_id, source=source, request_id=request_id)
        if actor is None:
            raise Unauthorised("the account no longer exists or is disabled")
        return actor

    def verify(self, user_id: int, code: str, *, source: str, request_id: str | None) -> str:
        """Accept `code` (TOTP or recovery) for this user once; returns "totp" or
        "recovery". A wrong code is audited and counted as a failed sign-in."""
        now = self.clock.now()
        with self.db.transaction() as s:
            actor = self._actor(s, user_id, source, request_id)
            factor = self._factor(s, user_id)
            method = None
            if factor is not None and factor.confirmed_at is not None:
                step = matching_step(self._key(factor), code, now, factor.last_step)
                if step is not None:
                    factor.last_step = step
                    s.add(factor)
                    method = "totp"
                elif self._use_recovery_code(s, user_id, code, now):
                    method = "recovery"
            if method is not None:
                self.audit.record(
                    s, actor, f"{source}:auth:second_factor", target=f"user:{user_id}",
                    summary={"method": method},
                )  # fmt: skip
                return method
        self._wrong_code(actor, f"{source}:auth:second_factor", user_id, now)
        raise Unauthorised("the code is not right (or was already used)")

    def _use_recovery_code(self, s: Session, user_id: int, code: str, now: datetime) -> bool:
        digest = self._recovery_hash(code)
        row = s.execute(
            sa.select(RecoveryCode).where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == digest,
                RecoveryCode.used_at.is_(None),
            )
        ).scalar_one_or_none()
        if row is None:
            return False
        row.used_at = now
        s.add(row)
        return True

    def complete(self, pending: str, code: str, *, source: str, request_id: str | None):
        """The page's second step: the pending sign-in (tokens.issue_pending) and a code;
        returns (token, actor, expires_in), audited as a sign-in like a password's."""
        now = self.clock.now()
        user_id = tokens.read_pending(pending, self.accounts.secret, now)
        with self.db.reading() as s:
            user = s.get(User, user_id)
            retry = self.accounts._locked_for(s, user.username, now) if user else 0
        if user is None or user.disabled:
            raise Unauthorised("the account no longer exists or is disabled")
        if retry:
            raise Locked(f"too many failed sign-ins; try again in {retry // 60 + 1} minutes", retry)
        method = self.verify(user_id, code, source=source, request_id=request_id)
        return self.issue(user_id, method, source=source, request_id=request_id)

    def issue(self, user_id: int, method: str, *, source: str, request_id: str | None):
        now = self.clock.now()
        with self.db.transaction() as s:
            user = s.get(User, user_id)
            actor = self._actor(s, user_id, source, request_id)
            token, claims = tokens.issue(
                user_id, self.accounts.secret, now, self.accounts.token_ttl,
                user.session_generation,  # type: ignore[union-attr]
            )  # fmt: skip
            self.audit.record(
                s, actor, f"{source}:auth:sign_in", target=f"user:{user_id}",
                summary={"method": f"password+{method}", "jti": claims.jti},
            )  # fmt: skip
        return token, actor, int(self.accounts.token_ttl.total_seconds())

    def pending(self, user_id: int, minutes: int) -> str:
        """A short-lived proof that this user's password was right (tokens.py)."""
        return tokens.issue_pending(
            user_id, self.accounts.secret, self.clock.now(), timedelta(minutes=minutes)
        )

    def pending_user(self, pending: str) -> int | None:
        try:
            return tokens.read_pending(pending, self.accounts.secret, self.clock.now())
        except Unauthorised:
            return None

    def username(self, user_id: int) -> str:
        with self.db.reading() as s:
            return s.execute(sa.select(User.username).where(User.id == user_id)).scalar() or ""

    # --- enrolment -------------------------------------------------------------------------

    def _key(self, factor: SecondFactor) -> str:
        try:
            return self._fernet.decrypt(factor.sealed_key.encode()).decode()
        except InvalidToken:
            raise Unauthorised("the second factor cannot be read: ask an administrator") from None

    def enrolment_key(self, user_id: int) -> str:
        """The key to type into the authenticator app: the one being enrolled, or a new one.
        An enrolled factor is never shown again."""
        with self.db.transaction() as s:
            factor = self._factor(s, user_id)
            if factor is not None and factor.confirmed_at is not None:
                raise Unauthorised("a second factor is already set up for this account")
            if factor is None:
                key = pyotp.random_base32()
                sealed = self._fernet.encrypt(key.encode()).decode()
                s.add(SecondFactor(user_id=user_id, sealed_key=sealed))
                return key
            return self._key(factor)

    def provisioning_uri(self, key: str, username: str) -> str:
        """The otpauth:// URI (for apps that take it pasted), never fetched or drawn."""
        return pyotp.TOTP(key, interval=STEP_SECONDS).provisioning_uri(
            name=username, issuer_name=ISSUER_NAME
        )

    def confirm(self, user_id: int, code: str, *, source: str, request_id: str | None):
        """Confirm enrolment with a first code; returns the recovery codes (shown once)."""
        now = self.clock.now()
        with self.db.transaction() as s:
            actor = self._actor(s, user_id, source, request_id)
            factor = self._factor(s, user_id)
            step = None
            if factor is not None and factor.confirmed_at is None:
                step = matching_step(self._key(factor), code, now, factor.last_step)
            if factor is not None and step is not None:
                factor.confirmed_at, factor.last_step = now, step
                s.add(factor)
                codes = self._new_recovery_codes(s, user_id)
                self.audit.record(
                    s, actor, f"{source}:auth:second_factor_enrol", target=f"user:{user_id}",
                    summary={"recovery_codes": len(codes)},
                )  # fmt: skip
                return codes
        self._wrong_code(actor, f"{source}:auth:second_factor_enrol", user_id, now)
        raise Unauthorised("the code is not right: check the key was typed in exactly")

    def _wrong_code(self, actor: Actor, action: str, user_id: int, now: datetime) -> None:
        """A wrong code counts towards the lockout as a failed sign-in, and is audited."""
        with self.db.transaction() as s:
            s.add(LoginFailure(username=actor.username[:100], at=now))
            self.audit.record(
                s, actor, action, outcome="refused", target=f"user:{user_id}",
                summary={"reason": "wrong code"},
            )  # fmt: skip

    def _recovery_hash(self, code: str) -> str:
        return hmac.new(self._secret, b"recovery:" + normalise(code).encode(), "sha256").hexdigest()

    def _new_recovery_codes(self, s: Session, user_id: int) -> list[str]:
        s.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        codes = []
        for _ in range(RECOVERY_CODES):
            raw = "".join(secrets.choice(alphabet) for _ in range(10))
            codes.append(f"{raw[:5]}-{raw[5:]}")
            s.add(RecoveryCode(user_id=user_id, code_hash=self._recovery_hash(raw)))
        return codes
