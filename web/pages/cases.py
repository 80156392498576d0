"""The case page, and firing events from its forms (through the one path for change)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from referral_engine.display import Names, day_text, opened_by
from referral_engine.errors import (
    Forbidden,
    InvalidData,
    NotValidNow,
    ReasonRequired,
    StaleVersion,
)
from referral_engine.pathways import Labels
from referral_engine.policies import assess_dash
from referral_engine.store import CHANGES
from web import forms, session
from web.pages.access import reason_form
from web.pages.base import fields_of, posted, redirect, render, signed_in

router = APIRouter(include_in_schema=False)


def _choices(request: Request, actor, case: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Options for `user` and `meeting` fields, so nobody has to type an id."""
    rt = session.runtime(request)
    out: dict[str, list[tuple[str, str]]] = {}
    for ev in case["available_events"]:
        for name, spec in ev["data"].items():
            if spec["type"] == "user" and spec.get("holds_permission"):
                out[f"{ev['event']}.{name}"] = rt.accounts.users_holding(spec["holds_permission"])
            elif spec.get("pick_from"):
                # e.g. a MARAC action to complete: the case's open ones, by what they say.
                items = case["attributes"].get(spec["pick_from"]) or []
                out[f"{ev['event']}.{name}"] = [
                    (str(a["id"]), f"{a['id']}: {a.get('description', '')}")
                    for a in items
                    if isinstance(a, dict) and a.get("status") == "open"
                ]
            elif spec["type"] == "meeting":
                meetings = rt.meetings.list(actor.via("web"), case["pathway"])["items"]
                out[f"{ev['event']}.{name}"] = [
                    (str(m["id"]), f"{day_text(m['date'])} ({m['room']} places left)")
                    for m in meetings
                    if m["room"] > 0
                ]
    return out


def _dash(request: Request, case: dict[str, Any]) -> dict[str, Any] | None:
    """The referral's DASH, scored by the engine's rules, for whoever screens it: a MASH
    officer rating the risk needs the score the referrer gave (a MARAC case carries its
    own in its attributes)."""
    ref = case.get("referral") or {}
    given = (ref.get("details") or {}).get("dash")
    if isinstance(case["attributes"].get("dash"), dict):
        return case["attributes"]["dash"]  # the case's own assessment (a MARAC case)
    if not given:
        return None
    rt = session.runtime(request)
    return assess_dash(
        rt.policy.dash, given, agency_kind=ref.get("agency_kind"),
        referred_at=datetime.fromisoformat(ref["received_at"]), last_marac_referral=None,
    )  # fmt: skip


def _done_message(rt, case: dict[str, Any], done: str) -> str | None:
    """The sentence for `?done=<event>` after a form: only an event of the case's own
    pathway maps to one ("“Screen and RAG-rate” is recorded."); any other text in the
    address shows nothing, so a link cannot put words on the page."""
    wf = rt.workflows.current.get(case["pathway"])
    event = wf.definition.events.get(done) if wf is not None else None
    return f"\u201c{event.label}\u201d is recorded." if event is not None else None


def _referrer(request: Request, case: dict[str, Any]) -> dict[str, Any] | None:
    """Who made the referral and how to reach them, for whoever works the case: "so the
    MASH can ask you questions today" (the referrer typed their phone and email)."""
    ref = case.get("referral")
    if not ref:
        return None
    names = Names(session.runtime(request).db)
    contact = (ref.get("details") or {}).get("referrer_contact") or {}
    return {
        "name": names.user_by_id(ref.get("referrer_id")),
        "agency": names.agency(ref.get("agency_id")),
        "agency_kind": ref.get("agency_kind"),
        "phone": contact.get("phone"),
        "email": contact.get("email"),
    }


