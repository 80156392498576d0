"""A person and every case of theirs the caller may see."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from referral_engine.access import Actor
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import RESPONSES

router = APIRouter(prefix="/api/people", tags=["people"])


@router.get("/{person_id}", responses={k: RESPONSES[k] for k in (401, 403, 404)})
def get_person(
    person_id: int, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    return rt.cases.person(who, person_id)


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=2000)


@router.post(
    "/{person_id}/merge",
    status_code=201,
    responses={k: RESPONSES[k] for k in (401, 403, 404, 409, 422)},
)
def merge_person(
    person_id: int, body: MergeIn, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """Merge this record into `into` (a MASH manager's decision that they are one person)."""
    return rt.merges.merge(who, person_id, body.into, body.reason)


@router.post("/merges/{merge_id}/undo", responses={k: RESPONSES[k] for k in (401, 403, 404, 409)})
def undo_merge(
    merge_id: int, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    return rt.merges.undo(who, merge_id)
