"""The browser session: a cookie holding an access token, and CSRF tokens for forms.

The cookie carries the same signed, revocable token as the API (HttpOnly, SameSite=Lax,
Secure outside demo mode; see `secure`), so signing out revokes it everywhere. Every
form carries a CSRF token:
for a signed-in user an HMAC of the session's token id, so it cannot be forged without
the secret and dies with the session; for the sign-in form, before there is a session, a
random value also set in a short-lived cookie (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response
from starlette.datastructures import FormData

from referral_engine.access import Actor
from referral_engine.accounts import read_token
from referral_engine.errors import Forbidden, Unauthorised

COOKIE = "re_session"
LOGIN_CSRF_COOKIE = "re_login_csrf"


def runtime(request: Request):
    return request.app.state.runtime


def session_token(request: Request) -> str | None:
    return request.cookies.get(COOKIE)


def current_actor(request: Request) -> Actor | None:
    """The signed-in user, or None (no cookie, or a token expired or revoked)."""
    token = session_token(request)
    if not token:
        return None
    try:
        return runtime(request).accounts.actor_from_token(
            token, source="web", request_id=getattr(request.state, "request_id", None)
        )
    except Unauthorised:
        return None


def seconds_left(request: Request) -> int | None:
    """How long the signed-in session has before it ends (for the idle warning)."""
    token = session_token(request)
    if not token:
        return None
    rt = runtime(request)
    try:
        claims = read_token(token, rt.accounts.secret, rt.clock.now())
    except Unauthorised:
        return None
    return int((claims.expires_at - rt.clock.now()).total_seconds())


def csrf_for(request: Request) -> str:
    rt = runtime(request)
    token = session_token(request)
    if token:
        try:
            claims = read_token(token, rt.accounts.secret, rt.clock.now())
        except Unauthorised:
            # An ended session's cookie is no session: the sign-in form's own token
            # counts, or signing in again after a timeout would fail its CSRF check.
            return request.cookies.get(LOGIN_CSRF_COOKIE, "")
        key = rt.accounts.secret.encode()
        return hmac.new(key, f"csrf:{claims.jti}".encode(), hashlib.sha256).hexdigest()
    return request.cookies.get(LOGIN_CSRF_COOKIE, "")


def csrf_ok(request: Request, submitted: str | None) -> bool:
    expected = csrf_for(request)
    return bool(expected) and bool(submitted) and hmac.compare_digest(expected, submitted or "")


def check_form(request: Request, form: FormData) -> None:
    """Refuse a posted form unless it carries this session's CSRF token. Signed-in users'
    forms are checked by `web.pages.base.posted` before their handler runs, so no
    handler can forget it."""
    if not csrf_ok(request, str(form.get("csrf") or "")):
        raise Forbidden("the form's security token is missing or wrong; reload the page")


def secure(request: Request) -> bool:
    """Whether cookies are marked Secure: always outside demo mode (unless a setting says
    otherwise), and over HTTPS in demo mode. The scheme is the client's own only when
    uvicorn was told to trust the proxy in front (REFERRAL_ENGINE_TRUSTED_PROXIES)."""
    settings = runtime(request).settings
    if settings.secure_cookies is not None:
        return settings.secure_cookies or request.url.scheme == "https"
    return not settings.demo or request.url.scheme == "https"


def login_csrf(request: Request) -> str:
    """The sign-in form's token: the one already in its cookie, or a new one."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def keep_login_csrf(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE, value, max_age=3600, httponly=True, samesite="strict",
        secure=secure(request), path="/login",
    )  # fmt: skip


def set_session(request: Request, response: Response, token: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE, token, max_age=max_age, httponly=True, samesite="lax", secure=secure(request),
        path="/",
    )  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")


def end_session(response: Response) -> None:
    """Forget the session cookie, and tell the browser to drop what it cached (so Back
    does not show a case after signing out). Only "cache": the storage that keeps a
    half-written form's draft (web/static/drafts.js) is left for the user to get back."""
    response.delete_cookie(COOKIE, path="/")
    response.headers["Clear-Site-Data"] = '"cache"'
