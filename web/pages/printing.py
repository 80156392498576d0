"""Printable pages: the case summary a practitioner takes to a strategy meeting or a
conference, marked OFFICIAL-SENSITIVE on every page (web/static/print.css).

The summary is read through the same audited service as the case page, as the source
"print", so the audit log tells a printed copy (`print:case:view`) from a screen read.
Every other page prints too, without its navigation, forms or buttons (print.css).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from referral_engine.errors import ReasonRequired
from referral_engine.pathways import Labels
from referral_engine.store import CHANGES
from web import session
from web.pages.access import reason_form
from web.pages.base import render, signed_in

router = APIRouter(include_in_schema=False)

# What the case record shows elsewhere (disclosures have their own table; clock pauses
# and the synthetic flag are bookkeeping).
HIDDEN_ATTRIBUTES = ("pauses", "paused", "synthetic", "disclosures")


@router.get("/cases/{case_id}/print", response_class=HTMLResponse)
def case_summary(request: Request, case_id: int) -> HTMLResponse:
    actor = signed_in(request)
    rt = session.runtime(request)
    reader = actor.via("print")
    try:
        case = rt.cases.view(reader, case_id)
    except ReasonRequired as exc:
        return reason_form(request, actor, case_id, exc.detail)
    history = rt.cases.history(reader, case_id) if case["history_visible"] else None
    wf = rt.workflows.current.get(case["pathway"])
    attributes = {
        key: value
        for key, value in case["attributes"].items()
        if key not in HIDDEN_ATTRIBUTES and value not in (None, "", [], {})
    }
    return render(
        request, "case_print.html",
        {"title": f"Case summary {case_id}", "case": case, "history": history,
         "attributes": attributes, "labels": wf.labels if wf else Labels(), "changes": CHANGES,
         "printed_at": rt.clock.now()},
        actor=actor,
    )  # fmt: skip
