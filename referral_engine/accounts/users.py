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
from referral_engine.accounts import grants, links, passwords, tokens
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
    Outbox,
    RevokedToken,
    RoleRequest,
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
LINK_DEAD = (
    "This link has expired or has already been used. Ask your administrator to send a new one."
)


def _check_text(field: str, value: str, max_length: int) -> list[FieldError]:
    """A single line of text a person typed: within its length, no control characters
    (a CR or LF in a name would break the mail headers it is written into)."""
    if len(value) > max_length:
        return [FieldError(field, f"must be at most {max_length} characters")]
    if passwords.has_control(value):
        return [FieldError(field, "must not contain line breaks, tabs or other control characters")]
    return []


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
        link_ttl: timedelta = timedelta(hours=24),
        max_session: timedelta = timedelta(hours=10),
    ):
        self.db, self.access, self.policy, self.clock, self.audit = db, access, policy, clock, audit
        self.secret, self.hasher, self.token_ttl = secret, hasher, token_ttl
        self.link_ttl, self.max_session = link_ttl, max_session

    # --- users ---------------------------------------------------------------------------

    def add_user(
        self,
        s: Session,
        *,
        username: str,
        password: str | None,
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
        if not roles and password is not None:
            errors.append(FieldError("role", "give at least one role"))
        kinds = self.policy.reference.agency_kinds
        if agency_kind is not None and agency_kind not in kinds:
            errors.append(
                FieldError(
                    "agency_kind", f"unknown kind {agency_kind!r}; kinds: {', '.join(kinds)}"
                )
            )
        for field, value, longest in (
            ("display_name", display_name, 200),
            ("agency", agency, 200),
            ("email", email, 320),
        ):
            errors += _check_text(field, value or "", longest)
        if errors:
            raise InvalidData(errors)
        if password is not None:
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
            # None: the person sets their own through a one-time link (`_send_link`).
            password_hash=passwords.UNUSABLE
            if password is None
            else passwords.hash_password(password, self.hasher),
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
            "pending_roles": self._pending_of(s, user.id),  # type: ignore[arg-type]
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
    def _pending_of(s: Session, user_id: int) -> list[str]:
        return list(
            s.execute(
                sa.select(RoleRequest.role)
                .where(RoleRequest.user_id == user_id, RoleRequest.decided_at.is_(None))
                .order_by(RoleRequest.role)
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
        if problems := _check_text("agency", name, 200):
            return problems
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
        roles: list[str],
        agency: str,
        email: str,
        agency_kind: str | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        """A new account in an agency (made if new: then its kind is needed). Every field
        at fault is named at once. The administrator sets no password: the person gets a
        one-time link at `email` to set their own. Roles that read case content are not
        held yet: they wait for a second person's approval (`grants`)."""
        username, agency = (username or "").strip(), (agency or "").strip()
        display_name, email = (display_name or "").strip(), (email or "").strip()

        def make(s: Session, action: str) -> dict[str, Any]:
            errors: list[FieldError] = []
            if not USERNAME.match(username):
                errors.append(FieldError("username", "use 2-100 letters, digits, or . _ @ -"))
            elif s.execute(sa.select(User.id).where(User.username == username)).first():
                errors.append(FieldError("username", f"{username} is already taken"))
            if not display_name:
                errors.append(FieldError("display_name", "enter the person's full name"))
            else:
                errors += _check_text("display_name", display_name, 200)
            if not email:
                errors.append(
                    FieldError("email", "enter the person's work email: their link to set a "
                               "password is sent there")
                )  # fmt: skip
            elif len(email) > 320 or not EMAIL.match(email):
                errors.append(FieldError("email", "enter an email address like name@example.org"))
            errors += self._check_agency(s, agency, agency_kind or None)
            errors += self._check_roles(roles)
            if errors:
                raise InvalidData(errors)
            direct = [r for r in roles if not grants.needs_approval(self.policy, r)]
            user = self.add_user(
                s, username=username, password=None, roles=direct, agency=agency,
                agency_kind=agency_kind or None, display_name=display_name, email=email,
            )  # fmt: skip
            pending = self._request_roles(s, actor, user.id, roles)  # type: ignore[arg-type]
            self._send_link(s, user, "new")
            out = self._describe(s, user)
            self.audit.record(
                s, actor, action, target=f"user:{user.id}",
                summary={"username": username, "roles": out["roles"], "pending": pending,
                         "agency": agency, "agency_kind": out["agency_kind"]},
            )  # fmt: skip
            return out

        return self._managed(actor, "add", f"user:{username[:100]}", make)

    def _request_roles(
        self, s: Session, actor: Actor, user_id: int, wanted: list[str]
    ) -> list[str]:
        """Open a request for each wanted role that needs approval and is neither held nor
        asked for already; withdraw open requests for roles no longer wanted. Returns the
        roles now waiting."""
        held = set(self._roles_of(s, user_id))
        now = self.clock.now()
        s.execute(
            sa.update(RoleRequest)
            .where(RoleRequest.user_id == user_id, RoleRequest.decided_at.is_(None),
                   RoleRequest.role.not_in(list(wanted) or [""]))
            .values(decided_at=now, decided_by_id=actor.user_id, outcome="withdrawn")
        )  # fmt: skip
        open_ = set(self._pending_of(s, user_id))
        for role in dict.fromkeys(wanted):
            if role in held or role in open_ or not grants.needs_approval(self.policy, role):
                continue
            s.add(RoleRequest(user_id=user_id, role=role, requested_by_id=actor.user_id,
                              requested_at=now))  # fmt: skip
        s.flush()
        return self._pending_of(s, user_id)

    def _send_link(self, s: Session, user: User, purpose: str) -> None:
        """A one-time set-password link, to the account's own email (never shown here)."""
        secret = links.issue(s, user.id, purpose, self.clock.now(), self.link_ttl)  # type: ignore[arg-type]
        s.add(
            Outbox(
                kind="password_link", recipient_user_id=user.id,
                payload={"secret": secret, "purpose": purpose},
                dedupe_key=f"password_link:{links.digest(secret)[:32]}",
            )
        )  # fmt: skip
        s.flush()

    def set_roles(self, actor: Actor, user_id: int, roles: list[str]) -> dict[str, Any]:
        """Replace a user's roles. Administrators may not change their own. A role taken
        away goes at once; a new role that reads case content waits for approval."""

        def change(s: Session, action: str) -> dict[str, Any]:
            user = self._user_row(s, user_id)
            if user.id == actor.user_id:
                reason = "you cannot change your own roles: ask another administrator"
                raise InvalidData(FieldError("roles", reason))
            errors = self._check_roles(roles)
            if errors:
                raise InvalidData(errors)
            before = self._roles_of(s, user_id)
            wanted = sorted(dict.fromkeys(roles))
            after = [r for r in wanted if r in before or not grants.needs_approval(self.policy, r)]
            s.execute(sa.delete(UserRole).where(UserRole.user_id == user_id))
            for r in after:
                s.add(UserRole(user_id=user_id, role=r))
            s.flush()
            pending = self._request_roles(s, actor, user_id, wanted)
            self.audit.record(
                s, actor, action, target=f"user:{user_id}",
                summary={"username": user.username, "before": before, "after": after,
                         "pending": pending},
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

    def reset_password(self, actor: Actor, user_id: int) -> dict[str, Any]:
        """Send the user a one-time link to set a new password of their own. The old
        password stops working, any lockout is cleared and every session ends (someone
        else may have known the old one). The administrator never sees the link."""

        def change(s: Session, action: str) -> dict[str, Any]:
            user = self._user_row(s, user_id)
            if not user.email:
                raise InvalidData(
                    FieldError("email", "this account has no email address, so no link can "
                               "be sent; the server's operator can set one with the "
                               "command line")
                )  # fmt: skip
            user.password_hash = passwords.UNUSABLE
            user.session_generation += 1  # sessions signed in with the old password end
            s.add(user)
            s.execute(sa.delete(LoginFailure).where(LoginFailure.username == user.username))
            self._send_link(s, user, "reset")
            self.audit.record(
                s, actor, action, target=f"user:{user_id}", summary={"username": user.username}
            )
            return self._describe(s, user)

        return self._managed(actor, "reset_password", f"user:{user_id}", change)

    # --- approving roles that read case content (access:grant:approve) ---------------------

    def role_requests(self, actor: Actor) -> list[dict[str, Any]]:
        """Roles waiting for approval, oldest first, for a holder of access:grant:approve."""
        action = f"{actor.source}:grant:list"
        if not self.access.can(actor, grants.APPROVE):
            with self.db.transaction() as s:
                self.audit.record(s, actor, action, outcome="refused", target="role_requests")
            raise Forbidden("only access approvers may see roles waiting for approval")
        with self.db.transaction() as s:
            asker = sa.orm.aliased(User)
            rows = s.execute(
                sa.select(RoleRequest, User, asker.display_name, Agency.name)
                .join(User, User.id == RoleRequest.user_id)
                .join(asker, asker.id == RoleRequest.requested_by_id)
                .outerjoin(Agency, Agency.id == User.agency_id)
                .where(RoleRequest.decided_at.is_(None))
                .order_by(RoleRequest.requested_at, RoleRequest.id)
            ).all()
            out = [
                {"id": r.id, "role": r.role, "user_id": u.id, "username": u.username,
                 "display_name": u.display_name, "email": u.email, "agency": agency,
                 "requested_by": by, "requested_by_id": r.requested_by_id,
                 "requested_at": r.requested_at.isoformat(), "disabled": u.disabled,
                 "yours": actor.user_id in (r.requested_by_id, u.id)}
                for r, u, by, agency in rows
            ]  # fmt: skip
            self.audit.record(
                s, actor, action, target="role_requests", summary={"listed": [o["id"] for o in out]}
            )
        return out

    def decide_role_request(self, actor: Actor, request_id: int, approve: bool) -> dict[str, Any]:
        """Approve (the user holds the role from now) or refuse a waiting role. Never the
        person who asked for it, and never a role for oneself."""
        verb = "approve" if approve else "refuse"
        action = f"{actor.source}:grant:{verb}"
        target = f"role_request:{request_id}"
        try:
            if not self.access.can(actor, grants.APPROVE):
                raise Forbidden("only access approvers may approve roles")
            with self.db.transaction() as s:
                req = s.get(RoleRequest, request_id)
                if req is None or req.decided_at is not None:
                    raise NotFound("that request is not waiting for a decision")
                if req.requested_by_id == actor.user_id:
                    raise Forbidden("you asked for this role: another approver must decide")
                if req.user_id == actor.user_id:
                    raise Forbidden("you cannot decide a role for yourself")
                user = self._user_row(s, req.user_id)
                req.decided_at, req.decided_by_id = self.clock.now(), actor.user_id
                req.outcome = "approved" if approve else "refused"
                s.add(req)
                if approve and req.role not in self._roles_of(s, req.user_id):
                    s.add(UserRole(user_id=req.user_id, role=req.role))
                s.flush()
                self.audit.record(
                    s, actor, action, target=target,
                    summary={"user_id": req.user_id, "username": user.username,
                             "role": req.role, "requested_by_id": req.requested_by_id},
                )  # fmt: skip
                return {"id": req.id, "role": req.role, "user_id": req.user_id,
                        "outcome": req.outcome}  # fmt: skip
        except DomainError as exc:
            with self.db.transaction() as s:
                self.audit.record(
                    s, actor, action, outcome="refused", target=target,
                    summary={"status": exc.status},
                )  # fmt: skip
            raise

    # --- setting one's own password through a one-time link --------------------------------

    def password_link(self, secret: str, *, source: str, request_id: str | None) -> dict[str, Any]:
        """Whose live link this is (to greet them on the form); NotFound if it is not live."""
        with self.db.transaction() as s:
            link = links.find(s, secret, self.clock.now())
            user = s.get(User, link.user_id) if link else None
            if user is None or user.disabled:
                self.audit.record(
                    s, self._anonymous("", source, request_id), f"{source}:auth:password_link",
                    outcome="refused", target="password_link",
                )  # fmt: skip
                raise NotFound(LINK_DEAD)
            who = self.actor_for_user(s, user.id, source=source, request_id=request_id)  # type: ignore[arg-type]
            self.audit.record(s, who, f"{source}:auth:password_link", target=f"user:{user.id}")  # type: ignore[arg-type]
            return {"username": user.username, "display_name": user.display_name,
                    "purpose": link.purpose}  # type: ignore[union-attr]  # fmt: skip

    def set_password_with_link(
        self, secret: str, password: str, *, source: str, request_id: str | None
    ) -> str:
        """Set the link's user's password (the usual rules), once; returns the username.
        Ends every earlier session and clears any lockout."""
        action = f"{source}:auth:set_password"
        with self.db.transaction() as s:
            link = links.find(s, secret, self.clock.now())
            user = s.get(User, link.user_id) if link else None
            if link is None or user is None or user.disabled:
                dead = True
            else:
                dead = False
                errors = self._check_password(password, user.username)
                if errors:
                    raise InvalidData(errors)
                user.password_hash = passwords.hash_password(password, self.hasher)
                user.session_generation += 1
                link.used_at = self.clock.now()
                s.add_all([user, link])
                s.execute(sa.delete(LoginFailure).where(LoginFailure.username == user.username))
                s.flush()
                who = self.actor_for_user(s, user.id, source=source, request_id=request_id)  # type: ignore[arg-type]
                self.audit.record(s, who, action, target=f"user:{user.id}",  # type: ignore[arg-type]
                                  summary={"purpose": link.purpose})  # fmt: skip
                return user.username
        with self.db.transaction() as s:
            self.audit.record(
                s, self._anonymous("", source, request_id), action, outcome="refused",
                target="password_link",
            )  # fmt: skip
        assert dead
        raise NotFound(LINK_DEAD)

    def _anonymous(self, username: str, source: str, request_id: str | None) -> Actor:
        return self.access.actor(
            user_id=None, username=username[:100], display_name=username[:100], roles=[],
            source=source, request_id=request_id,
        )  # fmt: skip

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
        Retry-After). The attempt is counted as a failure *before* the password is hashed,
        in the same transaction as the check (one at a time per username: SQLite's write
        lock, a PostgreSQL advisory lock), and uncounted only if it succeeds. So however
        many sign-ins arrive at once, at most `max_failures` wrong guesses are ever
        checked per window. Every attempt, failed or not, is audited. `second_factor(user)`,
        once the password is right, may refuse to go on (accounts/second_factor.py: it
        audits and counts its own refusals).
        """
        now = self.clock.now()
        with self.db.transaction() as s:
            self._one_at_a_time(s, username)
            user = s.execute(sa.select(User).where(User.username == username)).scalar_one_or_none()
            # A username no account has is kept only as a keyed hash (audit.vocabulary):
            # it may be a password typed into the wrong box, and the log keeps it forever.
            named = username[:100] if user else unknown_username(self.audit.key, username)
            anon = self._anonymous(named, source, request_id)
            retry = self._locked_for(s, username, now)
            if retry:
                self.audit.record(
                    s, anon, f"{source}:auth:sign_in", outcome="refused",
                    target=f"user:{named}", summary={"reason": "locked"},
                )  # fmt: skip
            else:
                attempt = LoginFailure(username=username[:100], at=now)
                s.add(attempt)
                s.flush()
                attempt_id = attempt.id
        if retry:
            raise Locked(f"too many failed sign-ins; try again in {retry // 60 + 1} minutes", retry)
        # Too long a password is a wrong one, refused without hashing it (it could only
        # be a guess: no password that long can be set).
        good = len(password) <= passwords.MAX_LENGTH and passwords.verify_password(
            password,
            user.password_hash if user else passwords.dummy_hash(self.hasher),
            self.hasher,
        )
        if good and user is not None and not user.disabled and second_factor is not None:
            # The password was right: its attempt is no failure, whatever the second
            # factor says next (a wrong code is counted there, as a failure of its own).
            with self.db.transaction() as s:
                s.execute(sa.delete(LoginFailure).where(LoginFailure.id == attempt_id))
            second_factor(user)
        with self.db.transaction() as s:
            if not good or user is None or user.disabled:
                # The attempt counted above stays, as this failure.
                self.audit.record(
                    s, anon, f"{source}:auth:sign_in", outcome="refused",
                    target=f"user:{named}", summary={"reason": "bad credentials"},
                )  # fmt: skip
                failed = True
            else:
                failed = False
                s.execute(sa.delete(LoginFailure).where(LoginFailure.id == attempt_id))
                actor = self.actor_for_user(s, user.id, source=source, request_id=request_id)
                token, claims = tokens.issue(
                    user.id, self.secret, now, min(self.token_ttl, self.max_session),
                    user.session_generation,
                )  # fmt: skip
                self.audit.record(
                    s, actor, f"{source}:auth:sign_in", target=f"user:{user.id}",
                    summary={"jti": claims.jti},
                )  # fmt: skip
        if failed:
            raise Unauthorised("the username or password is not right")
        return token, actor, int(self.token_ttl.total_seconds())

    def _one_at_a_time(self, s: Session, username: str) -> None:
        """Serialise sign-in checks for one username until this transaction ends. SQLite
        already runs one writer at a time (BEGIN IMMEDIATE); on PostgreSQL a transaction
        advisory lock keyed on the username does it without locking anyone else."""
        if self.db.is_postgres:
            s.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"sign_in:{username[:100]}"},
            )

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

    def renew(self, token: str, actor: Actor) -> tuple[str, int]:
        """A fresh token for a live session ("Stay signed in"): another idle period, but
        never past the absolute lifetime counted from the password sign-in. Returns the
        token and its seconds; Unauthorised once the lifetime is used up."""
        now = self.clock.now()
        claims = tokens.read(token, self.secret, now)
        started = claims.signed_in_at or now
        ttl = min(self.token_ttl, started + self.max_session - now)
        if ttl.total_seconds() < 60:
            raise Unauthorised("the session has reached its longest lifetime; sign in again")
        with self.db.transaction() as s:
            generation = s.execute(
                sa.select(User.session_generation).where(User.id == actor.user_id)
            ).scalar_one()
            new, fresh = tokens.issue(
                actor.user_id, self.secret, now, ttl, generation, signed_in_at=started
            )  # type: ignore[arg-type]
            self.audit.record(
                s, actor, f"{actor.source}:auth:renew", target=f"user:{actor.user_id}",
                summary={"jti": fresh.jti, "was": claims.jti},
            )  # fmt: skip
        return new, int(ttl.total_seconds())

    def sign_out(self, token: str, actor: Actor) -> None:
        claims = tokens.read(token, self.secret, self.clock.now())
        with self.db.transaction() as s:
            if s.get(RevokedToken, claims.jti) is None:
                s.add(RevokedToken(jti=claims.jti, expires_at=claims.expires_at))
            self.audit.record(
                s, actor, f"{actor.source}:auth:sign_out", target=f"user:{actor.user_id}",
                summary={"jti": claims.jti},
            )  # fmt: skip
