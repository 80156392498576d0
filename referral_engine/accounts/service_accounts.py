"""Service accounts: partner systems (a police or health records system sending
referrals) calling the API with a key instead of a person's sign-in.

Each is its own user (username `svc.<name>`) holding one role in one agency, so every
rule of need-to-know applies to it exactly as to a person with that role and agency;
it has no password and cannot sign in on the pages. The key, `rek_<id>_<secret>`, is
printed once by `service-accounts add`; only the SHA-256 of its secret is stored (a
random 256-bit secret needs no slow hash), looked up by its public id and compared in
constant time. Revoking disables the user, so the key stops at once.

Every use is audited (`api:auth:api_key`, allowed or refused with a reason code), and
so are adding, listing and revoking (`cli:service_account:<verb>`); the key never is.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import sqlalchemy as sa

from referral_engine.access.rules import Access, Actor
from referral_engine.accounts.users import Accounts
from referral_engine.audit.log import AuditLog
from referral_engine.clock import Clock
from referral_engine.errors import FieldError, InvalidData, NotFound, Unauthorised
from referral_engine.storage.db import Database
from referral_engine.storage.models import Agency, ServiceAccount, User, UserRole

PREFIX = "rek_"
KEY = re.compile(r"^rek_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,59}$")
NO_PASSWORD = "!service-account"  # noqa: S105 - never verifies as a password
# Roles a partner system may not hold: managing accounts, or reading everything.
REFUSED_ROLES = frozenset({"admin", "auditor"})


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_key(value: str) -> bool:
    return value.startswith(PREFIX)


class ServiceAccounts:
    def __init__(
        self, db: Database, access: Access, audit: AuditLog, clock: Clock, accounts: Accounts
    ):
        self.db, self.access, self.audit, self.clock = db, access, audit, clock
        self.accounts = accounts

    # --- managing (the command line) -----------------------------------------------------

    def add(
        self, actor: Actor, name: str, role: str, agency: str, agency_kind: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """A new service account and its key (returned once, never stored)."""
        name, agency = (name or "").strip(), (agency or "").strip()
        errors = []
        if not NAME.match(name):
            errors.append(FieldError("name", "use 2-60 lower-case letters, digits or -"))
        if role not in self.accounts.policy.roles:
            roles = ", ".join(r for r in self.accounts.policy.roles if r not in REFUSED_ROLES)
            errors.append(FieldError("role", f"unknown role {role!r}; roles: {roles}"))
        elif role in REFUSED_ROLES:
            errors.append(FieldError("role", f"a service account cannot hold the {role} role"))
        if not agency:
            errors.append(FieldError("agency", "name the partner agency the system belongs to"))
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        with self.db.transaction() as s:
            if (
                NAME.match(name)
                and s.execute(
                    sa.select(ServiceAccount.id).where(ServiceAccount.name == name)
                ).first()
            ):
                errors.append(FieldError("name", f"{name} is already taken"))
            if agency and not errors:
                known = s.execute(sa.select(Agency.id).where(Agency.name == agency)).first()
                if known is None and not agency_kind:
                    errors.append(
                        FieldError("agency_kind", f"{agency} is a new agency: give its kind")
                    )
            if errors:
                raise InvalidData(errors)
            user = User(
                username=f"svc.{name}", display_name=f"{name} (service account)",
                password_hash=NO_PASSWORD,
                agency_id=self.accounts.agency(s, agency, agency_kind),
            )  # fmt: skip
            s.add(user)
            s.flush()
            s.add(UserRole(user_id=user.id, role=role))  # type: ignore[arg-type]
            row = ServiceAccount(
                name=name, user_id=user.id, key_id=key_id, key_hash=_digest(secret)
            )  # type: ignore[arg-type]
            s.add(row)
            s.flush()
            self.audit.record(
                s, actor, f"{actor.source}:service_account:add",
                target=f"service_account:{row.id}",
                summary={"name": name, "role": role, "agency": agency, "key_id": key_id},
            )  # fmt: skip
            described = self._describe(s, row)
        return described, f"{PREFIX}{key_id}_{secret}"

    def _describe(self, s: Any, row: ServiceAccount) -> dict[str, Any]:
        user = s.get(User, row.user_id)
        agency = s.get(Agency, user.agency_id) if user and user.agency_id else None
        roles = list(
            s.execute(sa.select(UserRole.role).where(UserRole.user_id == row.user_id)).scalars()
        )
        return {
            "name": row.name, "key_id": row.key_id, "roles": roles,
            "agency": agency.name if agency else None,
            "agency_kind": agency.kind if agency else None,
            "created_at": row.created_at, "revoked_at": row.revoked_at,
        }  # fmt: skip

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        with self.db.transaction() as s:
            rows = s.execute(sa.select(ServiceAccount).order_by(ServiceAccount.name)).scalars()
            out = [self._describe(s, r) for r in rows]
            self.audit.record(
                s, actor, f"{actor.source}:service_account:list", target="service_accounts",
                summary={"listed": len(out)},
            )  # fmt: skip
        return out

    def revoke(self, actor: Actor, name: str) -> dict[str, Any]:
        """Stop the key now: the account's user is disabled (its sessions end too)."""
        with self.db.transaction() as s:
            row = s.execute(
                sa.select(ServiceAccount).where(ServiceAccount.name == (name or "").strip())
            ).scalar_one_or_none()
            if row is None:
                raise NotFound(f"no service account is called {name!r}")
            if row.revoked_at is None:
                row.revoked_at = self.clock.now()
                user = s.get(User, row.user_id)
                user.disabled = True  # type: ignore[union-attr]
                user.session_generation += 1  # type: ignore[union-attr]
                s.add_all([row, user])
                s.flush()
            self.audit.record(
                s, actor, f"{actor.source}:service_account:revoke",
                target=f"service_account:{row.id}", summary={"name": row.name},
            )  # fmt: skip
            return self._describe(s, row)

    # --- using a key (the API) -------------------------------------------------------------

    def check(self, key: str) -> None:
        """The key's shape only (no database read), like a token's signature check."""
        if not KEY.match(key):
            raise Unauthorised("the API key is not valid")

    def actor_for_key(self, key: str, *, source: str, request_id: str | None) -> Actor:
        """The service account behind a key, each use audited; Unauthorised otherwise."""
        found = KEY.match(key)
        with self.db.transaction() as s:
            row = None
            if found:
                row = s.execute(
                    sa.select(ServiceAccount).where(ServiceAccount.key_id == found.group(1))
                ).scalar_one_or_none()
            good = (
                row is not None and secrets.compare_digest(row.key_hash, _digest(found.group(2)))  # type: ignore[union-attr]
            )
            actor = None
            if good and row.revoked_at is None:  # type: ignore[union-attr]
                actor = self.accounts.actor_for_user(
                    s,
                    row.user_id,
                    source=source,
                    request_id=request_id,  # type: ignore[union-attr]
                )
            if actor is None:
                reason = "revoked" if good else "unknown key"
                anon = self.access.actor(
                    user_id=None, username="api-key", display_name="API key", roles=[],
                    source=source, request_id=request_id,
                )  # fmt: skip
                target = f"service_account:{row.id}" if good else "api_key"  # type: ignore[union-attr]
                self.audit.record(
                    s, anon, f"{source}:auth:api_key", outcome="refused", target=target,
                    summary={"reason": reason},
                )  # fmt: skip
            else:
                self.audit.record(
                    s, actor, f"{source}:auth:api_key", target=f"service_account:{row.id}",  # type: ignore[union-attr]
                    summary={"key_id": row.key_id},  # type: ignore[union-attr]
                )  # fmt: skip
        if actor is None:
            raise Unauthorised("the API key is not valid or has been revoked")
        return actor
