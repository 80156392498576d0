"""The second step of a password sign-in for administrators and auditors: a code from an
authenticator app, or setting one up (accounts/second_factor.py).

Between the two steps the browser holds a short-lived signed proof that the password was
right (a cookie on /login only), never the password. The forms use the sign-in form's
own CSRF token (a double-submit cookie on /login).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from referral_engine.accounts import format_key
from referral_engine.errors import Locked, Unauthorised
from web import session
from web.pages.base import redirect, render, safe_next

router = APIRouter(include_in_schema=False)

PENDING_COOKIE = "re_pending"
PENDING_MINUTES = 5


def ask_for_code(request: Request, user_id: int, enrolled: bool, next_url: str) -> Response:
    rt = session.runtime(request)
    pending = rt.second_factors.pending(user_id, PENDING_MINUTES)
    target = "/login/code" if enrolled else "/login/enrol"
    response = redirect(f"{target}?next={safe_next(next_url)}")
    response.set_cookie(
        PENDING_COOKIE,
        pending,
        max_age=PENDING_MINUTES * 60,
        httponly=True,
        samesite="strict",
        secure=session.secure(request),
        path="/login",
    )
    return response


def _page(request: Request, template: str, context: dict, status: int = 200) -> Response:
    token = session.login_csrf(request)
    response = render(request, template, {**context, "csrf": token}, status=status)
    session.keep_login_csrf(request, response, token)
    return response


def _pending_user(request: Request) -> int | None:
    return session.runtime(request).second_factors.pending_user(
        request.cookies.get(PENDING_COOKIE, "")
    )


def _expired() -> Response:
    return redirect("/login?next=/")


def _signed_in(request: Request, token: str, ttl: int, next_url: str, response=None) -> Response:
    response = response or redirect(safe_next(next_url))
    session.set_session(request, response, token, ttl)
    response.delete_cookie(PENDING_COOKIE, path="/login")
    return response


@router.get("/login/code", response_class=HTMLResponse)
def code_form(request: Request, next: str = "/") -> Response:
    if _pending_user(request) is None:
        return _expired()
    return _page(request, "login_code.html", {"next": safe_next(next)})


async def _code_posted(request: Request, handler) -> Response:
    """A code form's fields read on the loop; `handler` (which checks the code, a
    database read and write) runs in the thread pool."""
    form = await request.form()
    fields = (str(form.get(k) or "") for k in ("code", "csrf"))
    return await run_in_threadpool(handler, request, *fields, str(form.get("next") or "/"))


@router.post("/login/code", response_class=HTMLResponse)
async def code(request: Request) -> Response:
    return await _code_posted(request, _code)


def _code(request: Request, code: str, csrf: str, next_url: str) -> Response:
    rt = session.runtime(request)
    next_url = safe_next(next_url)
    if _pending_user(request) is None:
        return _expired()
    if not session.csrf_ok(request, csrf):
        return _page(
            request,
            "login_code.html",
            {"next": next_url, "error": "Your session expired. Please try again."},
            400,
        )
    if not code.strip():
        return _page(
            request,
            "login_code.html",
            {"next": next_url, "error": "Enter the code from your authenticator app."},
            422,
        )
    try:
        token, _, ttl = rt.second_factors.complete(
            request.cookies.get(PENDING_COOKIE, ""),
            code,
            source="web",
            request_id=request.state.request_id,
        )
    except Locked as exc:
        minutes = exc.retry_after // 60 + 1
        error = f"Too many failed sign-ins. This account is locked for {minutes} minutes."
        return _page(request, "login_code.html", {"next": next_url, "error": error}, 429)
    except Unauthorised:
        error = "The code is not right, or was already used. Enter the newest code shown."
        return _page(request, "login_code.html", {"next": next_url, "error": error}, 401)
    return _signed_in(request, token, ttl, next_url)


@router.get("/login/enrol", response_class=HTMLResponse)
def enrol_form(request: Request, next: str = "/") -> Response:
    return _enrol_page(request, safe_next(next))


def _enrol_page(request: Request, next_url: str, error: str | None = None, status: int = 200):
    rt = session.runtime(request)
    user_id = _pending_user(request)
    if user_id is None:
        return _expired()
    try:
        key = rt.second_factors.enrolment_key(user_id)
    except Unauthorised:
        return redirect(f"/login/code?next={next_url}")
    username = rt.second_factors.username(user_id)
    context = {
        "next": next_url,
        "key": format_key(key),
        "error": error,
        "uri": rt.second_factors.provisioning_uri(key, username),
    }
    return _page(request, "login_enrol.html", context, status)


@router.post("/login/enrol", response_class=HTMLResponse)
async def enrol(request: Request) -> Response:
    return await _code_posted(request, _enrol)


def _enrol(request: Request, code: str, csrf: str, next_url: str) -> Response:
    rt = session.runtime(request)
    next_url = safe_next(next_url)
    user_id = _pending_user(request)
    if user_id is None:
        return _expired()
    if not session.csrf_ok(request, csrf):
        return _enrol_page(request, next_url, "Your session expired. Please try again.", 400)
    rid = request.state.request_id
    try:
        codes = rt.second_factors.confirm(user_id, code, source="web", request_id=rid)
    except Unauthorised:
        error = (
            "The code is not right. Check the key was typed in exactly, then try the newest code."
        )
        return _enrol_page(request, next_url, error, 422)
    token, _, ttl = rt.second_factors.issue(user_id, "totp", source="web", request_id=rid)
    shown = render(request, "login_recovery_codes.html", {"codes": codes, "next": next_url})
    return _signed_in(request, token, ttl, next_url, shown)
