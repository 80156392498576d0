"""MARAC and Channel meetings: set one up, list them, read an agenda."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from referral_engine.access import Actor
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import RESPONSES

router = APIRouter(prefix="/api/meetings", tags=["meetings"])
ERRORS = {k: RESPONSES[k] for k in (401, 403, 404, 422)}


class MeetingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pathway: str = Field(max_length=60)
    date: date
    capacity: int = Field(ge=1, le=500)


@router.post("", status_code=201, responses=ERRORS)
def create_meeting(
    body: MeetingIn, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    return rt.meetings.create(who, body.pathway, body.date, body.capacity)


@router.get("", responses=ERRORS)
def list_meetings(
    who: Actor = Depends(actor), rt: Runtime = Depends(runtime), pathway: str | None = None
) -> dict[str, Any]:
    return rt.meetings.list(who, pathway)


@router.get("/{meeting_id}", responses=ERRORS)
def get_meeting(
    meeting_id: int, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """The agenda: listed cases (repeats marked, earlier action plans), carried-over actions."""
    return rt.meetings.agenda(who, meeting_id)
