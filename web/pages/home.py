"""Each role's home page: what needs their attention first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from web import session
from web.pages.base import render, signed_in
from web.pages.queue import with_assignees

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    actor = signed_in(request)
    rt = session.runtime(request)
    ctx: dict = {"title": "Home"}
    if rt.access.visible_pathways(actor):
        ctx["queue"] = rt.cases.queue(actor.via("web"), limit=10)
        with_assignees(request, ctx["queue"]["items"])
        ctx["overdue"] = rt.cases.queue(actor.via("web"), overdue=True, limit=1)["total"]
        ctx["mine"] = rt.cases.queue(actor.via("web"), assigned_to_me=True, limit=1)["total"]
    if rt.access.can(actor, "referral:own:view"):
        ctx["referrals"] = rt.referrals.mine(actor.via("web"), limit=5)
    meeting_paths = [
        p for p in rt.meetings.pathways_with_meetings() if rt.access.can(actor, f"{p}:case:view")
    ]
    if meeting_paths:
        ctx["meetings"] = rt.meetings.list(actor.via("web"))["items"][:5]
    ctx["can_refer"] = rt.access.can(actor, "referral:referral:create")
    ctx["auditor"] = rt.access.can(actor, "audit:log:view")
    ctx["admin"] = rt.access.can(actor, "admin:user:manage")
    return render(request, "home.html", ctx, actor=actor)
