"""Who may do what, and see which cases.

Code asks for a permission (`can(actor, "mash:case:decide", case)`), never for a role;
roles map to permissions in policies/roles.yaml. Which cases an actor may see is one SQL
clause, `visible_cases(actor)`, used by every list, count, search and report, so a case
outside someone's need-to-know can never leak through a list filtered afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import sqlalchemy as sa

from .models import Case
from .policies import Grant, Policy


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    username: str
    display_name: str
    roles: tuple[str, ...]
    agency_id: int | None
    agency_name: str | None
    agency_kind: str | None
    grants: tuple[Grant, ...]
    source: str = "api"
    request_id: str | None = None

    def via(self, source: str, request_id: str | None = None) -> Actor:
        return replace(self, source=source, request_id=request_id or self.request_id)

    def describe(self) -> dict[str, Any]:
        """The actor as frozen into audit rows and history."""
        return {
            "id": self.user_id,
            "username": self.username,
            "name": self.display_name,
            "roles": list(self.roles),
            "agency": self.agency_name,
        }


SYSTEM = Actor(
    user_id=None,
    username="system",
    display_name="Referral Engine (scheduled)",
    roles=("system",),
    agency_id=None,
    agency_name=None,
    agency_kind=None,
    grants=(Grant(permission="*:*:*"),),
    source="tick",
)


class CaseLike(Protocol):
    pathway: str
    allocated_to_id: int | None
    agency_id: int | None


class Access:
    def __init__(self, policy: Policy, pathways: frozenset[str] | set[str]):
        self.policy = policy
        self.pathways = frozenset(pathways)

    def actor(
        self,
        *,
        user_id: int | None,
        username: str,
        display_name: str,
        roles: list[str] | tuple[str, ...],
        agency_id: int | None = None,
        agency_name: str | None = None,
        agency_kind: str | None = None,
        source: str = "api",
        request_id: str | None = None,
    ) -> Actor:
        grants = tuple(
            g
            for g in self.policy.grants_for(tuple(roles))
            if not g.when_agency_kind or agency_kind in g.when_agency_kind
        )
        return Actor(
            user_id, username, display_name, tuple(roles), agency_id, agency_name, agency_kind,
            grants, source, request_id,
        )  # fmt: skip

    def can(self, actor: Actor, permission: str, case: CaseLike | None = None) -> bool:
        """Whether `actor` holds `permission`, for this `case` when one is given.

        A grant limited to allocated or own-agency cases counts without a case (the actor
        has the permission for some cases) and is checked against the case when there is one.
        """
        return any(
            self._grant_covers(actor, g, case) for g in actor.grants if g.matches(permission)
        )

    @staticmethod
    def _grant_covers(actor: Actor, grant: Grant, case: CaseLike | None) -> bool:
        if case is None or grant.only is None:
            return True
        if grant.only == "allocated":
            return actor.user_id is not None and case.allocated_to_id == actor.user_id
        if grant.only == "own_agency":
            return actor.agency_id is not None and case.agency_id == actor.agency_id
        return False

    def can_see(self, actor: Actor, case: CaseLike) -> bool:
        return self.can(actor, f"{case.pathway}:case:view", case)

    def visible_cases(self, actor: Actor, table: Any = Case) -> sa.ColumnElement[bool]:
        """The SQL condition for "cases this actor may see"; the only such rule."""
        whole: list[str] = []
        partial: list[sa.ColumnElement[bool]] = []
        for pathway in sorted(self.pathways):
            grants = [g for g in actor.grants if g.matches(f"{pathway}:case:view")]
            if any(g.only is None for g in grants):
                whole.append(pathway)
                continue
            for g in grants:
                if g.only == "allocated" and actor.user_id is not None:
                    partial.append(
                        sa.and_(table.pathway == pathway, table.allocated_to_id == actor.user_id)
                    )
                elif g.only == "own_agency" and actor.agency_id is not None:
                    partial.append(
                        sa.and_(table.pathway == pathway, table.agency_id == actor.agency_id)
                    )
        if len(whole) == len(self.pathways) and not partial:
            return sa.true()
        clauses = ([table.pathway.in_(whole)] if whole else []) + partial
        return sa.or_(*clauses) if clauses else sa.false()

    def visible_pathways(self, actor: Actor) -> list[str]:
        return [p for p in sorted(self.pathways) if self.can(actor, f"{p}:case:view")]
