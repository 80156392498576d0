"""Named effects a workflow event can list under `effects:`, and the operations they plan.

Planning is pure: an effect reads the `Context` and returns operations (`Op`s). The engine
applies the operations inside the same transaction as the state change, so a refused or
failed change leaves no deadline, linked case or notification behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from referral_engine.clock import due_at, local_midnight, resumed_due
from referral_engine.errors import FieldError, InvalidData
from referral_engine.pathways.snapshot import Context, holds
from referral_engine.policies import dash


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: dict[str, Any] | None = None


# --- operations ------------------------------------------------------------------------


@dataclass(frozen=True)
class SetAttributes:
    values: dict[str, Any]


@dataclass(frozen=True)
class AppendAttribute:
    name: str
    item: dict[str, Any]


@dataclass(frozen=True)
class SetRag:
    rag: str


@dataclass(frozen=True)
class SetDeadline:
    name: str
    label: str
    due_at: datetime
    on_due: str


@dataclass(frozen=True)
class MeetDeadline:
    name: str
    late_reason: str | None


@dataclass(frozen=True)
class OpenCase:
    pathway: str
    reason: str


@dataclass(frozen=True)
class TellReferrer:
    outcome: str
    feedback: str | None


@dataclass(frozen=True)
class Assign:
    # "assigned" (the officer working the case) or "allocated" (e.g. an IDVA)
    relation: str
    user_id: int


@dataclass(frozen=True)
class ReferChildren:
    """Refer each child in the subject's household to `pathway` (a new referral each)."""

    pathway: str
    reason: str


@dataclass(frozen=True)
class ListAtMeeting:
    meeting_id: int


@dataclass(frozen=True)
class PauseClock:
    reason: str


@dataclass(frozen=True)
class ResumeClock:
    # Each paused deadline's new due time, by name, counted in its own clock's units.
    dues: dict[str, datetime] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Anonymise:
    """Remove every identifying detail of the subject (Duty to Notify)."""

    keep: tuple[str, ...]


@dataclass(frozen=True)
class LinkPerson:
    """Match the subject to a person record now (deferred until consent, e.g. the NRM)."""


@dataclass(frozen=True)
class Notify:
    kind: str
    audience: str
    payload: dict[str, Any]
    # Tells apart several notices of one kind from one event (e.g. one per action).
    key: str = ""
    # Who is told instead when `audience` names nobody (e.g. no agency contact is set).
    fallback: str | None = None


Op = SetAttributes | AppendAttribute | SetRag | SetDeadline | MeetDeadline | OpenCase
Op = Op | TellReferrer | Notify | Assign | ReferChildren | ListAtMeeting | PauseClock
Op = Op | ResumeClock | Anonymise | LinkPerson


# --- effects ---------------------------------------------------------------------------

# Who a notice is for (resolved by `Engine.audience`).
AUDIENCES = ("referrer", "allocated", "assigned", "agency_contact")
AUDIENCE_PREFIXES = ("permission:", "agency_kind:")


def _audience(v: str | None) -> str | None:
    if v is None or v in AUDIENCES or v.startswith(AUDIENCE_PREFIXES):
        return v
    raise ValueError(
        f"{v!r} is not an audience: use {', '.join(AUDIENCES)}, permission:<permission> "
        "or agency_kind:<kind>"
    )


class SetAttributesParams(Params):
    # case attribute name -> the data field it is copied from
    values: dict[str, str] = {}
    # case attribute name -> a fixed value (e.g. panel_decision: adopt)
    fixed: dict[str, Any] = {}


def set_attributes(ctx: Context, p: SetAttributesParams) -> list[Op]:
    values = {attr: ctx.data.get(f) for attr, f in p.values.items()}
    return [SetAttributes({**values, **p.fixed})]


class AppendParams(Params):
    attribute: str
    fields: list[str]
    # Fixed values added to every item (e.g. a disclosure's direction).
    values: dict[str, str] = {}


def append_attribute(ctx: Context, p: AppendParams) -> list[Op]:
    item = {f: ctx.data.get(f) for f in p.fields}
    item.update(p.values)
    item.update(at=ctx.now.isoformat(), by=ctx.actor.display_name)
    return [AppendAttribute(p.attribute, item)]


class SetRagParams(Params):
    field: str = "rag"


def set_rag(ctx: Context, p: SetRagParams) -> list[Op]:
    return [SetRag(ctx.data[p.field])]


