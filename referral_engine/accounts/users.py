"""Users, sign-in with lockout, token issue and revocation, and the actor behind a token."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.accounts import passwords, tokens
from referral_engine.audit.log import AuditLog
from referral_engine.audit.vocabulary import unknown_username
from referral_engine.clock import Clock
from referral_engine.errors import (
    DomainError,
    FieldError,
    Forbidden,
    InvalidData,
    Locked,
    NotFound,
    Unauthorised,
)
from referral_engine.policies.policy import Policy
from referral_engine.storage.db import Database, Statement, as_connection
from referral_engine.storage.models import (
    AccessGrant,
    Agency,
    LoginFailure,
    RevokedToken,
    User,
    UserRole,
)

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{2,100}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MANAGE = "admin:user:manage"
MAX_PAGE = 200

T = TypeVar("T")

# What every authenticated request reads (see `actor_from_token`): the user, agency,
# roles, open break-glass grants and whether the token was revoked, in one compiled
# statement (four round trips were a measurable part of every request). Lists come back
# joined with commas (role names and ids hold none), in each database's own aggregate.
_REVOKED = Statement(sa.select(RevokedToken.jti).where(RevokedToken.jti == sa.bindparam("jti")))


def _actor_statement(joined: Callable[[Any], Any]) -> Statement:
    roles = sa.select(joined(UserRole.role)).where(UserRole.user_id == User.id)
    glass = sa.select(joined(sa.cast(AccessGrant.case_id, sa.String))).where(
        AccessGrant.user_id == User.id, AccessGrant.expires_at > sa.bindparam("now")
    )
    return Statement(
        sa.select(User.id, User.username, User.display_name, User.agency_id, User.disabled,
                  User.session_generation, Agency.name.label("agency_name"),
                  Agency.kind.label("agency_kind"),
                  roles.scalar_subquery().label("roles"),
                  glass.scalar_subquery().label("glass"),
                  sa.exists().where(RevokedToken.jti == sa.bindparam("jti")).label("revoked"))
        .select_from(sa.outerjoin(User, Agency, Agency.id == User.agency_id))
        .where(User.id == sa.bindparam("user_id"))
    )  # fmt: skip


_ACTOR_ROW = {
    "sqlite": _actor_statement(lambda c: sa.func.group_concat(c, ",")),
    "postgresql": _actor_statement(lambda c: sa.func.string_agg(c, ",")),
}


def _listed(joined: str | None) -> list[str]:
    return joined.split(",") if joined else []


ANONYMOUS_SOURCE = "anonymous"


class Accounts:
    # Service accounts' API keys (service_accounts.py), resolved here for the API so that
    # every route that takes a bearer token takes a key too; set by the runtime.
    api_keys: Any = None

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

    def actor_for_user(
        self, s: Session | Connection, user_id: int, *, source: str, request_id: str | None
    ) -> Actor | None:
        """The actor a user is now (roles, agency, open break-glass grants); None if the
        user does not exist or is disabled."""
        return self._actor(self._actor_row(s, user_id, jti=""), source, request_id)

    def _actor_row(self, s: Session | Connection, user_id: int, *, jti: str) -> Any:
        conn = as_connection(s)
        return _ACTOR_ROW[conn.dialect.name].first(
            conn, {"user_id": user_id, "now": self.clock.now(), "jti": jti}
        )

    def _actor(self, row: Any, source: str, request_id: str | None) -> Actor | None:
        if row is None or row.disabled:
            return None
        return self.access.actor(
            user_id=row.id,
            username=row.username,
            display_name=row.display_name,
            roles=sorted(_listed(row.roles)),
            agency_id=row.agency_id,
            agency_name=row.agency_name,
            agency_kind=row.agency_kind,
            source=source,
            request_id=request_id,
            # Cases this user opened with a reason, while the grant lasts.
            glass=frozenset(int(i) for i in _listed(row.glass)),
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

    def user_id_for(self, username: str) -> int | None:
        """The id of the user with this username (disabled or not), for searches by user."""
        with self.db.reading() as s:
            return s.execute(sa.select(User.id).where(User.username == username)).scalar()

    # --- managing users (admin:user:manage; every call audited as <source>:user:<verb>) ---

    def _managed(self, actor: Actor, verb: str, target: str, fn: Callable[[Session, str], T]) -> T:
        """Run `fn(session, action)` for an administrator, in one transaction; a refusal
        (not allowed, bad data, no such user) is audited after that transaction rolled back.
        Administrators manage accounts and agencies only: nothing here reads case content."""
        action = f"{actor.source}:user:{verb}"
        try:
            if not self.access.can(actor, MANAGE):
                raise Forbidden("only administrators may manage users")
            with self.db.transaction() as s:
                return fn(s, action)
        except DomainError as exc:
            with self.db.transaction() as s:
                self.audit.record(
                    s, actor, action, outcome="refused", target=target,
                    summary={"status": exc.status, "reason": exc.detail},
                )  # fmt: skip
            raise

    def _user_row(self, s: Session, user_id: int) -> User:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    def _describe(self, s: Session, user: User) -> dict[str, Any]:
        agency = s.get(Agency, user.agency_id) if user.agency_id else None
        return {
            "id": user.id,
            "username": user.username,
            "display_name": user.display_name,
            "email": user.email,
            "agency": agency.name if agency else None,
            "agency_kind": agency.kind if agency else None,
            "roles": self._roles_of(s, user.id),  # type: ignore[arg-type]
            "disabled": user.disabled,
            "created_at": user.created_at.isoformat() if user.created_at else None,
        }

    @staticmethod
    def _roles_of(s: Session, user_id: int) -> list[str]:
        return list(
            s.execute(
                sa.select(UserRole.role).where(UserRole.user_id == user_id).order_by(UserRole.role)
            ).scalars()
        )

    @staticmethod
    def _agencies(s: Session) -> list[dict[str, Any]]:
        users = (
            sa.select(sa.func.count())
            .where(User.agency_id == Agency.id)
            .correlate(Agency)
            .scalar_subquery()
        )
        return [
            {"id": a.id, "name": a.name, "kind": a.kind, "users": n}
            for a, n in s.execute(sa.select(Agency, users).order_by(Agency.name)).all()
        ]

    def list_users(
        self,
        actor: Actor,
        *,
        q: str | None = None,
        agency_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Users (name, agency, roles, disabled), by username, found by part of their
        username or name and by agency; and every agency."""

        def read(s: Session, action: str) -> dict[str, Any]:
            if not 1 <= limit <= MAX_PAGE:
                raise InvalidData(FieldError("limit", f"must be between 1 and {MAX_PAGE}"))
            if offset < 0:
                raise InvalidData(FieldError("offset", "must not be negative"))
            where = []
            if q:
                like = f"%{q.strip()}%"
                where.append(sa.or_(User.username.ilike(like), User.display_name.ilike(like)))
            if agency_id is not None:
                where.append(User.agency_id == agency_id)
            total = s.execute(sa.select(sa.func.count()).select_from(User).where(*where)).scalar()
            rows = s.execute(
                sa.select(User).where(*where).order_by(User.username).limit(limit).offset(offset)
            ).scalars()
            items = [self._describe(s, u) for u in rows]
            self.audit.record(
                s, actor, action, target="users",
                summary={"q": q, "agency_id": agency_id, "total": total,
                         "listed": [i["id"] for i in items]},
            )  # fmt: skip
            return {"items": items, "total": total, "limit": limit, "offset": offset,
                    "agencies": self._agencies(s)}  # fmt: skip

        return self._managed(actor, "list", "users", read)

    def agencies(self, actor: Actor) -> list[dict[str, Any]]:
        """Every agency (name, kind, how many users), to pick one from. Not audited when
        allowed: it names organisations, not people or cases."""
        return self._managed(actor, "agencies", "agencies", lambda s, _: self._agencies(s))

    def user(self, actor: Actor, user_id: int) -> dict[str, Any]:
        """One user's account, and every agency (for moving them to another)."""

        def read(s: Session, action: str) -> dict[str, Any]:
            out = self._describe(s, self._user_row(s, user_id))
            self.audit.record(s, actor, action, target=f"user:{user_id}")
            return {**out, "agencies": self._agencies(s)}

        return self._managed(actor, "view", f"user:{user_id}", read)

    def _check_roles(self, roles: list[str]) -> list[FieldError]:
        unknown = [r for r in roles if r not in self.policy.roles]
        if unknown:
            return [FieldError("roles", f"unknown role {unknown[0]!r}")]
        if not roles:
            return [FieldError("roles", "choose at least one role")]
        return []

    def _check_agency(self, s: Session, name: str, kind: str | None) -> list[FieldError]:
        kinds = self.policy.reference.agency_kinds
        if not name:
            return [FieldError("agency", "enter the agency this person works for")]
        if len(name) > 200:
            return [FieldError("agency", "must be at most 200 characters")]
        if kind and kind not in kinds:
            return [FieldError("agency_kind", f"unknown kind {kind!r}")]
        found = s.execute(sa.select(Agency.kind).where(Agency.name == name)).scalar()
        if found is None and not kind:
            return [FieldError("agency_kind", "choose the kind of this new agency")]
        if found is not None and kind and kind != found:
            label = kinds.get(found, found)
            return [FieldError("agency_kind", f"{name} is already a {label} agency")]
        return []

    def _check_password(self, password: str, username: str) -> list[FieldError]:
        try:
            passwords.check_password_rules(
                password, username, self.policy.rules.sign_in.password_min_length
            )
        except InvalidData as exc:
            return exc.errors
        return []

    def create_user(
        self,
        actor: Actor,
        *,
        username: str,
        password: str,
        roles: list[str],
        agency: str,
        agency_kind: str | None = None,
        display_name: str | None = None,
        email: str | None = None,
    ) -> dict[str, Any]:
        """A new account in an agency (made if new: then its kind is needed). Every field
        at fault is named at once."""
        username, agency = (username or "").strip(), (agency or "").strip()
        display_name, email = (display_name or "").strip(), (email or "").strip() or None

        def make(s: Session, action: str) -> dict[str, Any]:
            errors: list[FieldError] = []
            if not USERNAME.match(username):
                errors.append(FieldError("username", "use 2-100 letters, digits, or . _ @ -"))
            elif s.execute(sa.select(User.id).where(User.username == username)).first():
                errors.append(FieldError("username", f"{username} is already taken"))
            if not display_name:
                errors.append(FieldError("display_name", "enter the person's full name"))
            elif len(display_name) > 200:
                errors.append(FieldError("display_name", "must be at most 200 characters"))
            if email and (len(email) > 320 or not EMAIL.match(email)):
                errors.append(FieldError("email", "enter an email address like name@example.org"))
            errors += self._check_agency(s, agency, agency_kind or None)
            errors += self._check_roles(roles)
            errors += self._check_password(password, username)
            if errors:
                raise InvalidData(errors)
            user = self.add_user(
                s, username=username, password=password, roles=roles, agency=agency,
                agency_kind=agency_kind or None, display_name=display_name, email=email,
            )  # fmt: skip
            out = self._describe(s, user)
            self.audit.record(
                s, actor, action, target=f"user:{user.id}",
                summary={"username": username, "roles": out["roles"], "agency": agency,
                         "agency_kind": out["agency_kind"]},
            )  # fmt: skip
            return out

        return self._managed(actor, "add", f"user:{username[:100]}", make)

    def set_roles(self, actor: Actor, user_id: int, roles: list[str]) -> dict[str, Any]:
        """Replace a user's roles. Administrators may not change their own."""

        def change(s: Session, action: str) -> dict[str, Any]:
            user = self._user_row(s, user_id)
            if user.id == actor.user_id:
                reason = "you cannot change your own roles: ask another administrator"
                raise InvalidData(FieldError("roles", reason))
            errors = self._check_roles(roles)
            if errors:
                raise InvalidData(errors)
            before = self._roles_of(s, user_id)
            after = sorted(dict.fromkeys(roles))
            s.execute(sa.delete(UserRole).where(UserRole.user_id == user_id))
            for r in after:
                s.add(UserRole(user_id=user_id, role=r))
            s.flush()
            self.audit.record(
                s, actor, action, target=f"user:{user_id}",
                summary={"username": user.username, "before": before, "after": after},
            )  # fmt: skip
            return self._describe(s, user)

        return self._managed(actor, "set_roles", f"user:{user_id}", change)

    def set_agency(
        self, actor: Actor, user_id: int, agency: str, agency_kind: str | None = None
    ) -> dict[str, Any]:
        """Move a user to another agency (made if new: then its kind is needed)."""
        agency = (agency or "").strip()

        def change(s: Session, action: str) -> dict[str, Any]:
            user = self._user_row(s, user_id)
            errors = self._check_agency(s, agency, agency_kind or None)
            if errors:
                raise InvalidData(errors)
            before = self._describe(s, user)
            user.agency_id = self.agency(s, agency, agency_kind or None)
            s.add(user)
            s.flush()
            after = self._describe(s, user)
            self.audit.record(
                s, actor, action, target=f"user:{user_id}",
                summary={"username": user.username,
                         "before": {"agency": before["agency"], "kind": before["agency_kind"]},
                         "after": {"agency": after["agency"], "kind": after["agency_kind"]}},
            )  # fmt: skip
            return after

        return self._managed(actor, "set_agency", f"user:{user_id}", change)

    def set_disabled(self, actor: Actor, user_id: int, disabled: bool) -> dict[str, Any]:
        """Disable (or enable again) an account. A disabled user cannot sign in, and their
        sessions and API tokens stop working at once (`actor_for_user` finds no one)."""
        verb = "disable" if disabled else "enable"

        def change(s: Session, action: str) -> dict[str, Any]:
            user = self._user_row(s, user_id)
            if user.id == actor.user_id:
                raise InvalidData(FieldError("disabled", f"you cannot {verb} your own account"))
            before = user.disabled
            user.disabled = disabled
            if disabled:
                user.session_generation += 1  # every session and token ends now
            s.add(user)
            s.flush()
            self.audit.record(
                s, actor, action, target=f"user:{user_id}",
                summary={"username": user.username, "was_disabled": before,
                         "disabled": disabled},
            )  # fmt: skip
            return self._describe(s, user)

        return self._managed(actor, verb, f"user:{user_id}", change)

    def reset_password(self, actor: Actor, user_id: int, password: str) -> dict[str, Any]:
        """Set a new password (the same rules as a new account's), clearing any lockout and
        ending every session the user had (someone else may have known the old one)."""

        def change(s: Session, action: str) -> dict[str, Any]:
            user = self._user_row(s, user_id)
            errors = self._check_password(password, user.username)
            if errors:
                raise InvalidData(errors)
            user.password_hash = passwords.hash_password(password, self.hasher)
            user.session_generation += 1  # sessions signed in with the old password end
            s.add(user)
            s.execute(sa.delete(LoginFailure).where(LoginFailure.username == user.username))
            s.flush()
            self.audit.record(
                s, actor, action, target=f"user:{user_id}", summary={"username": user.username}
            )
            return self._describe(s, user)

        return self._managed(actor, "reset_password", f"user:{user_id}", change)

    # --- sign-in -------------------------------------------------------------------------

    def sign_in(
        self,
        username: str,
        password: str,
        *,
        source: str,
        request_id: str | None,
        second_factor: Callable[[User], None] | None = None,
    ) -> tuple[str, Actor, int]:
        """Check a password; returns (token, actor, expires_in seconds).

        Five failures within the window lock the username for the lock period (429 with
        Retry-After). Every attempt, failed or not, is audited. `second_factor(user)`, once
        the password is right, may refuse to go on (accounts/second_factor.py: it audits
        and counts its own refusals).
        """
        now = self.clock.now()
        with self.db.transaction() as s:
            user = s.execute(sa.select(User).where(User.username == username)).scalar_one_or_none()
            # A username no account has is kept only as a keyed hash (audit.vocabulary):
            # it may be a password typed into the wrong box, and the log keeps it forever.
            named = username[:100] if user else unknown_username(self.audit.key, username)
            anon = self.access.actor(
                user_id=None, username=named, display_name=named, roles=[],
                source=source, request_id=request_id,
            )  # fmt: skip
            retry = self._locked_for(s, username, now)
            if retry:
                self.audit.record(
                    s, anon, f"{source}:auth:sign_in", outcome="refused",
                    target=f"user:{named}", summary={"reason": "locked"},
                )  # fmt: skip
        if retry:
            raise Locked(f"too many failed sign-ins; try again in {retry // 60 + 1} minutes", retry)
        good = passwords.verify_password(
            password,
            user.password_hash if user else passwords.dummy_hash(self.hasher),
            self.hasher,
        )
        if good and user is not None and not user.disabled and second_factor is not None:
            second_factor(user)
        with self.db.transaction() as s:
            if not good or user is None or user.disabled:
                s.add(LoginFailure(username=username[:100], at=now))
                self.audit.record(
                    s, anon, f"{source}:auth:sign_in", outcome="refused",
                    target=f"user:{named}", summary={"reason": "bad credentials"},
                )  # fmt: skip
                failed = True
            else:
                failed = False
                actor = self.actor_for_user(s, user.id, source=source, request_id=request_id)
                token, claims = tokens.issue(
                    user.id, self.secret, now, self.token_ttl, user.session_generation
                )
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

    def check_token(self, token: str) -> None:
        """The token's signature, type and expiry, without reading the database: a route
        that looks the actor up later still refuses a bad token before a bad body."""
        if self.api_keys is not None and token.startswith("rek_"):
            return self.api_keys.check(token)
        tokens.read(token, self.secret, self.clock.now())

    def actor_from_token(self, token: str, *, source: str, request_id: str | None) -> Actor:
        if self.api_keys is not None and token.startswith("rek_") and source == "api":
            return self.api_keys.actor_for_key(token, source=source, request_id=request_id)
        now = self.clock.now()
        claims = tokens.read(token, self.secret, now)
        with self.db.read_connection() as conn:
            row = self._actor_row(conn, claims.user_id, jti=claims.jti)
            if row is None:  # no such user: still say "revoked" if it was
                revoked = _REVOKED.first(conn, {"jti": claims.jti}) is not None
            else:
                revoked = bool(row.revoked)
        if revoked:
            raise Unauthorised("the token has been revoked (signed out)")
        if row is not None and row.session_generation != claims.generation:
            raise Unauthorised("the session has ended (password reset or account disabled)")
        actor = self._actor(row, source, request_id)
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
