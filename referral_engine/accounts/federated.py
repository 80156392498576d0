"""Sign-in through the partnership's identity provider: start, come back, be someone.

`start` records a pending sign-in (state hashed, nonce, PKCE verifier, where to go next,
and a hash of a secret kept in the browser's cookie) and returns the provider's URL.
`finish` deletes that record first, in its own transaction, so a callback works once
whatever happens next; then exchanges the code, validates the ID token (oidc.py), checks
the tenant and roles against identity.yaml, finds the user by issuer + subject (or
provisions them, only for a mapped tenant), takes their agency and roles from the
provider, and issues the product's own session token exactly as a password sign-in does.

Every attempt is audited as `<source>:auth:sign_in` with `method: oidc`; a refusal with
its reason code (oidc.REASONS), never the claims' text.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.accounts import tokens
from referral_engine.accounts.oidc import Provider, SignInRefused, identity_key
from referral_engine.accounts.users import Accounts
from referral_engine.audit.log import AuditLog
from referral_engine.clock import Clock
from referral_engine.policies.identity import IdentityPolicy, Tenant
from referral_engine.storage.db import Database
from referral_engine.storage.models import ExternalIdentity, PendingSignIn, User, UserRole

PENDING_MINUTES = 10
# Never verifies as a password (not a hash passlib knows): a provider's user has none.
NO_PASSWORD = "!federated"  # noqa: S105
USERNAME_OK = re.compile(r"^[A-Za-z0-9_.@-]{2,90}$")
EMAIL_OK = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
METHOD = "oidc"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _clean(value: Any, limit: int) -> str | None:
    """A claim's text fit to store and show: control characters dropped, trimmed."""
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value if unicodedata.category(c)[0] != "C").strip()
    return text[:limit] or None


@dataclass(frozen=True)
class Started:
    url: str
    browser_secret: str


@dataclass(frozen=True)
class SignedIn:
    token: str
    actor: Actor
    expires_in: int
    next_url: str
    provisioned: bool


