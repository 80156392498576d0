"""Who may do what, and see which cases.

Code asks for a permission (`can(actor, "mash:case:decide", case)`), never for a role;
roles map to permissions in policies/roles.yaml. Which cases an actor may see is one SQL
clause, `visible_cases(actor)`, used by every list, count, search and report, so a case
outside someone's need-to-know can never leak through a list filtered afterwards.

Need-to-know can be broken for one case with a reason ("break-glass", see breakglass.py):
the actor then carries that case's id in `glass` until the grant expires, which lets them
read (view and history) that case, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import sqlalchemy as sa

from referral_engine.errors import NotFound, ReasonRequired
from referral_engine.policies.policy import Grant, Policy
from referral_engine.storage.models import Case, Outbox

# What a reader who may not see a pathway reads in place of its name (`redact_pathways`).
HIDDEN_PATHWAY = "another referral (not shown to you)"

# What an open break-glass grant allows on its case: reading, never changing.
GLASS_RESOURCES = ("case", "history")


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
    # Cases opened with a reason whose time has not run out (break-glass grants).
    glass: frozenset[int] = frozenset()
    # Which of `grants` match each permission asked about: a page asks a dozen times,
    # and scanning every grant each time was a measurable part of answering a request.
    # `Access.actor` hands every actor with the same roles and agency kind (so the same
    # grants) one shared map; any other actor, `replace` included, starts a fresh one, so
    # a map never serves grants other than those it was filled from.
    _matching: dict[str, tuple[Grant, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def grants_for(self, permission: str) -> tuple[Grant, ...]:
        got = self._matching.get(permission)
        if got is None:
            got = self._matching[permission] = tuple(
                g for g in self.grants if g.matches(permission)
            )
        return got

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
    id: int | None
    pathway: str
    allocated_to_id: int | None
    agency_id: int | None


class Access:
    def __init__(self, policy: Policy, pathways: frozenset[str] | set[str]):
        self.policy = policy
        self.pathways = frozenset(pathways)
        # (roles, agency kind) -> the grants they give, and the permission map shared by
        # every actor holding them (see `Actor._matching`).
        self._grant_sets: dict[
            tuple[tuple[str, ...], str | None],
            tuple[tuple[Grant, ...], dict[str, tuple[Grant, ...]]],
        ] = {}

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
        glass: frozenset[int] = frozenset(),
    ) -> Actor:
        key = (tuple(roles), agency_kind)
        known = self._grant_sets.get(key)
        if known is None:
            grants = tuple(
                g
                for g in self.policy.grants_for(key[0])
                if not g.when_agency_kind or agency_kind in g.when_agency_kind
            )
            known = self._grant_sets[key] = (grants, {})
        actor = Actor(
            user_id, username, display_name, key[0], agency_id, agency_name, agency_kind,
            known[0], source, request_id, frozenset(glass),
        )  # fmt: skip
        object.__setattr__(actor, "_matching", known[1])  # frozen: set once, here
        return actor

    def can(self, actor: Actor, permission: str, case: CaseLike | None = None) -> bool:
        """Whether `actor` holds `permission`, for this `case` when one is given.

        A grant limited to allocated or own-agency cases counts without a case (the actor
        has the permission for some cases) and is checked against the case when there is one.
        """
        if any(self._grant_covers(actor, g, case) for g in actor.grants_for(permission)):
            return True
        return case is not None and self._glass_covers(actor, permission, case)

    @staticmethod
    def _glass_covers(actor: Actor, permission: str, case: CaseLike) -> bool:
        if getattr(case, "id", None) not in actor.glass:
            return False
        parts = permission.split(":")
        if len(parts) != 3:
            return False
        scope, resource, action = parts
        return scope == case.pathway and resource in GLASS_RESOURCES and action == "view"

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

    def may_break_glass(self, actor: Actor, case: CaseLike) -> bool:
        """Whether policy lets `actor` open this case, which they cannot otherwise see,
        by giving a reason."""
        bare = replace(actor, glass=frozenset())
        return not self.can_see(bare, case) and self.can(
            bare, f"{case.pathway}:case:break_glass", case
        )

    def through_glass(self, actor: Actor, case: CaseLike) -> bool:
        """Whether `actor` sees this case only because of a break-glass grant."""
        return getattr(case, "id", None) in actor.glass and not self.can_see(
            replace(actor, glass=frozenset()), case
        )

    def require_visible(
        self,
        actor: Actor,
        case: CaseLike | None,
        case_id: int,
        *,
        reachable: Callable[[], bool] | None = None,
    ) -> None:
        """404 for a case the actor may not see, exactly as for one that does not exist.

        The one exception is a case policy lets them open with a reason (break-glass) *and*
        that they reached through a link they can already see (`reachable`: an onward or
        parent case of one of their own). Only then is the answer 403 asking for a reason.
        So probing ids tells an outsider nothing: an id they were never shown answers 404
        whether it exists or not, whatever its pathway."""
        if case is not None and self.can_see(actor, case):
            return
        if (
            case is not None
            and reachable is not None
            and self.may_break_glass(actor, case)
            and reachable()
        ):
            raise ReasonRequired(
                f"case {case_id} is outside your need-to-know; give a reason to open it "
                f'(POST {{"reason": ...}} to /api/cases/{case_id}/access). '
                "Opening it is recorded and reviewed."
            )
        raise NotFound(f"case {case_id} not found")

    def linked_to_visible(self, conn: Any, actor: Actor, case: CaseLike) -> bool:
        """Whether `actor` reached `case` through a link they can already see: it is the
        parent or an onward case of a case they see in their own right (not through a
        break-glass grant), or a notice sent to them names it (an allocation, say). Only
        such a record may be opened with a reason; any other answers 404."""
        parent = getattr(case, "parent_case_id", None)
        linked = Case.parent_case_id == case.id
        if parent is not None:
            linked = sa.or_(linked, Case.id == parent)
        found = conn.execute(
            sa.select(Case.id).where(linked, self.visible_cases(actor, glass=False)).limit(1)
        ).first()
        if found is not None:
            return True
        if actor.user_id is None:
            return False
        told = conn.execute(
            sa.select(Outbox.id)
            .where(Outbox.case_id == case.id, Outbox.recipient_user_id == actor.user_id)
            .limit(1)
        ).first()
        return told is not None

    def visible_cases(
        self, actor: Actor, table: Any = Case, *, glass: bool = True
    ) -> sa.ColumnElement[bool]:
        """The SQL condition for "cases this actor may see"; the only such rule.

        `glass=False` leaves out cases opened with a reason: they are for reading one
        record, not for counting in reports or for changing anything (merges)."""
        whole: list[str] = []
        partial: list[sa.ColumnElement[bool]] = []
        for pathway in sorted(self.pathways):
            grants = actor.grants_for(f"{pathway}:case:view")
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
        if glass and actor.glass:
            partial.append(table.id.in_(sorted(actor.glass)))
        clauses = ([table.pathway.in_(whole)] if whole else []) + partial
        return sa.or_(*clauses) if clauses else sa.false()

    def visible_pathways(self, actor: Actor) -> list[str]:
        return [p for p in sorted(self.pathways) if self.can(actor, f"{p}:case:view")]

    def redact_pathways(
        self, actor: Actor, values: dict[str, Any] | None, names: frozenset[str]
    ) -> dict[str, Any] | None:
        """`values` (case attributes or an event's data) with every pathway the actor may
        not see removed from the fields in `names` (`Workflow.pathway_fields`). What is
        left in their place says only that another referral was made: not which pathway,
        not how many (DESIGN.md: what MASH may know of an onward Channel referral)."""
        if not values or not names:
            return values
        seen = set(self.visible_pathways(actor))
        out = dict(values)
        for name in names & out.keys():
            value = out[name]
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or all(v in seen for v in items):
                continue
            kept = [v for v in items if v in seen]
            out[name] = [*kept, HIDDEN_PATHWAY] if isinstance(value, list) else HIDDEN_PATHWAY
        return out
