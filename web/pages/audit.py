"""The auditor's pages: search the audit log, reconstruct a case, verify the chain.

Searching goes through `audit.search`, the API's own path, so each search is itself
audited ("web:audit:search"); a case's reconstruction reads the case and its history
through the case service (audited as any read is) and its audit rows the same way.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from referral_engine import audit
from referral_engine.access import Actor
from referral_engine.display import flatten, opened_by, summary_rows
from referral_engine.errors import FieldError, Forbidden, InvalidData
from web import session
from web.pages.base import display_for, fields_of, render, signed_in

router = APIRouter(include_in_schema=False)

PAGE = 50
CASE_ROWS = 2000  # rows shown in one case's reconstruction; the search pages through more
READS = ("view", "history", "list", "search", "reconstruct", "kpis")


def _require(request: Request, permission: str, action: str, reason: str) -> Actor:
    actor = signed_in(request)
    rt = session.runtime(request)
    if not rt.access.can(actor, permission):
        exc = Forbidden(reason)
        rt.engine.refused(actor.via("web"), action, exc, target="audit")
        raise exc
    return actor.via("web")


def _auditor(request: Request, action: str) -> Actor:
    return _require(request, "audit:log:view", action, "only auditors may read the audit log")


# --- showing rows ----------------------------------------------------------------------


def _items(request: Request, doc: dict[str, Any] | None) -> list[tuple[str, str]]:
    """An audit row's summary in words (referral_engine.display.summary_rows)."""
    rt = session.runtime(request)
    return summary_rows(display_for(request), doc, rt.workflows.current)


def _data_items(request: Request, entry: dict[str, Any]) -> list[tuple[str, str]]:
    """What a history entry recorded, each field by its form's label, values in words."""
    pathway = entry.get("pathway")
    fields = fields_of(request, pathway) if pathway else None
    event_fields = fields.events.get(entry.get("event") or "") if fields else None
    data = dict(entry.get("data") or {})
    if entry.get("event") == "open" and isinstance(data.get("reason"), str):
        data["reason"] = opened_by(session.runtime(request).workflows.current, data["reason"])
    shown = display_for(request).record(data, event_fields)
    return [(k, flatten(v)) for k, v in shown.rows]


def _kind(row: dict[str, Any]) -> str:
    """change, read, refused (access refused: not allowed, not found, not signed in) or
    invalid (the input was not valid: a form's mistake, not an attempt on a record)."""
    if row.get("outcome") == "refused":
        status = (row.get("summary") or {}).get("status")
        return "invalid" if status in (409, 422) else "refused"
    verb = str(row.get("action", "")).rsplit(":", 1)[-1]
    return "read" if verb in READS else "change"


