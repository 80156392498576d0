"""In-app notifications: the caller's own, unread first; marking them read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from referral_engine.access import Actor
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import RESPONSES

router = APIRouter(prefix="/api/notifications", tags=["notifications"])
ERRORS = {k: RESPONSES[k] for k in (401, 422)}


class MarkRead(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The notices to mark read; leave out (or null) to mark every one read.
    ids: list[int] | None = Field(default=None, max_length=500)


@router.get("", responses=ERRORS)
def list_notifications(
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    unread: bool = False,
    limit: int = Query(50, ge=1, le=200),
) -> dict[str, Any]:
    """The caller's notifications, unread first, newest first within each; `unread` counts."""
    return rt.inbox.list(who, unread_only=unread, limit=limit)


@router.post("/read", responses=ERRORS)
def mark_read(
    body: MarkRead, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """Mark notices read (only the caller's own; others' ids change nothing)."""
    marked = rt.inbox.mark_read(who, body.ids)
    return {"marked": marked, "unread": rt.inbox.unread_count(who)}


@router.post("/{notification_id}/read", responses=ERRORS)
def mark_one_read(
    notification_id: int, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    marked = rt.inbox.mark_one_read(who, notification_id)
    return {"marked": marked, "unread": rt.inbox.unread_count(who)}
