"""The queue: cases the user may see, most urgent first (the API's order), with filters."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from referral_engine.display import Names
from referral_engine.errors import Forbidden, InvalidData
from web import session
from web.pages.base import render, signed_in

router = APIRouter(include_in_schema=False)
PAGE = 25


# The queue's sortable columns: header -> the sort key the queue query knows.
SORTABLE = {"Received": "received", "Concern": "concern", "Assigned to": "assignee"}


def _sort_links(base: dict[str, str], sort: str) -> dict[str, dict[str, str]]:
    """Each sortable header's link (ascending first, then the other way) and its
    aria-sort state; the sort runs in the queue's query, over every case, not one page."""
    out = {}
    for header, key in SORTABLE.items():
        current = "ascending" if sort == key else "descending" if sort == f"-{key}" else "none"
        target = f"-{key}" if sort == key else key
        query = urlencode({**{k: v for k, v in base.items() if k != "sort"}, "sort": target})
        out[header] = {"url": f"/queue?{query}", "state": current}
    query = urlencode({k: v for k, v in base.items() if k != "sort"})
    out["Urgency"] = {"url": f"/queue?{query}" if query else "/queue",
                      "state": "none" if sort else "ascending"}  # fmt: skip
    return out


def with_assignees(request: Request, items: list[dict]) -> None:
    """Each queue row's assignee by name (the queue keeps their id)."""
    names = Names(session.runtime(request).db)
    for item in items:
        item["assignee"] = names.user_by_id(item.get("assigned_to_id"))


def _flag(value: str | None) -> bool | None:
    return {"true": True, "false": False}.get((value or "").lower())


@router.get("/queue", response_class=HTMLResponse)
def queue(
    request: Request,
    pathway: str = "",
    state: str = "",
    rag: str = "",
    overdue: str = "",
    assigned_to_me: str = "",
    sort: str = "",
    page: int = 1,
) -> HTMLResponse:
    actor = signed_in(request)
    rt = session.runtime(request)
    if not rt.access.visible_pathways(actor):
        # No pathway's cases to work (a practitioner follows only their own referrals):
        # no menu entry, and no page either, rather than an always-empty list.
        exc = Forbidden("you have no cases to work; your referrals are under My referrals")
        rt.engine.refused(actor.via("web"), "web:case:list", exc, target="queue")
        raise exc
    filters = {"pathway": pathway, "state": state, "rag": rag, "overdue": overdue,
               "assigned_to_me": assigned_to_me, "sort": sort}  # fmt: skip
    page = max(page, 1)
    errors: list = []
    try:
        result = rt.cases.queue(
            actor.via("web"), pathway=pathway or None, state=state or None, rag=rag or None,
            overdue=_flag(overdue), assigned_to_me=assigned_to_me == "true",
            limit=PAGE, offset=(page - 1) * PAGE, sort=sort or None,
        )  # fmt: skip
        with_assignees(request, result["items"])
    except InvalidData as exc:
        errors = exc.errors
        result = {"items": [], "total": 0, "limit": PAGE, "offset": 0}
    pathways = rt.access.visible_pathways(actor)
    states = sorted(
        {s for p in pathways for s in rt.workflows.get(p).definition.states}
        if not pathway or pathway not in pathways
        else rt.workflows.get(pathway).definition.states
    )
    base = {k: v for k, v in filters.items() if v}
    last = max((result["total"] - 1) // PAGE + 1, 1)
    return render(
        request, "queue.html",
        {"title": "Your cases" if assigned_to_me == "true" else "Cases", "queue": result,
         "filters": filters, "pathways": pathways,
         "states": states, "errors": errors, "page": page, "last": last,
         "prev_url": f"/queue?{urlencode({**base, 'page': page - 1})}" if page > 1 else None,
         "next_url": f"/queue?{urlencode({**base, 'page': page + 1})}" if page < last else None,
         "export_query": urlencode(base) if rt.access.can(actor, "report:cases:export") else None,
         "sort_links": _sort_links(base, sort)},
        actor=actor,
    )  # fmt: skip