class SetDeadlineParams(Params):
    name: str
    sla: str
    # What the time counts from: the case opening, the original referral, now, or a
    # date given in the event's data ("data.<field>", counted from the start of that day).
    start: str = "now"
    # "escalate" (an SLA: breached and escalated when missed), "remind" (a notice when
    # due), or "fire:<event>" (a timer: the scheduler fires that event).
    on_due: str = "escalate"
    # Only bring an existing deadline of this name forward, never push it back.
    earlier_only: bool = False

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        if v not in ("opened", "received", "now") and not v.startswith("data."):
            raise ValueError("start is opened, received, now or data.<field>")
        return v


def start_of(ctx: Context, start: str) -> datetime:
    if start.startswith("data."):
        return local_midnight(date.fromisoformat(ctx.data[start.removeprefix("data.")]))
    return {
        "opened": ctx.snapshot.opened_at,
        "received": ctx.snapshot.received_at or ctx.snapshot.opened_at,
        "now": ctx.now,
    }[start]


def set_deadline(ctx: Context, p: SetDeadlineParams) -> list[Op]:
    sla = ctx.policy.sla[p.sla]
    due = due_at(sla, start_of(ctx, p.start), ctx.policy.timezone)
    current = ctx.snapshot.deadlines.get(p.name)
    if p.earlier_only and current and current.due_at <= due:
        return []
    return [SetDeadline(p.name, sla.label, due, p.on_due)]


class MeetDeadlineParams(Params):
    name: str
    # A target "where possible" (e.g. the NRM's reasonable grounds) never blocks.
    late_reason_required: bool = True


def meet_deadline(ctx: Context, p: MeetDeadlineParams) -> list[Op]:
    current = ctx.snapshot.deadlines.get(p.name)
    if current is None or current.status not in ("open", "breached", "paused"):
        return []
    late = ctx.now > current.due_at
    reason = ctx.data.get("late_reason")
    if late and not reason and p.late_reason_required:
        raise InvalidData(
            FieldError(
                "late_reason",
                f"the {current.label} deadline passed at {current.due_at:%Y-%m-%d %H:%M} UTC; "
                "record why it was missed",
            )
        )
    return [MeetDeadline(p.name, reason if late else None)]


class OpenCasesParams(Params):
    # The pathways come from a data field (e.g. a decision's `onward`), or are fixed.
    field: str | None = None
    pathways: list[str] = []


def open_cases(ctx: Context, p: OpenCasesParams) -> list[Op]:
    wanted = (ctx.data.get(p.field) or []) if p.field else p.pathways
    unknown = [w for w in wanted if w not in ctx.known_pathways]
    if unknown:
        raise InvalidData(
            FieldError(
                p.field or "pathways",
                f"pathway {', '.join(unknown)} is not set up in this installation",
            )
        )
    return [
        OpenCase(w, reason=f"{ctx.snapshot.pathway}:{ctx.event}") for w in dict.fromkeys(wanted)
    ]


class TellReferrerParams(Params):
    # The outcome: a data field's value, or a fixed value (e.g. "marac_declined").
    outcome: str | None = None
    value: str | None = None
    feedback: str | None = None


def tell_referrer(ctx: Context, p: TellReferrerParams) -> list[Op]:
    if ctx.snapshot.referral_id is None:
        return []
    outcome = p.value or ctx.data[p.outcome or "outcome"]
    feedback = ctx.data.get(p.feedback) if p.feedback else None
    return [TellReferrer(outcome, feedback)]


class AssignParams(Params):
    field: str
    relation: Literal["assigned", "allocated"] = "assigned"


def assign(ctx: Context, p: AssignParams) -> list[Op]:
    return [Assign(p.relation, ctx.users[p.field])]


class AssessDashParams(Params):
    pass


# Case attributes an effect writes under names of its own, not named in its parameters
# (reports/measures.py checks the attributes a KPI names against these too).
ATTRIBUTES_WRITTEN = {"assess_dash": ("dash", "criteria")}


