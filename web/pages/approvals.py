"""Roles waiting for a second person: an access approver approves or refuses them.

Separation of duties (referral_engine/accounts/grants.py): an administrator asks for a
role that reads case content, someone holding `access:grant:approve` decides, never the
one who asked and never for themselves. Every list and decision is audited by `Accounts`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from referral_engine.access import Actor
from referral_engine.errors import Forbidden, NotFound
from web import session
from web.pages.base import posted, redirect, render, signed_in

router = APIRouter(include_in_schema=False)

DONE = {
    "approve": "Approved. The person holds the role from their next page.",
    "refuse": "Refused. The person does not get the role.",
}


def _page(request: Request, actor: Actor, flash: str | None = None, status: int = 200):
    rt = session.runtime(request)
    requests = rt.accounts.role_requests(actor)
    return render(
        request, "admin_approvals.html",
        {"title": "Roles waiting for approval", "requests": requests, "flash": flash},
        actor=actor, status=status,
    )  # fmt: skip


@router.get("/admin/approvals", response_class=HTMLResponse)
def approvals(request: Request, done: str = "") -> HTMLResponse:
    return _page(request, signed_in(request).via("web"), DONE.get(done))


@router.post("/admin/approvals/{request_id}", response_class=HTMLResponse)
async def decide(request: Request, request_id: int) -> Response:
    return await posted(request, _decide, request_id)


def _decide(request: Request, actor: Actor, form: FormData, request_id: int) -> Response:
    actor = actor.via("web")
    verb = str(form.get("decision") or "")
    if verb not in DONE:
        return _page(request, actor, "Choose Approve or Refuse.", status=400)
    try:
        session.runtime(request).accounts.decide_role_request(actor, request_id, verb == "approve")
    except (Forbidden, NotFound) as exc:
        if not session.runtime(request).access.can(actor, "access:grant:approve"):
            raise
        return _page(
            request, actor, exc.detail[:1].upper() + exc.detail[1:] + ".", status=exc.status
        )
    return redirect(f"/admin/approvals?done={verb}")
