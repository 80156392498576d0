"""The pathway definitions: states, events, roles, and a Mermaid diagram of each."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from referral_engine.access import Actor
from referral_engine.errors import Forbidden, NotFound
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import RESPONSES

router = APIRouter(prefix="/api/workflows", tags=["workflows"])
ERRORS = {k: RESPONSES[k] for k in (401, 403, 404)}


def _allowed(rt: Runtime, who: Actor) -> None:
    if not rt.access.can(who, "workflow:definition:view"):
        raise Forbidden("you may not read workflow definitions")


@router.get("", responses=ERRORS)
def list_workflows(who: Actor = Depends(actor), rt: Runtime = Depends(runtime)) -> list[dict]:
    _allowed(rt, who)
    return [
        {
            "pathway": wf.pathway,
            "label": wf.definition.label,
            "description": wf.definition.description,
            "version": wf.version,
            "initial": wf.definition.initial,
            "states": list(wf.definition.states),
            "events": list(wf.definition.events),
        }
        for wf in rt.workflows.current.values()
    ]


@router.get("/{pathway}", responses=ERRORS)
def get_workflow(
    pathway: str, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    _allowed(rt, who)
    if pathway not in rt.workflows.current:
        raise NotFound(f"no pathway {pathway!r}")
    return rt.workflows.get(pathway).describe(rt.policy)