def _shown(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    """An audit row as the pages show it."""
    target = row.get("target") or ""
    subject, _, ident = target.partition(":")
    return {
        **row,
        "who": row.get("actor") or {},
        "kind": _kind(row),
        "summary_items": _items(request, row.get("summary")),
        "target_case": int(ident) if subject == "case" and ident.isdigit() else None,
        "short_hash": (row.get("hash") or "")[:10],
    }


# --- search ----------------------------------------------------------------------------


def _number(errors: list[FieldError], field: str, value: str, what: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1 or len(value) > 12:
        errors.append(FieldError(field, f"enter a {what} number, like 1042"))
        return None
    return int(value)


REFERENCE = re.compile(r"RE-\d{4}-[A-Z0-9]{4,12}", re.IGNORECASE)


def _case_number(
    request: Request, actor: Actor, errors: list[FieldError], value: str
) -> int | None:
    """A case number, or a referral's reference ("RE-2026-XLUBMJ") for the case it
    opened: auditors are asked about a referral by its reference."""
    value = value.strip()
    if REFERENCE.fullmatch(value):
        found = session.runtime(request).cases.case_for_reference(actor, value)
        if found is None:
            errors.append(FieldError("case_id", f"No case has the reference {value.upper()}"))
        return found
    if value and not value.isdigit():
        errors.append(FieldError(
            "case_id", "Enter a case number, like 1042, or a reference, like RE-2026-XLUBMJ"
        ))  # fmt: skip
        return None
    return _number(errors, "case_id", value, "case")


def _date(errors: list[FieldError], field: str, value: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(FieldError(field, "enter a real date, like 2026-04-01"))
        return None


@router.get("/audit", response_class=HTMLResponse)
def search_page(request: Request) -> HTMLResponse:
    action = "web:audit:search"
    actor = _auditor(request, action)
    rt = session.runtime(request)
    params = request.query_params
    names = ("case_id", "person_id", "user", "action", "outcome", "from", "to", "order")
    filters = {k: params.get(k, "").strip() for k in names}
    try:
        page = max(int(params.get("page", "1")), 1)
    except ValueError:
        page = 1
    errors: list[FieldError] = []
    case_id = _case_number(request, actor, errors, filters["case_id"])
    person_id = _number(errors, "person_id", filters["person_id"], "person")
    actor_id = None
    if filters["user"]:
        actor_id = rt.accounts.user_id_for(filters["user"])
        if actor_id is None:
            errors.append(FieldError("user", f"there is no user called {filters['user']}"))
    if len(filters["action"]) > 100:
        errors.append(FieldError("action", "must be at most 100 characters"))
    if filters["outcome"] not in ("", "allowed", "refused"):
        errors.append(FieldError("outcome", "choose allowed or refused"))
    start, end = _date(errors, "from", filters["from"]), _date(errors, "to", filters["to"])
    if start and end and end < start:
        errors.append(FieldError("to", "must not be before the from date"))
    newest_first = filters["order"] != "oldest"
    rows: list[dict[str, Any]] = []
    more = False
    if errors:
        rt.engine.refused(actor, action, InvalidData(errors), target="audit", case_id=case_id)
    else:
        tz = ZoneInfo(rt.policy.timezone)
        query = audit.AuditQuery(
            case_id=case_id, person_id=person_id, actor_id=actor_id,
            action=filters["action"] or None, outcome=filters["outcome"] or None,
            since=datetime.combine(start, time(0), tz) if start else None,
            until=(datetime.combine(end + timedelta(days=1), time(0), tz)
                   - timedelta(microseconds=1)) if end else None,
        )  # fmt: skip
        with rt.db.transaction() as s:
            found = audit.search(
                s, rt.audit, actor, query, limit=PAGE + 1, offset=(page - 1) * PAGE,
                newest_first=newest_first,
            )  # fmt: skip
        more = len(found) > PAGE
        rows = [_shown(request, r) for r in found[:PAGE]]
    base = {k: v for k, v in filters.items() if v}
    searched = bool({k for k in base if k != "order"})
    return render(
        request, "audit_search.html",
        {"title": "Audit log", "filters": filters, "errors": errors, "rows": rows,
         "page": page, "searched": searched, "newest_first": newest_first,
         "prev_url": f"/audit?{urlencode({**base, 'page': page - 1})}" if page > 1 else None,
         "next_url": f"/audit?{urlencode({**base, 'page': page + 1})}" if more else None},
        actor=actor, status=422 if errors else 200,
    )  # fmt: skip


# --- a case's reconstruction -----------------------------------------------------------


def _timeline(
    request: Request, rows: list[dict[str, Any]], history: list[dict[str, Any]], pathway: str
) -> list[dict[str, Any]]:
    """Audit rows in the order they were written, each change joined to its history entry
    (the state change and the data given: the why). A history entry with no audit row of
    its own (none should exist) still appears, at its time."""
    by_version = {h["version"]: h for h in history}
    used: set[int] = set()
    out = []
    for row in rows:
        item = _shown(request, row)
        summary = row.get("summary") or {}
        action = str(row.get("action", ""))
        entry = None
        if row.get("outcome") == "allowed" and ":case:" in action:
            if action.endswith(":case:open"):
                entry = by_version.get(1)
            elif "version" in summary and "event" in summary:
                entry = by_version.get(summary["version"])
                if entry and entry["event"] != summary["event"]:
                    entry = None
        if entry is not None and entry["version"] not in used:
            used.add(entry["version"])
            item["change"] = {
                **entry,
                "data_items": _data_items(request, {**entry, "pathway": pathway}),
            }
        out.append(item)
    for h in history:
        if h["version"] not in used:
            out.append({
                "at": h["at"], "kind": "change", "who": {"name": h["actor_name"]},
                "action": f"history:{h['event']}", "outcome": "allowed", "summary_items": [],
                "change": {**h, "data_items": _data_items(request, {**h, "pathway": pathway})},
                "seq": None,
            })  # fmt: skip
    out.sort(key=lambda i: datetime.fromisoformat(i["at"]))
    return out


def _readers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who read the case (or its person), how often, first and last."""
    seen: dict[Any, dict[str, Any]] = {}
    for row in rows:
        if _kind(row) != "read":
            continue
        who = row.get("actor") or {}
        key = who.get("id") or who.get("username")
        entry = seen.setdefault(key, {"who": who, "count": 0, "first": row["at"], "actions": set()})
        entry["count"] += 1
        entry["last"] = row["at"]
        entry["actions"].add(str(row.get("action", "")).split(":", 1)[-1])
    return sorted(seen.values(), key=lambda e: e["first"])


@router.get("/audit/cases/{case_id}", response_class=HTMLResponse)
def reconstruct(request: Request, case_id: int) -> HTMLResponse:
    action = "web:audit:reconstruct"
    actor = _auditor(request, action)
    rt = session.runtime(request)
    case = rt.cases.view(actor, case_id)
    history = rt.cases.history(actor, case_id) if case["history_visible"] else []
    query = audit.AuditQuery(case_id=case_id, with_person_id=case["person_id"])
    with rt.db.transaction() as s:
        rows = audit.search(s, rt.audit, actor, query, limit=CASE_ROWS + 1, action=action)
    capped = len(rows) > CASE_ROWS
    rows = rows[:CASE_ROWS]
    timeline = _timeline(request, rows, history, case["pathway"])
    wf = rt.workflows.current.get(case["pathway"])
    kinds = ("change", "read", "refused", "invalid")
    counts = {k: sum(1 for i in timeline if i["kind"] == k) for k in kinds}
    changes_only = request.query_params.get("show") == "changes"
    if changes_only:
        timeline = [i for i in timeline if i["kind"] == "change"]
    return render(
        request, "audit_case.html",
        {"title": f"Reconstruction of case {case_id}", "case": case, "timeline": timeline,
         "readers": _readers(rows), "counts": counts, "capped": capped, "limit": CASE_ROWS,
         "history": history, "changes_only": changes_only,
         "events": {n: e.label for n, e in wf.definition.events.items()} if wf else {},
         "states": {n: st.label for n, st in wf.definition.states.items()} if wf else {}},
        actor=actor,
    )  # fmt: skip


# --- verification ----------------------------------------------------------------------


def _verifier(request: Request) -> Actor:
    return _require(
        request, "audit:chain:verify", "web:audit:verify", "you may not verify the audit chain"
    )


@router.get("/audit/verify", response_class=HTMLResponse)
def verify_page(request: Request) -> HTMLResponse:
    actor = _verifier(request)
    return render(request, "audit_verify.html", {"title": "Verify the audit chain"}, actor=actor)


@router.post("/audit/verify", response_class=HTMLResponse)
async def verify(request: Request) -> HTMLResponse:
    form = await request.form()
    # All of it in the thread pool (tests/test_off_the_loop.py), but not through
    # `posted`: the verifier's right is checked before the form's token, a refused token
    # is audited here, and proving the chain is a long read (seconds over millions of
    # rows) that would hold a writer's place (web/writes.py) the whole time.
    return await run_in_threadpool(_verify, request, form)


def _verify(request: Request, form: FormData) -> HTMLResponse:
    actor = _verifier(request)
    rt = session.runtime(request)
    if not session.csrf_ok(request, str(form.get("csrf") or "")):
        exc = Forbidden("the form's security token is missing or wrong; reload the page")
        rt.engine.refused(actor, "web:audit:verify", exc, target="audit")
        raise exc
    result = rt.verify_audit()
    broken_row = None
    with rt.db.transaction() as s:
        rt.audit.record(s, actor, "web:audit:verify", target="audit", summary=result.as_dict())
        # Only an auditor sees the broken row itself: an administrator may verify the chain
        # but not read the log (its rows name cases).
        if result.first_broken_audit_id and rt.access.can(actor, "audit:log:view"):
            found = audit.row_by_id(s, result.first_broken_audit_id)
            broken_row = _shown(request, found) if found else None
    return render(
        request, "audit_verify.html",
        {"title": "Verify the audit chain", "result": result, "broken_row": broken_row,
         "checked_at": rt.clock.now().isoformat(),
         "can_search": rt.access.can(actor, "audit:log:view")},
        actor=actor,
    )  # fmt: skip
