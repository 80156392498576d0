"""Cases: the queue, one case, its history, and firing events (the one path for change)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from referral_engine.access import Actor
from referral_engine.casework import read_case
from referral_engine.runtime import Runtime
from web.api.case_models import CaseHistory, CaseList, CaseView, EventFired
from web.deps import actor, runtime, signed_token
from web.problems import RESPONSES
from web.writes import run_writing

router = APIRouter(prefix="/api/cases", tags=["cases"])
ERRORS = {k: RESPONSES[k] for k in (401, 403, 404, 409, 422)}


def answers(model: type, description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 answer documented by `model` (web/api/case_models.py), and the errors."""
    return {200: {"model": model, "description": description}, **ERRORS}


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str = Field(min_length=1, max_length=60)
    data: dict[str, Any] = {}
    expected_version: int = Field(ge=0)


@router.get("", response_model=None, responses=answers(CaseList, "The cases, in queue order"))
def list_cases(
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    pathway: str | None = None,
    state: str | None = None,
    overdue: bool | None = None,
    rag: str | None = None,
    assigned_to_me: bool = False,
    include_closed: bool = False,
    limit: int = Query(default=50, ge=1, le=200),
    offset: int = Query(default=0, ge=0),
) -> dict[str, Any]:
    """The cases the caller may see, in queue order: red first, then by due time."""
    return rt.cases.queue(
        who, pathway=pathway, state=state, overdue=overdue, rag=rag,
        assigned_to_me=assigned_to_me, include_closed=include_closed, limit=limit, offset=offset,
    )  # fmt: skip


@router.get("/{case_id}", response_model=None, responses=answers(CaseView, "The case"))
def get_case(
    case_id: int, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    return rt.cases.view(who, case_id)


@router.post(
    "/{case_id}/events",
    response_model=None,
    responses=answers(EventFired, "Fired: the case as it now is"),
)
async def fire_event(
    case_id: int,
    body: EventIn,
    request: Request,
    value: str = Depends(signed_token),
) -> JSONResponse:
    """Fire an event: 200 with the case as it now is; nothing changes on any error."""
    # The actor, the fire and the answer in one thread-pool call, a few at a time
    # (web/writes.py), not the actor in a call of its own as a dependency; the runtime
    # read here, not through a dependency (bench/README.md, fourth round).
    rt: Runtime = request.app.state.runtime
    return await run_writing(rt.db, _fire, request, value, rt, case_id, body)


def _fire(request: Request, value: str, rt: Runtime, case_id: int, body: EventIn) -> JSONResponse:
    who = actor(request, value)
    fired = rt.engine.fire(case_id, body.event, who, body.data, body.expected_version)
    with rt.db.read_connection() as conn:
        case = read_case(conn, case_id)
        view = rt.cases.describe(conn, who, case) if case and rt.access.can_see(who, case) else None
        # Onward cases the caller may not see (Channel, for a MASH manager) stay unnamed.
        opened = [
            c.id
            for c in (read_case(conn, i) for i in fired.opened)
            if c and rt.access.can_see(who, c)
        ]
    # Already JSON (the case page is built from stored values): answered as it is, not
    # re-validated against `dict[str, Any]`, which FastAPI does in its thread pool, a
    # second hop per request on the busiest route (bench/README.md).
    return JSONResponse(
        {
            "case_id": fired.case_id,
            "event": fired.event,
            "from_state": fired.from_state,
            "state": fired.to_state,
            "version": fired.version,
            "opened_cases": opened,
            "case": view,
        }
    )


@router.get(
    "/{case_id}/history",
    response_model=None,
    responses=answers(CaseHistory, "The case's history, oldest first"),
)
def case_history(
    case_id: int, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    return {"case_id": case_id, "history": rt.cases.history(who, case_id)}