def _page(
    request: Request,
    actor,
    case_id: int,
    *,
    open_event: str | None = None,
    values: dict[str, Any] | None = None,
    errors: list | None = None,
    flash: str | None = None,
    flash_kind: str = "success",
    status: int = 200,
    done: str = "",
) -> HTMLResponse:
    rt = session.runtime(request)
    case = rt.cases.view(actor.via("web"), case_id)
    # The draft to clear after a form went through: only for an event of this pathway
    # (never text from the address, which the page must not repeat).
    done_event = None
    if done:
        flash = _done_message(rt, case, done)
        done_event = done if flash else None
    history = rt.cases.history(actor.via("web"), case_id) if case["history_visible"] else None
    for ev in case["available_events"]:
        ev["fields"] = forms.fields_for(f"ev-{ev['event']}", ev["data"])
    wf = rt.workflows.current.get(case["pathway"])
    for h in history or ():
        if h["event"] == "open" and isinstance((h.get("data") or {}).get("reason"), str):
            h["data"] = {
                **h["data"],
                "reason": opened_by(rt.workflows.current, h["data"]["reason"]),
            }
    return render(
        request, "case.html",
        {"title": f"Case {case_id}", "case": case, "history": history,
         "open_event": open_event, "values": values or {}, "errors": errors or [],
         "choices": _choices(request, actor, case), "dash": _dash(request, case),
         "referrer": _referrer(request, case),
         "dash_questions": rt.policy.dash.items,
         "flash": flash, "flash_kind": flash_kind, "done_event": done_event,
         "labels": wf.labels if wf else Labels(), "changes": CHANGES,
         "fields": fields_of(request, case["pathway"]),
         "can_audit": rt.access.can(actor, "audit:log:view"),
         "lawful_bases": rt.policy.reference.lawful_bases,
         "agency_kinds": rt.policy.reference.agency_kinds},
        actor=actor, status=status,
    )  # fmt: skip


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(request: Request, case_id: int, done: str = "") -> HTMLResponse:
    actor = signed_in(request)
    try:
        return _page(request, actor, case_id, done=done)
    except ReasonRequired as exc:
        return reason_form(request, actor, case_id, exc.detail)


@router.get("/cases/{case_id}/events/{event}")
def event_address(request: Request, case_id: int, event: str) -> Response:
    """Where a case form posts, opened as a page: someone whose session ran out mid-form
    signs in again and is sent back here (a GET). Show them the case, at that form."""
    signed_in(request)
    anchor = f"#event-{event}" if re.fullmatch(r"[a-z][a-z0-9_]{0,63}", event) else ""
    return redirect(f"/cases/{case_id}{anchor}")


@router.post("/cases/{case_id}/events/{event}", response_class=HTMLResponse)
async def fire(request: Request, case_id: int, event: str) -> Response:
    return await posted(request, _fire, case_id, event)


def _fire(request: Request, actor, form: FormData, case_id: int, event: str) -> Response:
    rt = session.runtime(request)
    values = forms.values_of(form)
    case = rt.cases.view(actor.via("web"), case_id)
    schema = next((e["data"] for e in case["available_events"] if e["event"] == event), None)
    if schema is None and not rt.cases.permits(actor, case_id, event):
        raise Forbidden(f"you may not {event.replace('_', ' ')} on a {case['pathway']} case")
    if schema is None:
        return _page(
            request, actor, case_id, flash=f"“{event.replace('_', ' ')}” is not available to "
            "you now: the case may have moved on.", flash_kind="warning", status=409,
        )  # fmt: skip
    try:
        version = int(str(form.get("expected_version") or "0"))
    except ValueError:
        version = 0
    try:
        rt.engine.fire(case_id, event, actor.via("web"), forms.data_from(form, schema), version)
    except InvalidData as exc:
        return _page(request, actor, case_id, open_event=event, values=values,
                     errors=exc.errors, status=422)  # fmt: skip
    except (StaleVersion, NotValidNow) as exc:
        return _page(
            request, actor, case_id, open_event=event, values=values, flash_kind="warning",
            flash=f"Someone else changed this case while you were working on it ({exc.detail}). "
            "Your entries are kept below: check the case, then submit again.", status=409,
        )  # fmt: skip
    return redirect(f"/cases/{case_id}?done={event}")
