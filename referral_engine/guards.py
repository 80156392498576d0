"""Named guards a workflow event can list under `guards:`.

A guard returns None when it holds, or (field, reason) when it does not; the engine turns
that into a 422 naming the field. Guards see only the `Context` (no database).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from .snapshot import Context

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


@dataclass(frozen=True)
class Guard:
    params: type[BaseModel]
    check: Callable[[Context, BaseModel], Failure]


GUARDS: dict[str, Guard] = {
    "outcome_fits_age": Guard(OutcomeFitsAge, outcome_fits_age),  # type: ignore[arg-type]
    "attribute_present": Guard(Requires, attribute_present),  # type: ignore[arg-type]
}
