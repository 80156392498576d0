"""A person: every case of theirs the user may see, across pathways, with repeat and
duplicate warnings; and, for a MASH manager, merging two records of one person (and
undoing it). Reads and changes go through `Cases.person` and `Merges`, audited there.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from referral_engine.errors import (
    Conflict,
    FieldError,
    InvalidData,
    NotFound,
)
from web import forms, session
from web.pages.base import posted, redirect, render, signed_in

router = APIRouter(include_in_schema=False)


def _ids(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip().isdigit()][:200]


def _page(
    request: Request,
    actor,
    person_id: int,
    *,
    values: dict[str, Any] | None = None,
    errors: list | None = None,
    merged: dict[str, Any] | None = None,
    flash: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    rt = session.runtime(request)
    person = rt.cases.person(actor.via("web"), person_id)
    for c in person["cases"]:
        definition = rt.workflows.get(c["pathway"]).definition
        state = definition.states.get(c["state"])
        c["state_label"] = state.label if state else c["state"]
    # The duplicate warning is shown with links, from `possible_matches` (after a merge the
    # moved referrals still name the record they were merged into: not a duplicate of itself).
    person["possible_matches"] = [p for p in person["possible_matches"] if p != person_id]
    warnings = [w["text"] for w in person["warnings"] if w["kind"] != "possible_duplicates"]
    can_merge = rt.access.can(actor, "person:person:merge")
    return render(
        request, "person.html",
        {"title": f"Person {person_id}", "person": person, "warnings": warnings,
         "can_merge": can_merge, "values": values or {}, "errors": errors or [],
         "merged": merged, "flash": flash,
         "repeat_referrals": sum(1 for r in person["referrals"] if r["repeat"])},
        actor=actor, status=status,
    )  # fmt: skip


@router.get("/people/{person_id}", response_class=HTMLResponse)
def person_page(
    request: Request, person_id: int, merged: int = 0, merged_from: int = 0, moved: str = "",
    undone: int = 0,
) -> HTMLResponse:  # fmt: skip
    actor = signed_in(request)
    result = None
    if merged and merged_from:
        result = {"id": merged, "from_person_id": merged_from, "moved_cases": _ids(moved)}
    flash = "Merge undone: the cases it moved are back on this record." if undone else None
    return _page(request, actor, person_id, merged=result, flash=flash)


@router.post("/people/{person_id}/merge", response_class=HTMLResponse)
async def merge(request: Request, person_id: int) -> Response:
    return await posted(request, _merge, person_id)


def _merge(request: Request, actor, form: FormData, person_id: int) -> Response:
    rt = session.runtime(request)
    values = forms.values_of(form)
    values.pop("csrf", None)
    raw_into = str(form.get("into") or "").strip().removeprefix("Person ").strip()
    reason = str(form.get("reason") or "")
    errors: list[FieldError] = []
    if not raw_into.isdigit():
        errors.append(FieldError("into", "enter the number of the record to merge into"))
    elif int(raw_into) == person_id:
        errors.append(FieldError("into", "that is this record: enter the other record's number"))
    if not reason.strip():
        errors.append(FieldError("reason", "say why these are the same person"))
    if not errors:
        try:
            done = rt.merges.merge(actor.via("web"), person_id, int(raw_into), reason)
        except InvalidData as exc:
            errors = list(exc.errors)
        except NotFound:
            errors = [FieldError("into", f"there is no person {raw_into} whose cases you can see")]
        except Conflict as exc:
            errors = [FieldError("into", exc.detail)]
        else:
            moved = ",".join(str(c) for c in done["moved_cases"])
            return redirect(
                f"/people/{done['into_person_id']}?merged={done['id']}"
                f"&merged_from={person_id}&moved={moved}"
            )
    return _page(request, actor, person_id, values=values, errors=errors, status=422)


@router.post("/people/merges/{merge_id}/undo", response_class=HTMLResponse)
async def undo(request: Request, merge_id: int) -> Response:
    return await posted(request, _undo, merge_id)


def _undo(request: Request, actor, form: FormData, merge_id: int) -> Response:
    done = session.runtime(request).merges.undo(actor.via("web"), merge_id)
    return redirect(f"/people/{done['from_person_id']}?undone={merge_id}")
