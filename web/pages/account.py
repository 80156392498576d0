"""Setting one's own password through a one-time link (a new account, or a reset).

The link arrives by email (referral_engine/accounts/links.py); nobody is signed in when
it is opened. The form needs no CSRF token of its own: it only works with the link's
secret, which a forging site cannot know.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from referral_engine.access import Actor
from referral_engine.errors import FieldError, InvalidData, NotFound
from web import session
from web.pages.base import posted, render

router = APIRouter(include_in_schema=False)


def _page(request: Request, context: dict, status: int = 200) -> HTMLResponse:
    rt = session.runtime(request)
    ctx = {"title": "Set your password", "errors": [], "dead": None,
           "min_length": rt.policy.rules.sign_in.password_min_length, **context}  # fmt: skip
    return render(request, "account_password.html", ctx, status=status)


@router.get("/account/password", response_class=HTMLResponse)
def password_form(request: Request, token: str = "") -> Response:
    return _show(request, token)


def _show(request: Request, token: str) -> Response:
    rt = session.runtime(request)
    try:
        who = rt.accounts.password_link(token, source="web", request_id=request.state.request_id)
    except NotFound as exc:
        return _page(request, {"dead": exc.detail, "token": ""}, status=404)
    return _page(request, {"who": who, "token": token})


@router.post("/account/password", response_class=HTMLResponse)
async def set_password(request: Request) -> Response:
    form = await request.form()
    return await run_in_threadpool(_set, request, form)


def _set(request: Request, form: FormData) -> Response:
    rt = session.runtime(request)
    token = str(form.get("token") or "")
    password, again = str(form.get("password") or ""), str(form.get("confirm") or "")
    if password != again:
        errors = [FieldError("confirm", "the two passwords are not the same")]
        return _again(request, token, errors)
    try:
        username = rt.accounts.set_password_with_link(
            token, password, source="web", request_id=request.state.request_id
        )
    except NotFound as exc:
        return _page(request, {"dead": exc.detail, "token": ""}, status=404)
    except InvalidData as exc:
        return _again(request, token, exc.errors)
    return _page(request, {"done": username, "token": ""})


def _again(request: Request, token: str, errors: list) -> Response:
    rt = session.runtime(request)
    try:
        who = rt.accounts.password_link(token, source="web", request_id=request.state.request_id)
    except NotFound as exc:
        return _page(request, {"dead": exc.detail, "token": ""}, status=404)
    return _page(request, {"who": who, "token": token, "errors": errors}, status=422)


# --- "Stay signed in" ------------------------------------------------------------------


@router.post("/session/renew")
async def renew(request: Request) -> Response:
    """Another idle period for this session (never past its absolute lifetime): a new
    cookie, and the new CSRF token for the forms already on the page (web/static/session.js)."""
    return await posted(request, _renew)


def _renew(request: Request, actor: Actor, form: FormData) -> Response:
    rt = session.runtime(request)
    token, ttl = rt.accounts.renew(session.session_token(request) or "", actor.via("web"))
    request.cookies[session.COOKIE] = token  # so csrf_for below signs the new session
    response = JSONResponse({"expires_in": ttl, "csrf": session.csrf_for(request)})
    session.set_session(request, response, token, ttl)
    return response
