"""Opening a restricted record with a reason, and the supervisor's review of openings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from referral_engine.errors import FieldError, InvalidData
from web import session
from web.pages.base import posted, redirect, render, signed_in

router = APIRouter(include_in_schema=False)


def reason_form(
    request: Request, actor, case_id: int, detail: str, *, reason: str = "",
    errors: list[FieldError] | None = None, status: int = 403, link: int | None = None,
) -> HTMLResponse:  # fmt: skip
    """The page shown instead of a record outside the user's need-to-know that policy lets
    them open with a reason; with `link`, the record behind that link of case `case_id`
    (which the user sees), still unnamed."""
    rt = session.runtime(request)
    return render(
        request, "access_reason.html",
        {"title": "A reason is needed", "case_id": case_id, "detail": detail, "reason": reason,
         "errors": errors or [], "minutes": rt.policy.rules.break_glass.minutes,
         "link": link},
        actor=actor, status=status,
    )  # fmt: skip


@router.post("/cases/{case_id}/access", response_class=HTMLResponse)
async def open_with_reason(request: Request, case_id: int) -> Response:
    return await posted(request, _open_with_reason, case_id)


def _open_with_reason(request: Request, actor, form: FormData, case_id: int) -> Response:
    reason = str(form.get("reason") or "")
    try:
        session.runtime(request).break_glass.open(actor.via("web"), case_id, reason)
    except InvalidData as exc:
        return reason_form(
            request, actor, case_id, "", reason=reason, errors=exc.errors, status=422
        )
    return redirect(f"/cases/{case_id}")


def _review_page(
    request: Request, actor, *, reviewed: bool, errors: list | None = None,
    open_id: int | None = None, note: str = "", flash: str | None = None, status: int = 200,
) -> HTMLResponse:  # fmt: skip
    rt = session.runtime(request)
    data = rt.break_glass.queue(actor.via("web"), reviewed=reviewed, limit=200)
    return render(
        request, "access_review.html",
        {"title": "Records opened with a reason", "data": data, "reviewed": reviewed,
         "errors": errors or [], "open_id": open_id, "note": note, "flash": flash},
        actor=actor, status=status,
    )  # fmt: skip


@router.get("/review/access", response_class=HTMLResponse)
def review_queue(request: Request, reviewed: bool = False, done: int = 0) -> HTMLResponse:
    actor = signed_in(request)
    flash = f"Opening {done} marked reviewed." if done else None
    return _review_page(request, actor, reviewed=reviewed, flash=flash)


@router.post("/review/access/{grant_id}", response_class=HTMLResponse)
async def review(request: Request, grant_id: int) -> Response:
    return await posted(request, _review, grant_id)


def _review(request: Request, actor, form: FormData, grant_id: int) -> Response:
    note = str(form.get("note") or "")
    justified = form.get("justified") != "no"
    try:
        session.runtime(request).break_glass.review(
            actor.via("web"), grant_id, note, justified=justified
        )
    except InvalidData as exc:
        return _review_page(
            request, actor, reviewed=False, errors=exc.errors, open_id=grant_id, note=note,
            status=422,
        )  # fmt: skip
    return redirect(f"/review/access?done={grant_id}")


@router.get("/cases/{case_id}/links/{link}/access", response_class=HTMLResponse)
def linked_reason_page(request: Request, case_id: int, link: int) -> HTMLResponse:
    actor = signed_in(request)
    return reason_form(request, actor, case_id, "", link=link, status=200)


@router.post("/cases/{case_id}/links/{link}/access", response_class=HTMLResponse)
async def open_linked_with_reason(request: Request, case_id: int, link: int) -> Response:
    return await posted(request, _open_linked, case_id, link)


def _open_linked(request: Request, actor, form: FormData, case_id: int, link: int) -> Response:
    reason = str(form.get("reason") or "")
    try:
        grant = session.runtime(request).break_glass.open_linked(
            actor.via("web"), case_id, link, reason
        )
    except InvalidData as exc:
        return reason_form(
            request, actor, case_id, "", reason=reason, errors=exc.errors, status=422, link=link
        )
    return redirect(f"/cases/{grant['case_id']}")
