"""Records opened with a reason ("break-glass"): opening one, and reviewing openings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from referral_engine.access import Actor
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import RESPONSES

router = APIRouter(tags=["access"])


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=2000)
    # False: the opening was not justified, and an open grant ends now.
    justified: bool = True


@router.post(
    "/api/cases/{case_id}/access",
    status_code=201,
    responses={k: RESPONSES[k] for k in (401, 404, 409, 422)},
)
def open_with_reason(
    case_id: int, body: ReasonIn, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """Open a case outside your need-to-know, for a reason, where policy allows it (the
    answer to a 403 of type `reason-required`). Reading only, until `expires_at`; the
    opening is audited and queued for a supervisor's review."""
    return rt.break_glass.open(who, case_id, body.reason)


@router.post(
    "/api/cases/{case_id}/links/{link}/access",
    status_code=201,
    responses={k: RESPONSES[k] for k in (401, 404, 409, 422)},
)
def open_linked_with_reason(
    case_id: int,
    link: int,
    body: ReasonIn,
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
) -> dict[str, Any]:
    """Open, with a reason, the record behind link number `link` (its `link` in
    `linked_cases`) of a case you see: how an onward referral outside your need-to-know is
    opened without its id ever being shown first. The answer names it (`case_id`)."""
    return rt.break_glass.open_linked(who, case_id, link, body.reason)


@router.get("/api/access/grants", responses={k: RESPONSES[k] for k in (401, 403, 422)})
def list_grants(
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    reviewed: bool = False,
    limit: int = Query(default=50, ge=1, le=200),
    offset: int = Query(default=0, ge=0),
) -> dict[str, Any]:
    """Openings of the pathways you review: waiting for review, or (`reviewed=true`) done."""
    return rt.break_glass.queue(who, reviewed=reviewed, limit=limit, offset=offset)


@router.post(
    "/api/access/grants/{grant_id}/review",
    responses={k: RESPONSES[k] for k in (401, 403, 404, 409, 422)},
)
def review_grant(
    grant_id: int, body: ReviewIn, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """Mark an opening reviewed, with what you found."""
    return rt.break_glass.review(who, grant_id, body.note, justified=body.justified)
