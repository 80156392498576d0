"""Each pathway as its definition says: states, events, who may fire each, and a diagram."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from referral_engine.errors import Forbidden, NotFound
from web import diagram, session
from web.pages.base import render, signed_in

router = APIRouter(include_in_schema=False)


def _allowed(request: Request):
    actor = signed_in(request)
    if not session.runtime(request).access.can(actor, "workflow:definition:view"):
        raise Forbidden("you may not read pathway definitions")
    return actor


def _who(policy, permission: str, roles: list[str]) -> list[dict[str, str]]:
    """Each role that may fire an event, with any limit its grant carries."""
    out = []
    for role in roles:
        grants = [g for g in policy.grants_for([role]) if g.matches(permission)]
        limits = []
        if grants and all(g.only == "allocated" for g in grants):
            limits.append("cases allocated to them")
        elif grants and all(g.only == "own_agency" for g in grants):
            limits.append("their own agency's cases")
        if grants and all(g.when_agency_kind for g in grants):
            kinds = sorted({k for g in grants for k in g.when_agency_kind or ()})
            limits.append(f"{' or '.join(k.replace('_', ' ') for k in kinds)} agencies only")
        label = policy.roles[role].label if role in policy.roles else role
        out.append({"role": role, "label": label, "limit": "; ".join(limits)})
    return out


@router.get("/workflows", response_class=HTMLResponse)
def workflows(request: Request) -> HTMLResponse:
    actor = _allowed(request)
    rt = session.runtime(request)
    items = [
        {
            "pathway": wf.pathway,
            "label": wf.definition.label,
            "description": wf.definition.description,
            "states": len(wf.definition.states),
            "events": len(wf.definition.events),
            "version": wf.version[:12],
        }
        for wf in rt.workflows.current.values()
    ]
    return render(
        request, "workflows.html", {"title": "Pathways", "items": items}, actor=actor
    )  # fmt: skip


@router.get("/workflows/{pathway}", response_class=HTMLResponse)
def workflow(request: Request, pathway: str) -> HTMLResponse:
    actor = _allowed(request)
    rt = session.runtime(request)
    if pathway not in rt.workflows.current:
        raise NotFound(f"no pathway {pathway!r}")
    d: dict[str, Any] = rt.workflows.get(pathway).describe(rt.policy)
    leaving: dict[str, list[str]] = {s: [] for s in d["states"]}
    for name, ev in d["events"].items():
        for state in ev["from"]:
            leaving[state].append(name)
        ev["who"] = _who(rt.policy, ev["permission"], ev["roles"])
    return render(
        request, "workflow.html",
        {"title": f"{d['label']} pathway", "wf": d, "leaving": leaving,
         "diagram": diagram.svg(d, dom_id=f"diagram-{pathway}")},
        actor=actor,
    )  # fmt: skip


@router.get("/workflows/{pathway}/diagram.svg")
def workflow_diagram(request: Request, pathway: str) -> Response:
    """The diagram alone, as an SVG file: to zoom into, print, or put in a document."""
    _allowed(request)
    rt = session.runtime(request)
    if pathway not in rt.workflows.current:
        raise NotFound(f"no pathway {pathway!r}")
    d = rt.workflows.get(pathway).describe(rt.policy)
    body = '<?xml version="1.0" encoding="UTF-8"?>\n' + str(diagram.svg(d, dom_id="diagram"))
    return Response(body, media_type="image/svg+xml")