def assess_dash(ctx: Context, p: AssessDashParams) -> list[Op]:
    """Score the referral's DASH answers and work out which MARAC criteria hold."""
    snap = ctx.snapshot
    result = dash.assess(
        ctx.policy.dash,
        snap.details.get("dash"),
        agency_kind=snap.agency_kind,
        referred_at=snap.received_at or snap.opened_at,
        last_marac_referral=snap.last_opened.get(snap.pathway),
    )
    # The case's `repeat` flag is the MARAC criterion itself, so the two never disagree
    # (a person first heard after a MASH onward referral has no earlier MARAC *referral*,
    # yet this is a repeat MARAC case).
    repeat = "repeat" in result["criteria"]
    return [SetAttributes({"dash": result, "criteria": result["criteria"], "repeat": repeat})]


class ReferChildrenParams(Params):
    pathway: str = "mash"


def refer_children(ctx: Context, p: ReferChildrenParams) -> list[Op]:
    return [ReferChildren(p.pathway, reason=f"{ctx.snapshot.pathway}:{ctx.event}")]


class AppendAssessmentParams(Params):
    attribute: str
    # Rated fields: each entry records the change since the previous assessment.
    compare: list[str]
    fields: list[str] = []


def append_assessment(ctx: Context, p: AppendAssessmentParams) -> list[Op]:
    history = ctx.snapshot.attributes.get(p.attribute) or []
    previous = history[-1] if history else {}
    entry = {f: ctx.data.get(f) for f in [*p.compare, *p.fields]}
    entry["change"] = {
        f: {"from": previous.get(f), "to": ctx.data.get(f)}
        for f in p.compare
        if previous and previous.get(f) != ctx.data.get(f)
    }
    entry.update(at=ctx.now.isoformat(), by=ctx.actor.display_name, number=len(history) + 1)
    return [AppendAttribute(p.attribute, entry)]


class AddActionsParams(Params):
    # A data field holding a list of actions, or None for one action in the data itself.
    field: str | None = None
    attribute: str = "actions"
    # Tell the contact of each action's owning agency (a notice of this kind), or, when
    # that agency has no contact, `fallback` (an audience, as for `notify`).
    notify: str | None = None
    fallback: str | None = None

    _fallback = field_validator("fallback")(_audience)


def add_actions(ctx: Context, p: AddActionsParams) -> list[Op]:
    """Number each new action, keep it on the case, and chase it when it falls due."""
    existing = list(ctx.snapshot.attributes.get(p.attribute) or [])
    given = (ctx.data.get(p.field) or []) if p.field else [ctx.data]
    ops: list[Op] = []
    for item in given:
        number = len(existing) + 1
        action = {
            "id": f"A{number}",
            "owner_agency": item["owner_agency"],
            "description": item["description"],
            "due": item["due"],
            "status": "open",
            "added_at": ctx.now.isoformat(),
            "added_by": ctx.actor.display_name,
            "meeting_id": ctx.snapshot.attributes.get("meeting_id"),
        }
        existing.append(action)
        # Due by the end of its day, on the UK calendar: the last second of that day, so
        # the deadline reads as the action's own date (never the next day's midnight).
        due = local_midnight(date.fromisoformat(item["due"]) + timedelta(days=1)) - timedelta(
            seconds=1
        )
        ops.append(SetDeadline(f"action_{action['id']}", f"Action {action['id']}", due, "remind"))
        if p.notify:
            ops.append(
                Notify(
                    p.notify, f"agency_kind:{action['owner_agency']}",
                    {k: action[k] for k in ("owner_agency", "description", "due")}
                    | {"action_id": action["id"]},
                    key=action["id"], fallback=p.fallback,
                )
            )  # fmt: skip
    return [SetAttributes({p.attribute: existing}), *ops]


class CompleteActionParams(Params):
    field: str = "action_id"
    attribute: str = "actions"


def complete_action(ctx: Context, p: CompleteActionParams) -> list[Op]:
    actions = [dict(a) for a in ctx.snapshot.attributes.get(p.attribute) or []]
    wanted = ctx.data[p.field]
    match = next((a for a in actions if a["id"] == wanted), None)
    if match is None:
        known = ", ".join(a["id"] for a in actions) or "none yet"
        raise InvalidData(FieldError(p.field, f"no action {wanted!r} on this case ({known})"))
    if match["status"] != "open":
        raise InvalidData(FieldError(p.field, f"action {wanted} is already {match['status']}"))
    match.update(
        status="done" if ctx.data.get("done", True) else "not_done",
        outcome=ctx.data.get("outcome"),
        closed_at=ctx.now.isoformat(),
        closed_by=ctx.actor.display_name,
    )
    return [SetAttributes({p.attribute: actions}), MeetDeadline(f"action_{wanted}", None)]


