"""MARAC conferences and Channel panels: the list, setting one up, and each agenda.

A case is put on a meeting only by the engine (the `list` / `list_for_panel` events, on the
case page); the hearing and its action plan are recorded there too. These pages read
through `Meetings`, which applies the same visibility rules as the API (an IDVA sees only
the cases allocated to them; Channel meetings do not exist for anyone who may not see
Channel) and audits every read.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from referral_engine.clock import LONDON
from referral_engine.display import day_text
from referral_engine.errors import FieldError, Forbidden, InvalidData
from web import forms, session
from web.pages.base import posted, redirect, render, signed_in

router = APIRouter(include_in_schema=False)
DEFAULT_CAPACITY = 20


def _managed(rt, actor) -> list[str]:
    """The pathways whose meetings this user may set up."""
    return [
        p
        for p in rt.meetings.pathways_with_meetings()
        if rt.access.can(actor, f"{p}:meeting:manage")
    ]


def long_date(value: str) -> str:
    """'2026-12-02' -> 'Wednesday 2 December 2026' (a meeting's day, no time zone)."""
    try:
        return date.fromisoformat(value).strftime("%A %-d %B %Y")
    except (TypeError, ValueError):
        return value or ""


def short_date(value: str) -> str:
    try:
        return date.fromisoformat(value).strftime("%-d %b %Y")
    except (TypeError, ValueError):
        return value or ""


def _today(rt) -> date:
    return rt.clock.now().astimezone(LONDON).date()


def _list_page(
    request: Request,
    actor,
    *,
    values: dict[str, Any] | None = None,
    errors: list | None = None,
    flash: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    rt = session.runtime(request)
    managed = _managed(rt, actor)
    today = _today(rt).isoformat()
    items = rt.meetings.list(actor.via("web"))["items"]
    for m in items:
        m["date_text"] = long_date(m["date"])
    upcoming = sorted((m for m in items if m["date"] >= today), key=lambda m: (m["date"], m["id"]))
    earlier = [m for m in items if m["date"] < today]
    defaults = {"pathway": managed[0] if managed else "", "capacity": str(DEFAULT_CAPACITY)}
    return render(
        request, "meetings.html",
        {"title": "Meetings", "upcoming": upcoming, "earlier": earlier, "managed": managed,
         "values": values if values is not None else defaults, "errors": errors or [],
         "today": today, "flash": flash},
        actor=actor, status=status,
    )  # fmt: skip


def _can_see_meetings(rt, actor) -> bool:
    return any(rt.access.can(actor, f"{p}:case:view") for p in rt.meetings.pathways_with_meetings())


@router.get("/meetings", response_class=HTMLResponse)
def meetings(request: Request, created: int = 0) -> HTMLResponse:
    actor = signed_in(request)
    rt = session.runtime(request)
    if not _can_see_meetings(rt, actor):
        raise Forbidden("you may not see meetings")
    flash = (
        "Meeting set up. Cases can now be listed at it from their case pages." if created else None
    )
    return _list_page(request, actor, flash=flash)


@router.post("/meetings", response_class=HTMLResponse)
async def create_meeting(request: Request) -> Response:
    return await posted(request, _create_meeting)


def _create_meeting(request: Request, actor, form: FormData) -> Response:
    rt = session.runtime(request)
    values = forms.values_of(form)
    values.pop("csrf", None)
    pathway = str(form.get("pathway") or "").strip()
    errors: list[FieldError] = []
    if not pathway:
        errors.append(FieldError("pathway", "choose which kind of meeting"))
    raw_date = str(form.get("date") or "").strip()
    try:
        day = date.fromisoformat(raw_date)
    except ValueError:
        day = None
        reason = "enter a date, like 2026-12-02" if raw_date else "enter the date of the meeting"
        errors.append(FieldError("date", reason))
    raw_capacity = str(form.get("capacity") or "").strip()
    capacity = int(raw_capacity) if raw_capacity.isdigit() else None
    if capacity is None:
        errors.append(FieldError("capacity", "enter how many cases it can hear, as a number"))
    if not errors:
        try:
            made = rt.meetings.create(actor.via("web"), pathway, day, capacity)  # type: ignore[arg-type]
        except InvalidData as exc:
            errors = list(exc.errors)
        else:
            return redirect(f"/meetings/{made['id']}?created=1")
    return _list_page(request, actor, values=values, errors=errors, status=422)


def _own_actions(item: dict[str, Any], *, open_only: bool = False) -> list[dict[str, Any]]:
    """A case's own actions on the agenda: every one of them, open or done, so an action
    completed since the hearing stays on the plan, shown as done (only carried-over cases
    show just their open actions).

    For a repeat, `previous_actions` also holds the plans of the person's earlier cases
    (listed again, per case, in `earlier_cases`); those are shown apart, under their case,
    since action numbers (A1, A2...) are only unique within one case.
    """
    if open_only:
        return list(item["open_actions"])
    borrowed = {id(a) for e in item.get("earlier_cases") or [] for a in e.get("actions") or []}
    return [a for a in item["actions"] if id(a) not in borrowed]


def _action_rows(actions: list[dict[str, Any]], meeting_id: int, today: str) -> list[dict]:
    """Actions to show, each once, marked overdue (still open after its due date)."""
    seen: dict[str, dict[str, Any]] = {}
    for a in actions:
        seen.setdefault(a["id"], a)
    rows = []
    for a in seen.values():
        rows.append({
            **a,
            "overdue": a.get("status") == "open" and bool(a.get("due")) and a["due"] < today,
            "this_meeting": a.get("meeting_id") == meeting_id,
            "due_text": short_date(a.get("due") or ""),
        })  # fmt: skip
    return sorted(rows, key=lambda a: (a["status"] != "open", len(a["id"]), a["id"]))


def _stays(wf, event: str) -> bool:
    ev = wf.definition.events[event]
    return ev.to is None and not ev.routes


def _waiting(rt, actor, pathway: str) -> list[dict[str, Any]]:
    """Cases ready to be listed at a meeting of this pathway, for those who may list them."""
    wf = rt.workflows.get(pathway)
    states: dict[str, str] = {}  # state -> the event that lists a case from it
    for name, schema in wf.schemas.items():
        if schema.meetings and rt.access.can(actor, wf.permission(name)):
            for state in wf.definition.events[name].from_:
                states.setdefault(state, name)
    out: list[dict[str, Any]] = []
    for state, event in states.items():
        found = rt.cases.queue(actor.via("web"), pathway=pathway, state=state, limit=100)
        for c in found["items"]:
            c["state_label"] = wf.definition.states[state].label
            c["list_event"] = event
            out.append(c)
    return out


@router.get("/meetings/{meeting_id}", response_class=HTMLResponse)
def agenda(request: Request, meeting_id: int, created: int = 0) -> HTMLResponse:
    actor = signed_in(request)
    rt = session.runtime(request)
    meeting = rt.meetings.agenda(actor.via("web"), meeting_id)
    today = _today(rt).isoformat()
    meeting["date_text"] = long_date(meeting["date"])
    wf = rt.workflows.get(meeting["pathway"])
    for group in ("cases", "carried_over"):
        for item in meeting[group]:
            own = _own_actions(item, open_only=group == "carried_over")
            item["actions"] = _action_rows(own, meeting_id, today)
            for earlier in item.get("earlier_cases") or []:
                earlier["rows"] = _action_rows(earlier.get("actions") or [], meeting_id, today)
                state = wf.definition.states.get(earlier.get("state") or "")
                earlier["state_label"] = state.label if state else earlier.get("state")
            item["overdue"] = sum(1 for a in item["actions"] if a["overdue"])
            item["state_label"] = wf.definition.states[item["state"]].label
            # What can be recorded for it now (on its case page): moving it on first, and
            # shown as the main step only when it is the one way on (a panel's "adopt" or
            # "do not adopt" is a decision, not a default).
            item["next"] = sorted(
                (
                    (e, wf.definition.events[e].label)
                    for e in wf.events_from(item["state"])
                    if rt.access.can(actor, wf.permission(e))
                ),
                key=lambda pair: _stays(wf, pair[0]),
            )
            item["one_way_on"] = sum(1 for e, _ in item["next"] if not _stays(wf, e)) == 1
    all_items = meeting["cases"] + meeting["carried_over"]
    summary = {
        "repeats": sum(1 for i in meeting["cases"] if i["repeat"]),
        "open": sum(1 for i in all_items for a in i["actions"] if a["status"] == "open"),
        "overdue": sum(i["overdue"] for i in all_items),
    }
    return render(
        request, "meeting.html",
        {"title": f"{wf.definition.label} meeting, {day_text(meeting['date'])}", "meeting": meeting,
         "pathway_label": wf.definition.label, "summary": summary, "today": today,
         "is_past": meeting["date"] < today,
         "has_actions": any(
             effect == "add_actions"
             for ev in wf.definition.events.values()
             for effect, _params in ev.effects
         ), "waiting": _waiting(rt, actor, meeting["pathway"]),
        # Link a person's page only for those who may open it (an IDVA may not).
         "can_view_people": rt.access.can(actor, "person:person:view"),
         "flash": "Meeting set up." if created else None},
        actor=actor,
    )  # fmt: skip