class FederatedSignIn:
    def __init__(
        self,
        db: Database,
        access: Access,
        audit: AuditLog,
        clock: Clock,
        accounts: Accounts,
        identity: IdentityPolicy,
        provider: Provider | None,
    ):
        """`accounts`: whose agencies, actors and token settings a provider's user shares
        with everyone else (the same agency row an administrator sees)."""
        self.db, self.access, self.audit, self.clock = db, access, audit, clock
        self.accounts, self.identity, self.provider = accounts, identity, provider

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def _provider(self) -> Provider:
        if self.provider is None:
            raise SignInRefused("provider_unreachable", "Sign-in through an organisation is off.")
        return self.provider

    # --- out to the provider -------------------------------------------------------------

    def start(self, redirect_uri: str, next_url: str) -> Started:
        provider = self._provider()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, browser = secrets.token_urlsafe(64), secrets.token_urlsafe(32)
        url = provider.authorization_url(
            redirect_uri, state=state, nonce=nonce, code_verifier=verifier
        )
        now = self.clock.now()
        with self.db.transaction() as s:
            s.execute(sa.delete(PendingSignIn).where(PendingSignIn.expires_at < now))
            s.add(
                PendingSignIn(
                    state_hash=_digest(state), browser_hash=_digest(browser), nonce=nonce,
                    code_verifier=verifier, next_url=next_url[:500],
                    expires_at=now + timedelta(minutes=PENDING_MINUTES),
                )
            )  # fmt: skip
        return Started(url, browser)

    # --- back from the provider ----------------------------------------------------------

    def finish(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
        browser_secret: str | None,
        redirect_uri: str,
        source: str,
        request_id: str | None,
    ) -> SignedIn:
        try:
            return self._finish(state, code, error, browser_secret, redirect_uri, source,
                                request_id)  # fmt: skip
        except SignInRefused as exc:
            anon = self.access.actor(
                user_id=None, username=METHOD, display_name="Identity provider sign-in",
                roles=[], source=source, request_id=request_id,
            )  # fmt: skip
            with self.db.transaction() as s:
                self.audit.record(
                    s, anon, f"{source}:auth:sign_in", outcome="refused", target=METHOD,
                    summary={"method": METHOD, "reason": exc.reason},
                )  # fmt: skip
            raise

    def _consume(self, state: str | None, browser_secret: str | None) -> PendingSignIn:
        """The pending sign-in this callback belongs to, deleted now (one use only)."""
        expired = SignInRefused(
            "state", "This sign-in link has expired or was already used. Please sign in again."
        )
        if not state:
            raise expired
        table = PendingSignIn.__table__
        with self.db.transaction() as s:
            row = s.execute(
                table.delete().where(table.c.state_hash == _digest(state)).returning(
                    table.c.browser_hash, table.c.nonce, table.c.code_verifier,
                    table.c.next_url, table.c.expires_at,
                )
            ).first()  # fmt: skip
        if row is None or row.expires_at <= self.clock.now():
            raise expired
        # Spent above whoever presented it: a callback seen by someone else (a log, a
        # Referer) is refused to them, and to the browser that started it, once tried.
        if not secrets.compare_digest(row.browser_hash, _digest(browser_secret or "")):
            raise expired
        return PendingSignIn(state_hash=_digest(state), **row._asdict())

    def _finish(
        self,
        state: str | None,
        code: str | None,
        error: str | None,
        browser_secret: str | None,
        redirect_uri: str,
        source: str,
        request_id: str | None,
    ) -> SignedIn:
        provider = self._provider()
        pending = self._consume(state, browser_secret)
        if error or not code:
            raise SignInRefused(
                "provider_refused",
                "Your organisation's sign-in page did not sign you in. Please try again.",
            )
        answer = provider.exchange(code, redirect_uri, pending.code_verifier)
        now = self.clock.now()
        claims = provider.validate(
            answer["id_token"], nonce=pending.nonce, now=now,
            access_token=answer.get("access_token"),
        )  # fmt: skip
        tenant = self.identity.tenant(claims.get("tid"))
        if tenant is None:
            raise SignInRefused(
                "tenant",
                "Your organisation is not set up to sign in to Referral Engine. Ask the "
                "safeguarding partnership's Referral Engine administrator to add it.",
            )
        roles = self.identity.roles_for(claims)
        if not roles:
            raise SignInRefused(
                "no_role",
                "You signed in, but your account has no role in Referral Engine yet. Ask "
                f"{self.identity.whom_to_ask(claims.get('tid'))} to give you one, then "
                "sign in again.",
            )
        issuer, subject = identity_key(provider.metadata()["issuer"], claims)
        with self.db.transaction() as s:
            user, provisioned = self._user(s, issuer, subject, claims, tenant, roles, now)
            if user.disabled:
                raise SignInRefused(
                    "disabled",
                    "This account has been disabled. Ask your Referral Engine administrator.",
                )
            actor = self.accounts.actor_for_user(
                s,
                user.id,
                source=source,
                request_id=request_id,  # type: ignore[arg-type]
            )
            assert actor is not None
            token, issued = tokens.issue(
                user.id,  # type: ignore[arg-type]
                self.accounts.secret, now, self.accounts.token_ttl, user.session_generation,
            )  # fmt: skip
            self.audit.record(
                s, actor, f"{source}:auth:sign_in", target=f"user:{user.id}",
                summary={"method": METHOD, "jti": issued.jti, "provisioned": provisioned,
                         "roles": roles},
            )  # fmt: skip
        return SignedIn(
            token,
            actor,
            int(self.accounts.token_ttl.total_seconds()),
            pending.next_url,
            provisioned,
        )

    def _user(
        self,
        s: Session,
        issuer: str,
        subject: str,
        claims: dict[str, Any],
        tenant: Tenant,
        roles: list[str],
        now: datetime,
    ) -> tuple[User, bool]:
        """The user behind (issuer, subject), made on first sign-in; their agency, roles,
        name and email as the provider says now."""
        link = s.execute(
            sa.select(ExternalIdentity).where(
                ExternalIdentity.issuer == issuer, ExternalIdentity.subject == subject
            )
        ).scalar_one_or_none()
        agency_id = self.accounts.agency(s, tenant.agency, tenant.agency_kind)
        name = _clean(claims.get("name"), 200)
        email = _clean(claims.get("email"), 320)
        if email and not EMAIL_OK.match(email):
            email = None
        provisioned = link is None
        if link is None:
            user = User(
                username=self._free_username(s, claims, issuer, subject),
                display_name=name or "New user", email=email,
                password_hash=NO_PASSWORD, agency_id=agency_id,
            )  # fmt: skip
            s.add(user)
            s.flush()
            if name is None:
                user.display_name = user.username
            link = ExternalIdentity(
                user_id=user.id, issuer=issuer, subject=subject,  # type: ignore[arg-type]
                tenant=_clean(claims.get("tid"), 100),
            )  # fmt: skip
        else:
            user = s.get(User, link.user_id)  # type: ignore[assignment]
            user.agency_id = agency_id
            user.display_name = name or user.display_name
            user.email = email or user.email
        link.last_sign_in_at = now
        s.add_all([user, link])
        held = set(s.execute(sa.select(UserRole.role).where(UserRole.user_id == user.id)).scalars())
        if held != set(roles):
            s.execute(sa.delete(UserRole).where(UserRole.user_id == user.id))
            s.add_all(UserRole(user_id=user.id, role=r) for r in roles)  # type: ignore[arg-type]
        s.flush()
        return user, provisioned

    @staticmethod
    def _free_username(s: Session, claims: dict[str, Any], issuer: str, subject: str) -> str:
        """A readable username not yet taken: the provider's `preferred_username` (or
        email), with a number if someone already has it (never joined to that account),
        else one made from the identity key."""
        fallback = "user-" + _digest(f"{issuer}|{subject}")[:12]
        for claim in ("preferred_username", "email"):
            base = _clean(claims.get(claim), 90)
            if base and USERNAME_OK.match(base):
                break
        else:
            base = fallback
        taken = set(
            s.execute(
                sa.select(User.username).where(
                    sa.or_(User.username == base, User.username.like(f"{base}-%"))
                )
            ).scalars()
        )
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    # --- signing out ---------------------------------------------------------------------

    def has_identity(self, user_id: int | None) -> bool:
        """Whether this user signs in through the provider (so signs out there too)."""
        if user_id is None or self.provider is None:
            return False
        with self.db.reading() as s:
            return (
                s.execute(
                    sa.select(ExternalIdentity.id).where(ExternalIdentity.user_id == user_id)
                ).first()
                is not None
            )

    def logout_url(self, post_logout_redirect_uri: str) -> str | None:
        return self.provider.logout_url(post_logout_redirect_uri) if self.provider else None