class ListAtMeetingParams(Params):
    field: str = "meeting_id"


def list_at_meeting(ctx: Context, p: ListAtMeetingParams) -> list[Op]:
    meeting_id, day = ctx.meetings[p.field]
    return [
        ListAtMeeting(meeting_id),
        SetAttributes({"meeting_id": meeting_id, "meeting_date": day.isoformat()}),
    ]


class PauseParams(Params):
    field: str = "reason"


def pause_clock(ctx: Context, p: PauseParams) -> list[Op]:
    pauses = list(ctx.snapshot.attributes.get("pauses") or [])
    pauses.append({"from": ctx.now.isoformat(), "reason": ctx.data[p.field],
                   "by": ctx.actor.display_name, "to": None})  # fmt: skip
    return [PauseClock(ctx.data[p.field]), SetAttributes({"pauses": pauses, "paused": True})]


def resume_clock(ctx: Context, p: Params) -> list[Op]:
    pauses = [dict(x) for x in ctx.snapshot.attributes.get("pauses") or []]
    if pauses and pauses[-1].get("to") is None:
        pauses[-1]["to"] = ctx.now.isoformat()
    # A deadline stores its SLA's label, not its key: the label finds the SLA again (a
    # decision due in one working day and one due in four hours share a name).
    by_label = {sla.label: sla for sla in ctx.policy.sla.values()}
    dues = {
        d.name: resumed_due(
            by_label.get(d.label), d.due_at, d.paused_at, ctx.now, ctx.policy.timezone
        )
        for d in ctx.snapshot.deadlines.values()
        if d.status == "paused" and d.paused_at is not None
    }
    return [ResumeClock(dues), SetAttributes({"pauses": pauses, "paused": False})]


class AnonymiseParams(Params):
    keep: list[str] = ["gender"]


def anonymise(ctx: Context, p: AnonymiseParams) -> list[Op]:
    return [Anonymise(tuple(p.keep))]


def link_person(ctx: Context, p: Params) -> list[Op]:
    return [] if ctx.snapshot.person_id is not None else [LinkPerson()]


class NotifyParams(Params):
    kind: str
    # "referrer", "allocated", "assigned", "agency_contact" (the contact of the agency the
    # case came from), "agency_kind:<kind>" (the contacts of agencies of that kind), or
    # "permission:<scope:resource:action>" (every active holder)
    to: str
    fallback: str | None = None
    fields: list[str] = []

    _to = field_validator("to", "fallback")(_audience)


def notify(ctx: Context, p: NotifyParams) -> list[Op]:
    return [Notify(p.kind, p.to, {f: ctx.data.get(f) for f in p.fields}, fallback=p.fallback)]


@dataclass(frozen=True)
class Effect:
    params: type[Params]
    plan: Callable[[Context, Any], list[Op]]


EFFECTS: dict[str, Effect] = {
    "set_attributes": Effect(SetAttributesParams, set_attributes),
    "append_attribute": Effect(AppendParams, append_attribute),
    "set_rag": Effect(SetRagParams, set_rag),
    "set_deadline": Effect(SetDeadlineParams, set_deadline),
    "meet_deadline": Effect(MeetDeadlineParams, meet_deadline),
    "open_cases": Effect(OpenCasesParams, open_cases),
    "tell_referrer": Effect(TellReferrerParams, tell_referrer),
    "notify": Effect(NotifyParams, notify),
    "assign": Effect(AssignParams, assign),
    "assess_dash": Effect(AssessDashParams, assess_dash),
    "refer_children": Effect(ReferChildrenParams, refer_children),
    "append_assessment": Effect(AppendAssessmentParams, append_assessment),
    "add_actions": Effect(AddActionsParams, add_actions),
    "complete_action": Effect(CompleteActionParams, complete_action),
    "list_at_meeting": Effect(ListAtMeetingParams, list_at_meeting),
    "pause_clock": Effect(PauseParams, pause_clock),
    "resume_clock": Effect(Params, resume_clock),
    "anonymise": Effect(AnonymiseParams, anonymise),
    "link_person": Effect(Params, link_person),
}


def plan_effects(ctx: Context, effects: list[tuple[str, Params]]) -> list[Op]:
    ops: list[Op] = []
    for name, params in effects:
        if holds(ctx, params.when):
            ops.extend(EFFECTS[name].plan(ctx, params))
    return ops
