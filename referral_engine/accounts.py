"""Users, sign-in with lockout, token issue and revocation, and the actor behind a token."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session

from . import passwords, tokens
from .access import Access, Actor
from .audit import AuditLog
from .clock import Clock
from .db import Database
from .errors import FieldError, InvalidData, Locked, Unauthorised
from .models import Agency, LoginFailure, RevokedToken, User, UserRole
from .policies import Policy

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{2,100}$")

ANONYMOUS_SOURCE = "anonymous"


class Accounts:
    def __init__(
        self,
        db: Database,
        access: Access,
        policy: Policy,
        clock: Clock,
        audit: AuditLog,
        *,
        secret: str,
        hasher: str,
        token_ttl: timedelta,
    ):
        self.db, self.access, self.policy, self.clock, self.audit = db, access, policy, clock, audit
        self.secret, self.hasher, self.token_ttl = secret, hasher, token_ttl

    # --- users ---------------------------------------------------------------------------

    def add_user(
        self,
        s: Session,
        *,
        username: str,
        password: str,
        roles: list[str],
        agency: str | None = None,
        agency_kind: str | None = None,
        display_name: str | None = None,
        email: str | None = None,
    ) -> User:
        errors = []
        if not USERNAME.match(username or ""):
            errors.append(FieldError("username", "use 2-100 letters, digits, or . _ @ -"))
        for r in roles:
            if r not in self.policy.roles:
                errors.append(
                    FieldError("role", f"unknown role {r!r}; roles: {', '.join(self.policy.roles)}")
                )
        if not roles:
            errors.append(FieldError("role", "give at least one role"))
        kinds = self.policy.reference.agency_kinds
        if agency_kind is not None and agency_kind not in kinds:
            errors.append(
                FieldError(
                    "agency_kind", f"unknown kind {agency_kind!r}; kinds: {', '.join(kinds)}"
                )
            )
        if errors:
            raise InvalidData(errors)
        passwords.check_password_rules(
            password, username, self.policy.rules.sign_in.password_min_length
        )
        if s.execute(sa.select(User.id).where(User.username == username)).first():
            raise InvalidData(FieldError("username", f"{username!r} is already taken"))
        agency_id = self.agency(s, agency, agency_kind) if agency else None
        user = User(
            username=username,
            display_name=display_name or username,
            email=email,
            password_hash=passwords.hash_password(password, self.hasher),
            agency_id=agency_id,
        )
        s.add(user)
        s.flush()
        for r in dict.fromkeys(roles):
            s.add(UserRole(user_id=user.id, role=r))
        s.flush()
        return user

    def agency(self, s: Session, name: str, kind: str | None) -> int:
        found = s.execute(sa.select(Agency).where(Agency.name == name)).scalar_one_or_none()
        if found is not None:
            if kind is not None and found.kind != kind:
                raise InvalidData(
                    FieldError("agency_kind", f"agency {name!r} is already of kind {found.kind}")
                )
            return found.id  # type: ignore[return-value]
        row = Agency(name=name, kind=kind or "other")
        s.add(row)
        s.flush()
        return row.id  # type: ignore[return-value]

    def actor_for_user(self, s: Session, user_id: int, *, source: str, request_id: str | None):
        row = s.execute(
            sa.select(User, Agency)
            .outerjoin(Agency, Agency.id == User.agency_id)
            .where(User.id == user_id)
        ).first()
        if row is None or row[0].disabled:
            return None
        user, agency = row
        roles = list(
            s.execute(
                sa.select(UserRole.role).where(UserRole.user_id == user_id).order_by(UserRole.role)
            ).scalars()
        )
        return self.access.actor(
            user_id=user.id,
            username=user.username,
            display_name=user.display_name,
            roles=roles,
            agency_id=user.agency_id,
            agency_name=agency.name if agency else None,
            agency_kind=agency.kind if agency else None,
            source=source,
            request_id=request_id,
        )

    def users_holding(self, permission: str) -> list[tuple[str, str]]:
        """(username, name) of active users whose roles grant `permission`, for pickers."""
        roles = self.policy.roles_granting(permission)
        with self.db.reading() as s:
            rows = s.execute(
                sa.select(User.username, User.display_name)
                .join(UserRole, UserRole.user_id == User.id)
                .where(UserRole.role.in_(roles), User.disabled.is_(False))
                .distinct()
                .order_by(User.display_name)
            ).all()
        return [(u, n) for u, n in rows]

    # --- sign-in -------------------------------------------------------------------------

    def sign_in(
        self, username: str, password: str, *, source: str, request_id: str | None
    ) -> tuple[str, Actor, int]:
        """Check a password; returns (token, actor, expires_in seconds).

        Five failures within the window lock the username for the lock period (429 with
        Retry-After). Every attempt, failed or not, is audited.
        """
        now = self.clock.now()
        anon = self.access.actor(
            user_id=None, username=username[:100], display_name=username[:100], roles=[],
            source=source, request_id=request_id,
        )  # fmt: skip
        with self.db.transaction() as s:
            retry = self._locked_for(s, username, now)
            if retry:
                self.audit.record(
                    s, anon, f"{source}:auth:sign_in", outcome="refused",
                    target=f"user:{username[:100]}", summary={"reason": "locked"},
                )  # fmt: skip
            user = s.execute(sa.select(User).where(User.username == username)).scalar_one_or_none()
        if retry:
            raise Locked(f"too many failed sign-ins; try again in {retry // 60 + 1} minutes", retry)
        good = passwords.verify_password(
            password,
            user.password_hash if user else passwords.dummy_hash(self.hasher),
            self.hasher,
        )
        with self.db.transaction() as s:
            if not good or user is None or user.disabled:
                s.add(LoginFailure(username=username[:100], at=now))
                self.audit.record(
                    s, anon, f"{source}:auth:sign_in", outcome="refused",
                    target=f"user:{username[:100]}", summary={"reason": "bad credentials"},
                )  # fmt: skip
                failed = True
            else:
                failed = False
                actor = self.actor_for_user(s, user.id, source=source, request_id=request_id)
                token, claims = tokens.issue(user.id, self.secret, now, self.token_ttl)
                self.audit.record(
                    s, actor, f"{source}:auth:sign_in", target=f"user:{user.id}",
                    summary={"jti": claims.jti},
                )  # fmt: skip
        if failed:
            raise Unauthorised("the username or password is not right")
        return token, actor, int(self.token_ttl.total_seconds())

    def _locked_for(self, s: Session, username: str, now) -> int:
        """Seconds until `username` may try again; 0 if it is not locked."""
        rules = self.policy.rules.sign_in
        recent = list(
            s.execute(
                sa.select(LoginFailure.at)
                .where(
                    LoginFailure.username == username,
                    LoginFailure.at > now - timedelta(minutes=rules.window_minutes),
                )
                .order_by(LoginFailure.at.desc())
                .limit(rules.max_failures)
            ).scalars()
        )
        if len(recent) < rules.max_failures:
            return 0
        until = recent[0] + timedelta(minutes=rules.lock_minutes)
        return max(1, int((until - now).total_seconds()) + 1) if until > now else 0

    def actor_from_token(self, token: str, *, source: str, request_id: str | None) -> Actor:
        now = self.clock.now()
        claims = tokens.read(token, self.secret, now)
        with self.db.reading() as s:
            if s.get(RevokedToken, claims.jti) is not None:
                raise Unauthorised("the token has been revoked (signed out)")
            actor = self.actor_for_user(s, claims.user_id, source=source, request_id=request_id)
        if actor is None:
            raise Unauthorised("the account no longer exists or is disabled")
        return actor

    def sign_out(self, token: str, actor: Actor) -> None:
        claims = tokens.read(token, self.secret, self.clock.now())
        with self.db.transaction() as s:
            if s.get(RevokedToken, claims.jti) is None:
                s.add(RevokedToken(jti=claims.jti, expires_at=claims.expires_at))
            self.audit.record(
                s, actor, f"{actor.source}:auth:sign_out", target=f"user:{actor.user_id}",
                summary={"jti": claims.jti},
            )  # fmt: skip
