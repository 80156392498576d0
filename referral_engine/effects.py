"""Named effects a workflow event can list under `effects:`, and the operations they plan.

Planning is pure: an effect reads the `Context` and returns operations (`Op`s). The engine
applies the operations inside the same transaction as the state change, so a refused or
failed change leaves no deadline, linked case or notification behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .clock import due_at
from .errors import FieldError, InvalidData
from .snapshot import Context, holds


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
class Notify:
    kind: str
    audience: str
    payload: dict[str, Any]


Op = SetAttributes | AppendAttribute | SetRag | SetDeadline | MeetDeadline | OpenCase
Op = Op | TellReferrer | Notify | Assign


# --- effects ---------------------------------------------------------------------------


class SetAttributesParams(Params):
    # case attribute name -> data field name
    values: dict[str, str]


def set_attributes(ctx: Context, p: SetAttributesParams) -> list[Op]:
    return [SetAttributes({attr: ctx.data.get(f) for attr, f in p.values.items()})]


class AppendParams(Params):
    attribute: str
    fields: list[str]


def append_attribute(ctx: Context, p: AppendParams) -> list[Op]:
    item = {f: ctx.data.get(f) for f in p.fields}
    item.update(at=ctx.now.isoformat(), by=ctx.actor.display_name)
    return [AppendAttribute(p.attribute, item)]


class SetRagParams(Params):
    field: str = "rag"


def set_rag(ctx: Context, p: SetRagParams) -> list[Op]:
    return [SetRag(ctx.data[p.field])]


class SetDeadlineParams(Params):
    name: str
    sla: str
    # What the time counts from: the case opening, the original referral, or now.
    start: Literal["opened", "received", "now"] = "now"
    on_due: str = "escalate"
    # Only bring an existing deadline of this name forward, never push it back.
    earlier_only: bool = False


def set_deadline(ctx: Context, p: SetDeadlineParams) -> list[Op]:
    sla = ctx.policy.sla[p.sla]
    start = {
        "opened": ctx.snapshot.opened_at,
        "received": ctx.snapshot.received_at or ctx.snapshot.opened_at,
        "now": ctx.now,
    }[p.start]
    due = due_at(sla, start, ctx.policy.timezone)
    current = ctx.snapshot.deadlines.get(p.name)
    if p.earlier_only and current and current.due_at <= due:
        return []
    return [SetDeadline(p.name, sla.label, due, p.on_due)]


class MeetDeadlineParams(Params):
    name: str


def meet_deadline(ctx: Context, p: MeetDeadlineParams) -> list[Op]:
    current = ctx.snapshot.deadlines.get(p.name)
    if current is None or current.status not in ("open", "breached"):
        return []
    late = ctx.now > current.due_at
    reason = ctx.data.get("late_reason")
    if late and not reason:
        raise InvalidData(
            FieldError(
                "late_reason",
                f"the {current.label} deadline passed at {current.due_at:%Y-%m-%d %H:%M} UTC; "
                "record why it was missed",
            )
        )
    return [MeetDeadline(p.name, reason if late else None)]


class OpenCasesParams(Params):
    field: str


def open_cases(ctx: Context, p: OpenCasesParams) -> list[Op]:
    wanted = ctx.data.get(p.field) or []
    unknown = [w for w in wanted if w not in ctx.known_pathways]
    if unknown:
        raise InvalidData(
            FieldError(p.field, f"pathway {', '.join(unknown)} is not set up in this installation")
        )
    return [
        OpenCase(w, reason=f"{ctx.snapshot.pathway}:{ctx.event}") for w in dict.fromkeys(wanted)
    ]


class TellReferrerParams(Params):
    outcome: str
    feedback: str | None = None


def tell_referrer(ctx: Context, p: TellReferrerParams) -> list[Op]:
    if ctx.snapshot.referral_id is None:
        return []
    outcome = ctx.data[p.outcome]
    feedback = ctx.data.get(p.feedback) if p.feedback else None
    return [TellReferrer(outcome, feedback)]


class AssignParams(Params):
    field: str
    relation: Literal["assigned", "allocated"] = "assigned"


def assign(ctx: Context, p: AssignParams) -> list[Op]:
    return [Assign(p.relation, ctx.users[p.field])]


class NotifyParams(Params):
    kind: str
    # "referrer", "allocated", "assigned", or "permission:<scope:resource:action>"
    to: str
    fields: list[str] = []


def notify(ctx: Context, p: NotifyParams) -> list[Op]:
    return [Notify(p.kind, p.to, {f: ctx.data.get(f) for f in p.fields})]


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
}


def plan_effects(ctx: Context, effects: list[tuple[str, Params]]) -> list[Op]:
    ops: list[Op] = []
    for name, params in effects:
        if holds(ctx, params.when):
            ops.extend(EFFECTS[name].plan(ctx, params))
    return ops
