"""Who may sign in through the identity provider, and as what (policies/identity.yaml).

A tenant (the ID token's `tid`) names the agency its staff belong to; values of the
`roles` or `groups` claim name the roles they hold. Validated at load like the other
policy files: a tenant's unknown agency kind or a mapping to an unknown role stops
start-up naming file, line and field, because a silently dropped mapping would either
lock people out or let them in as something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from referral_engine.errors import DefinitionError
from referral_engine.policies.policy import Policy, Strict
from referral_engine.policies.yamlfile import line_for, parse_model

FILE = "identity.yaml"
DEFAULT_ASK = "your organisation's IT service desk"


class Tenant(Strict):
    agency: str = Field(min_length=1, max_length=200)
    agency_kind: str
    ask: str | None = None


class IdentityFile(Strict):
    ask: str = DEFAULT_ASK
    tenants: dict[str, Tenant] = Field(default_factory=dict)
    roles: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # Roles whose password sign-in also needs a TOTP code (accounts/second_factor.py).
    second_factor_roles: tuple[str, ...] = ("admin", "auditor")


@dataclass(frozen=True)
class IdentityPolicy:
    tenants: dict[str, Tenant]
    role_map: dict[str, tuple[str, ...]]
    ask: str = DEFAULT_ASK
    second_factor_roles: frozenset[str] = frozenset({"admin", "auditor"})

    def tenant(self, tid: Any) -> Tenant | None:
        return self.tenants.get(tid) if isinstance(tid, str) else None

    def roles_for(self, claims: dict[str, Any]) -> list[str]:
        """The product's roles for these ID token claims: every value of `roles` (app
        roles) and `groups` that the policy maps, in the policy's order, no repeats.
        Anything else in those claims (a string where a list belongs) maps to nothing."""
        values: set[str] = set()
        for claim in ("roles", "groups"):
            given = claims.get(claim)
            if isinstance(given, list):
                values.update(v for v in given if isinstance(v, str))
        out: dict[str, None] = {}
        for value, roles in self.role_map.items():
            if value in values:
                out.update(dict.fromkeys(roles))
        return list(out)

    def whom_to_ask(self, tid: Any) -> str:
        tenant = self.tenant(tid)
        return (tenant.ask if tenant and tenant.ask else None) or self.ask


EMPTY = IdentityPolicy({}, {})


def load_identity(directory: Path, policy: Policy) -> IdentityPolicy:
    """identity.yaml of the policy directory; without one, nobody may sign in through a
    provider (an empty policy), which is what a password-only installation wants."""
    path = directory / FILE
    if not path.exists():
        return EMPTY
    data, lines = parse_model(IdentityFile, path)
    kinds = policy.reference.agency_kinds
    for tid, tenant in data.tenants.items():
        if tenant.agency_kind not in kinds:
            raise DefinitionError(
                str(path), line_for(lines, ("tenants", tid, "agency_kind")),
                f"tenants.{tid}.agency_kind",
                f"unknown agency kind {tenant.agency_kind!r}; kinds: {', '.join(kinds)}",
            )  # fmt: skip
    for value, roles in data.roles.items():
        if not roles:
            raise DefinitionError(
                str(path), line_for(lines, ("roles", value)), f"roles.{value}",
                "map the value to at least one role",
            )  # fmt: skip
        for i, role in enumerate(roles):
            if role not in policy.roles:
                raise DefinitionError(
                    str(path), line_for(lines, ("roles", value, i)), f"roles.{value}.{i}",
                    f"unknown role {role!r}; roles: {', '.join(policy.roles)}",
                )  # fmt: skip
    for i, role in enumerate(data.second_factor_roles):
        if role not in policy.roles:
            raise DefinitionError(
                str(path), line_for(lines, ("second_factor_roles", i)),
                f"second_factor_roles.{i}", f"unknown role {role!r}",
            )  # fmt: skip
    return IdentityPolicy(
        dict(data.tenants), dict(data.roles), data.ask, frozenset(data.second_factor_roles)
    )
