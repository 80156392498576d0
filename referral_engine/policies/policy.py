"""The partnership's policies (policies/*.yaml): roles, deadlines, vocabularies, rules.

Loaded and validated once at start-up; a mistake stops start-up naming file, line and
field, because a silently ignored access rule is worse than a server that will not start.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from referral_engine.errors import DefinitionError
from referral_engine.policies.dash import DashPolicy
from referral_engine.policies.yamlfile import line_for, load, parse_model

PERMISSION_GRAMMAR = "scope:resource:action"


def _check_permission(value: str) -> str:
    parts = value.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"permission {value!r} is not of the form {PERMISSION_GRAMMAR}")
    return value


@functools.lru_cache(maxsize=8192)
def _covers(pattern: str, permission: str) -> bool:
    """Cached: every permission check asks it for each of the actor's grants, and the
    answer depends only on the two strings (roles.yaml is fixed for a process's life)."""
    want = permission.split(":")
    have = pattern.split(":")
    return len(want) == 3 and all(fnmatchcase(w, h) for w, h in zip(want, have, strict=True))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Grant(Strict):
    permission: str
    when_agency_kind: tuple[str, ...] | None = None
    only: Literal["allocated", "own_agency"] | None = None

    _check = field_validator("permission")(_check_permission)

    def matches(self, permission: str) -> bool:
        """Whether this grant (which may hold "*") covers the concrete `permission`."""
        return _covers(self.permission, permission)


class Role(Strict):
    label: str
    description: str = ""
    includes: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()

    @field_validator("grants", mode="before")
    @classmethod
    def _short_form(cls, value):
        return [{"permission": g} if isinstance(g, str) else g for g in value or ()]


class RolesFile(Strict):
    roles: dict[str, Role]


class Sla(Strict):
    label: str
    working_days: int | None = Field(default=None, ge=0)
    calendar_days: int | None = Field(default=None, ge=0)
    months: int | None = Field(default=None, ge=0)
    hours: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _exactly_one(self):
        units = (self.working_days, self.calendar_days, self.months, self.hours)
        if sum(v is not None for v in units) != 1:
            raise ValueError("give exactly one of working_days, calendar_days, months, hours")
        return self


class SlaFile(Strict):
    timezone: str = "Europe/London"
    sla: dict[str, Sla]


class ReferenceFile(Strict):
    agency_kinds: dict[str, str]
    concerns: dict[str, str]
    consent: dict[str, str]
    lawful_bases: dict[str, str]
    mash_outcomes: dict[str, str]
    # Outcomes a specialist pathway tells the referrer directly (not a MASH decision).
    pathway_outcomes: dict[str, str] = {}
    onward_pathways: dict[str, str]
    marac_criteria: dict[str, str]
    exploitation_types: dict[str, str]
    vaf_ratings: dict[str, str]
    vaf_factors: dict[str, str]
    gang_exit_needs: dict[str, str]
    rag_ratings: dict[str, str]
    # Agency kinds whose staff are regulated professionals with the FGM reporting duty.
    fgm_duty_agency_kinds: dict[str, str]
    genders: dict[str, str] = {}
    dash_answers: dict[str, str] = {}
    action_statuses: dict[str, str] = {}
    disclosure_directions: dict[str, str] = {}
    deadline_statuses: dict[str, str] = {}
    # What people call the field names every pathway shares (`at`, `lawful_basis`):
    # names, not codes, so never looked up as a stored value.
    field_labels: dict[str, str] = {}

    def labels(self) -> dict[str, str]:
        """Every code's label in one lookup, for showing stored codes to people. A code in
        several lists keeps the first list's label: the later lists that repeat codes say
        something else of them (`fgm_duty_agency_kinds` names the professionals of an
        agency kind, "Social care" for `children_social_care`)."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            if name == "field_labels":
                continue
            value = getattr(self, name)
            if isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, str):
                        out.setdefault(k, v)
        return out


class SignIn(Strict):
    max_failures: int = Field(ge=1)
    window_minutes: int = Field(ge=1)
    lock_minutes: int = Field(ge=1)
    password_min_length: int = Field(ge=8)


class BreakGlassRules(Strict):
    minutes: int = Field(ge=1, le=24 * 60)
    reason_min_length: int = Field(ge=1)


class AuditRules(Strict):
    checkpoint_every: int = Field(ge=1)


class RulesFile(Strict):
    child_age_limit: int = Field(ge=1)
    repeat_referral_window_months: int = Field(ge=1)
    due_soon_hours: float = Field(ge=0)
    sign_in: SignIn
    break_glass: BreakGlassRules
    audit: AuditRules
    # The partnership's targets for its measures (a key of the KPI report -> a figure),
    # shown beside the measure on the dashboard.
    targets: dict[str, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    roles: dict[str, Role]
    sla: dict[str, Sla]
    timezone: str
    reference: ReferenceFile
    rules: RulesFile
    dash: DashPolicy

    def grants_for(self, roles: list[str] | tuple[str, ...]) -> tuple[Grant, ...]:
        """Every grant of these roles, following `includes`."""
        seen: set[str] = set()
        out: list[Grant] = []

        def visit(name: str) -> None:
            if name in seen or name not in self.roles:
                return
            seen.add(name)
            role = self.roles[name]
            out.extend(role.grants)
            for inc in role.includes:
                visit(inc)

        for r in roles:
            visit(r)
        return tuple(out)

    def roles_granting(self, permission: str) -> list[str]:
        return [r for r in self.roles if any(g.matches(permission) for g in self.grants_for([r]))]


def load_policy(directory: Path) -> Policy:
    roles, _ = parse_model(RolesFile, directory / "roles.yaml")
    sla, _ = parse_model(SlaFile, directory / "sla.yaml")
    reference, _ = parse_model(ReferenceFile, directory / "reference.yaml")
    rules, _ = parse_model(RulesFile, directory / "rules.yaml")
    dash, _ = parse_model(DashPolicy, directory / "dash.yaml")
    _check_references(directory / "roles.yaml", roles, reference)
    return Policy(roles.roles, sla.sla, sla.timezone, reference, rules, dash)


def _check_references(path: Path, roles: RolesFile, reference: ReferenceFile) -> None:
    """Names a role refers to (other roles, agency kinds) must exist."""
    _, lines = load(path)
    for name, role in roles.roles.items():
        for i, inc in enumerate(role.includes):
            if inc not in roles.roles:
                raise DefinitionError(
                    str(path),
                    line_for(lines, ("roles", name, "includes", i)),
                    f"roles.{name}.includes",
                    f"unknown role {inc!r}",
                )
        for i, g in enumerate(role.grants):
            for kind in g.when_agency_kind or ():
                if kind not in reference.agency_kinds:
                    raise DefinitionError(
                        str(path),
                        line_for(lines, ("roles", name, "grants", i, "when_agency_kind")),
                        f"roles.{name}.grants.{i}.when_agency_kind",
                        f"unknown agency kind {kind!r}",
                    )
