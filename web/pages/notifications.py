"""The signed-in user's notifications page, and downloads of exports from the dashboard."""

from __future__ import annotations

from datetime import date
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from referral_engine.errors import FieldError, InvalidData
from web import session
from web.api.exports import download
from web.pages.base import posted, redirect, render, signed_in

router = APIRouter(include_in_schema=False)


@router.get("/notifications", response_class=HTMLResponse)
def notifications_page(request: Request) -> HTMLResponse:
    actor = signed_in(request).via("web")
    rt = session.runtime(request)
    got = rt.inbox.list(actor, limit=100)
    flash = request.query_params.get("marked")
    return render(
        request, "notifications.html",
        {"title": "Notifications", "items": got["items"], "unread": got["unread"],
         "flash": f"Marked {flash} as read." if flash and flash.isdigit() else None},
        actor=actor,
    )  # fmt: skip


@router.post("/notifications/read")
async def notifications_read(request: Request) -> Response:
    return await posted(request, _notifications_read)


def _notifications_read(request: Request, actor, form: FormData) -> Response:
    actor = actor.via("web")
    rt = session.runtime(request)
    raw = form.getlist("id")
    try:
        ids = [int(str(v)) for v in raw] if raw else None
    except ValueError:
        raise InvalidData(FieldError("id", "must be a notification number")) from None
    marked = rt.inbox.mark_read(actor, ids)
    return redirect(f"/notifications?marked={marked}")


def _flag(value: str | None) -> bool | None:
    return {"true": True, "false": False}.get((value or "").lower())


@router.get("/exports/cases.{fmt}")
def export_cases_download(
    request: Request,
    fmt: Literal["csv", "xlsx"],
    pathway: str = "",
    state: str = "",
    rag: str = "",
    overdue: str = "",
    assigned_to_me: str = "",
) -> Response:
    """The queue page's download links: the list as filtered there, every page of it."""
    actor = signed_in(request).via("web")
    rt = session.runtime(request)
    got = rt.exports.cases(
        actor, fmt, pathway=pathway or None, state=state or None, rag=rag or None,
        overdue=_flag(overdue), assigned_to_me=assigned_to_me == "true",
    )  # fmt: skip
    return download(got)


@router.get("/exports/{what}.{fmt}")
def export_download(
    request: Request,
    what: Literal["kpis", "marac", "nrm"],
    fmt: Literal["csv", "xlsx"],
    start: date = Query(alias="from"),
    end: date = Query(alias="to"),
) -> Response:
    """The dashboard's download links: the same exports as /api/exports, signed in by cookie."""
    actor = signed_in(request).via("web")
    rt = session.runtime(request)
    return download(getattr(rt.exports, what)(actor, start, end, fmt))
