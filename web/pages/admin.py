"""Administration: users, their roles and agencies; disable, enable, reset a password.

An administrator never learns a password: a new account and a reset each send the person
a one-time link to set their own. Roles that read case content wait for an access
approver (web/pages/approvals.py). Disabling asks to confirm first.

Everything goes through `Accounts`, which checks `admin:user:manage` and audits each read
and change as "web:user:<verb>". An administrator reads no case content: nothing here
shows or links to a case or a person.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from referral_engine.access import Actor
from referral_engine.errors import InvalidData
from web import session
from web.pages.base import posted, redirect, render, signed_in

router = APIRouter(include_in_schema=False)
PAGE = 50

DONE = {
    "created": "The account is ready. The person has been sent a link to their work email "
    "to set their own password. Any role that reads case content waits for an access "
    "approver.",
    "set_roles": "Roles saved. They apply from the person's next page; a role that reads "
    "case content waits for an access approver first.",
    "set_agency": "Agency saved.",
    "disable": "Account disabled. The person is signed out everywhere and cannot sign in.",
    "enable": "Account enabled. The person can sign in again.",
    "reset_password": "Password reset. The person has been sent a link to their work email "
    "to choose a new one; their old password no longer works.",
}


def _actor(request: Request) -> Actor:
    return signed_in(request).via("web")


def _options(request: Request) -> dict[str, Any]:
    rt = session.runtime(request)
    return {
        "roles": [(name, r.label, r.description) for name, r in rt.policy.roles.items()],
        "agency_kinds": rt.policy.reference.agency_kinds,
    }


# --- the list --------------------------------------------------------------------------


@router.get("/admin/users", response_class=HTMLResponse)
def users(request: Request, q: str = "", agency: int | None = None, page: int = 1) -> HTMLResponse:
    actor = _actor(request)
    rt = session.runtime(request)
    page = max(page, 1)
    q = q.strip()[:100]
    result = rt.accounts.list_users(
        actor, q=q or None, agency_id=agency, limit=PAGE, offset=(page - 1) * PAGE
    )
    last = max((result["total"] - 1) // PAGE + 1, 1)
    base: dict[str, Any] = {k: v for k, v in (("q", q), ("agency", agency)) if v}
    in_agency = next((a for a in result["agencies"] if a["id"] == agency), None)

    def url(n: int) -> str:
        return f"/admin/users?{urlencode({**base, 'page': n})}"

    return render(
        request, "admin_users.html",
        {"title": "Users", "result": result, "q": q, "in_agency": in_agency, "page": page,
         "last": last,
         "prev_url": url(page - 1) if page > 1 else None,
         "next_url": url(page + 1) if page < last else None,
         **_options(request)},
        actor=actor,
    )  # fmt: skip


# --- a new user ------------------------------------------------------------------------


def _new_page(
    request: Request, actor: Actor, values: dict[str, Any], errors: list, status: int = 200
) -> HTMLResponse:
    rt = session.runtime(request)
    agencies = rt.accounts.agencies(actor)
    return render(
        request, "admin_user_new.html",
        {"title": "Add a user", "values": values, "errors": errors, "agencies": agencies,
         **_options(request)},
        actor=actor, status=status,
    )  # fmt: skip


@router.get("/admin/users/new", response_class=HTMLResponse)
def new_user(request: Request) -> HTMLResponse:
    return _new_page(request, _actor(request), {"roles": []}, [])


@router.post("/admin/users", response_class=HTMLResponse)
async def create_user(request: Request) -> Response:
    return await posted(request, _create_user)


def _create_user(request: Request, actor: Actor, form: FormData) -> Response:
    actor = actor.via("web")
    rt = session.runtime(request)
    values: dict[str, Any] = {
        k: str(form.get(k) or "").strip()
        for k in ("username", "display_name", "email", "agency", "agency_kind")
    }
    values["roles"] = [str(r) for r in form.getlist("roles") if r]
    try:
        user = rt.accounts.create_user(
            actor, username=values["username"], roles=values["roles"],
            agency=values["agency"], agency_kind=values["agency_kind"] or None,
            display_name=values["display_name"], email=values["email"],
        )  # fmt: skip
    except InvalidData as exc:
        return _new_page(request, actor, values, exc.errors, status=422)
    return redirect(f"/admin/users/{user['id']}?done=created")


# --- one user --------------------------------------------------------------------------


def _user_page(
    request: Request,
    actor: Actor,
    user_id: int,
    *,
    change: str | None = None,
    values: dict[str, Any] | None = None,
    errors: list | None = None,
    flash: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    rt = session.runtime(request)
    user = rt.accounts.user(actor, user_id)
    return render(
        request, "admin_user.html",
        {"title": user["display_name"], "user": user, "change": change,
         "values": values or {}, "errors": errors or [], "flash": flash,
         "is_self": user["id"] == actor.user_id, **_options(request)},
        actor=actor, status=status,
    )  # fmt: skip


@router.get("/admin/users/{user_id}", response_class=HTMLResponse)
def user_page(request: Request, user_id: int, done: str = "") -> HTMLResponse:
    return _user_page(request, _actor(request), user_id, flash=DONE.get(done))


@router.post("/admin/users/{user_id}", response_class=HTMLResponse)
async def change_user(request: Request, user_id: int) -> Response:
    return await posted(request, _change_user, user_id)


def _change_user(request: Request, actor: Actor, form: FormData, user_id: int) -> Response:
    actor = actor.via("web")
    rt = session.runtime(request)
    change = str(form.get("change") or "")
    values: dict[str, Any] = {}
    try:
        if change == "set_roles":
            values["roles"] = [str(r) for r in form.getlist("roles") if r]
            rt.accounts.set_roles(actor, user_id, values["roles"])
        elif change == "set_agency":
            values = {k: str(form.get(k) or "").strip() for k in ("agency", "agency_kind")}
            rt.accounts.set_agency(actor, user_id, values["agency"], values["agency_kind"] or None)
        elif change == "disable" and form.get("confirm") != "yes":
            # Disabling signs the person out everywhere: ask before doing it.
            return _user_page(request, actor, user_id, change="confirm_disable")
        elif change in ("disable", "enable"):
            rt.accounts.set_disabled(actor, user_id, change == "disable")
        elif change == "reset_password":
            rt.accounts.reset_password(actor, user_id)
        else:
            return _user_page(request, actor, user_id, flash="Choose what to change.", status=400)
    except InvalidData as exc:
        return _user_page(
            request, actor, user_id, change=change, values=values, errors=exc.errors, status=422
        )
    return redirect(f"/admin/users/{user_id}?done={change}")
