"""Named guards a workflow event can list under `guards:`.

A guard returns None when it holds, or (field, reason) when it does not; the engine turns
that into a 422 naming the field. Guards see only the `Context` (no database).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from referral_engine.pathways.snapshot import Context
from referral_engine.policies import dash

Failure = tuple[str, str] | None


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutcomeFitsAge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = "outcome"
    # Further fields holding outcomes, one or a list each (a decision's further outcomes).
    also: list[str] = []
    adult_only: list[str] = []
    child_only: list[str] = []


def outcome_fits_age(ctx: Context, p: OutcomeFitsAge) -> Failure:
    """Each outcome (the main one and any further ones) is one for the subject's age."""
    for name in (p.field, *p.also):
        got = ctx.data.get(name)
        for value in got if isinstance(got, list) else [got]:
            if value in p.adult_only and ctx.snapshot.is_child:
                return name, f"{value} is for adults; the subject is a child"
            if value in p.child_only and not ctx.snapshot.is_child:
                return name, f"{value} is for children; the subject is an adult"
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


# --- dates that cannot be ----------------------------------------------------------------


def _today(ctx: Context) -> date:
    """Today on the partnership's calendar (a hearing on the 2nd is on the UK's 2nd)."""
    return ctx.now.astimezone(ZoneInfo(ctx.policy.timezone)).date()


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def _said(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


class DateReachedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attribute: str  # a case attribute holding a date, e.g. the meeting date set by `list`
    what: str  # what happens on that day, in words: "the meeting"


def date_reached(ctx: Context, p: DateReachedParams) -> Failure:
    """Nothing is recorded before the day it happens (a hearing before its meeting)."""
    day = _day(ctx.snapshot.attributes.get(p.attribute))
    if day is None or _today(ctx) >= day:
        return None
    return "event", f"{p.what} is on {_said(day)}; record it on or after that day"


class DeadlineReachedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The deadlines of each successive occurrence (6 and 12 months after exit), and the
    # case attribute that lists the occurrences already recorded.
    deadlines: list[str]
    count: str


def deadline_reached(ctx: Context, p: DeadlineReachedParams) -> Failure:
    """A review or follow-up is recorded when it is due, not before (the next one's
    deadline has come, or has already been reminded of by `tick`)."""
    done = len(ctx.snapshot.attributes.get(p.count) or [])
    if done >= len(p.deadlines):
        return None
    d = ctx.snapshot.deadlines.get(p.deadlines[done])
    if d is None or d.status == "paused" or d.due_at <= ctx.now:
        return None
    due = d.due_at.astimezone(ZoneInfo(ctx.policy.timezone)).date()
    return "event", f"the {d.label.lower()} is not due until {_said(due)}"


class DateInRangeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    # Also not before a date an earlier event recorded (a case attribute), in words.
    after: str | None = None
    after_what: str = "the earlier decision"


def date_in_range(ctx: Context, p: DateInRangeParams) -> Failure:
    """A date given in the data is not before the referral (nor an earlier decision the
    case records). A date ahead of today is allowed: the decision letter may be dated so."""
    day = _day(ctx.data.get(p.field))
    if day is None:
        return None
    start = ctx.snapshot.received_at or ctx.snapshot.opened_at
    first = start.astimezone(ZoneInfo(ctx.policy.timezone)).date()
    if day < first:
        return p.field, f"cannot be before the referral was received ({_said(first)})"
    earlier = _day(ctx.snapshot.attributes.get(p.after)) if p.after else None
    if earlier is not None and day < earlier:
        return p.field, f"cannot be before {p.after_what} ({_said(earlier)})"
    return None


def failing_case_guard(ctx: Context, guards: Any) -> Failure:
    """The first of an event's guards decided by the case alone that fails now, or None.

    A case page offers an event only when this is None: "Pause" on a paused case, a
    hearing before its meeting's day, would only ever be refused.
    """
    for name, params in guards:
        guard = GUARDS[name]
        if guard.case_only:
            failure = guard.check(ctx, guard.params.model_validate(params))
            if failure is not None:
                return failure
    return None


@dataclass(frozen=True)
class Guard:
    params: type[BaseModel]
    check: Callable[[Context, BaseModel], Failure]
    # Decided by the case alone, never by the event's data: a case page can say before
    # anything is typed whether the event can pass now (and why not).
    case_only: bool = False


GUARDS: dict[str, Guard] = {
    "outcome_fits_age": Guard(OutcomeFitsAge, outcome_fits_age),  # type: ignore[arg-type]
    "attribute_present": Guard(Requires, attribute_present, True),  # type: ignore[arg-type]
    "marac_criterion_holds": Guard(MaracCriteria, marac_criterion_holds),  # type: ignore[arg-type]
    "child_or_consent": Guard(ConsentParams, child_or_consent),  # type: ignore[arg-type]
    "subject_is_adult": Guard(AgeParams, subject_is_adult, True),  # type: ignore[arg-type]
    "all_actions_resolved": Guard(ActionsParams, all_actions_resolved, True),  # type: ignore[arg-type]
    "clock_is": Guard(ClockParams, clock_is, True),  # type: ignore[arg-type]
    "value_fits_age": Guard(FitsAgeParams, value_fits_age),  # type: ignore[arg-type]
    "date_reached": Guard(DateReachedParams, date_reached, True),  # type: ignore[arg-type]
    "deadline_reached": Guard(DeadlineReachedParams, deadline_reached, True),  # type: ignore[arg-type]
    "date_in_range": Guard(DateInRangeParams, date_in_range),  # type: ignore[arg-type]
}
