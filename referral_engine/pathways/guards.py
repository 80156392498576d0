"""Named guards a workflow event can list under `guards:`.

A guard returns None when it holds, or (field, reason) when it does not; the engine turns
that into a 422 naming the field. Guards see only the `Context` (no database).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from referral_engine.pathways.snapshot import Context
from referral_engine.policies import dash

Failure = tuple[str, str] | None


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutcomeFitsAge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = "outcome"
    adult_only: list[str] = []
    child_only: list[str] = []


def outcome_fits_age(ctx: Context, p: OutcomeFitsAge) -> Failure:
    value = ctx.data.get(p.field)
    if value in p.adult_only and ctx.snapshot.is_child:
        return p.field, f"{value} is for adults; the subject is a child"
    if value in p.child_only and not ctx.snapshot.is_child:
        return p.field, f"{value} is for children; the subject is an adult"
    return None


class Requires(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    reason: str


def attribute_present(ctx: Context, p: Requires) -> Failure:
    """A case attribute set by an earlier event must be present (e.g. a RAG rating)."""
    return (
        None if ctx.snapshot.attributes.get(p.field) not in (None, "", []) else (p.field, p.reason)
    )


class MaracCriteria(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = "criteria"


def marac_criterion_holds(ctx: Context, p: MaracCriteria) -> Failure:
    """At least one MARAC criterion holds; any the coordinator names must hold too.

    Professional judgement can also be given at acceptance, with its reasons.
    """
    computed = set(ctx.snapshot.attributes.get("criteria") or [])
    if ctx.data.get("professional_judgement_rationale"):
        computed.add("professional_judgement")
    claimed = set(ctx.data.get(p.field) or [])
    unsupported = sorted(claimed - computed)
    if unsupported:
        return p.field, (
            f"{', '.join(unsupported)} does not hold for this case "
            f"(criteria met: {', '.join(sorted(computed)) or 'none'})"
        )
    if not computed:
        assessment = ctx.snapshot.attributes.get("dash") or {}
        if assessment:
            return p.field, dash.why_not(assessment, ctx.policy.dash)
        return p.field, "no MARAC criterion holds: there is no DASH assessment on this case"
    return None


class ConsentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = "consent"
    reason: str


def child_or_consent(ctx: Context, p: ConsentParams) -> Failure:
    """A child needs no consent; an adult must have given it."""
    if ctx.snapshot.is_child or ctx.data.get(p.field) is True:
        return None
    return p.field, p.reason


class AgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = "event"
    reason: str


def subject_is_adult(ctx: Context, p: AgeParams) -> Failure:
    return (p.field, p.reason) if ctx.snapshot.is_child else None


class FitsAgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    child: list[Any]
    adult: list[Any]


def value_fits_age(ctx: Context, p: FitsAgeParams) -> Failure:
    """e.g. a child's consent to Channel support is given by a parent."""
    allowed = p.child if ctx.snapshot.is_child else p.adult
    if ctx.data.get(p.field) in allowed:
        return None
    who = "a child" if ctx.snapshot.is_child else "an adult"
    return p.field, f"for {who} this must be {' or '.join(map(str, allowed))}"


class ActionsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attribute: str = "actions"


def all_actions_resolved(ctx: Context, p: ActionsParams) -> Failure:
    """Every action is complete, or was closed with an explanation."""
    open_ = [
        a["id"] for a in ctx.snapshot.attributes.get(p.attribute) or [] if a["status"] == "open"
    ]
    if open_:
        return "actions", f"actions still open: {', '.join(open_)}; complete or explain each first"
    return None


class ClockParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paused: bool


def clock_is(ctx: Context, p: ClockParams) -> Failure:
    paused = bool(ctx.snapshot.attributes.get("paused"))
    if paused == p.paused:
        return None
    return "event", "the clock is already paused" if paused else "the clock is not paused"


@dataclass(frozen=True)
class Guard:
    params: type[BaseModel]
    check: Callable[[Context, BaseModel], Failure]


GUARDS: dict[str, Guard] = {
    "outcome_fits_age": Guard(OutcomeFitsAge, outcome_fits_age),  # type: ignore[arg-type]
    "attribute_present": Guard(Requires, attribute_present),  # type: ignore[arg-type]
    "marac_criterion_holds": Guard(MaracCriteria, marac_criterion_holds),  # type: ignore[arg-type]
    "child_or_consent": Guard(ConsentParams, child_or_consent),  # type: ignore[arg-type]
    "subject_is_adult": Guard(AgeParams, subject_is_adult),  # type: ignore[arg-type]
    "all_actions_resolved": Guard(ActionsParams, all_actions_resolved),  # type: ignore[arg-type]
    "clock_is": Guard(ClockParams, clock_is),  # type: ignore[arg-type]
    "value_fits_age": Guard(FitsAgeParams, value_fits_age),  # type: ignore[arg-type]
}
