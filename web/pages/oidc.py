"""Sign in through the organisation's identity provider (OpenID Connect).

`/login/oidc` sends the browser to the provider with a fresh state, nonce and PKCE
challenge, and keeps a secret in a cookie so that only this browser can finish that
sign-in; `/login/oidc/callback` finishes it (accounts/federated.py) and sets the same
session cookie as a password sign-in. A refusal shows the sign-in page with a message
that says what to do next, never why in a way that helps an attacker.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from referral_engine.accounts import SignInRefused
from web import session
from web.pages.auth import login_page
from web.pages.base import redirect, safe_next

router = APIRouter(include_in_schema=False)

BROWSER_COOKIE = "re_oidc"
COOKIE_PATH = "/login/oidc"


def callback_url(request: Request) -> str:
    """The redirect URI registered at the provider: the setting, or this server's own."""
    configured = session.runtime(request).settings.oidc_redirect_uri
    return configured or str(request.url_for("oidc_callback"))


@router.get("/login/oidc")
def oidc_start(request: Request, next: str = "/") -> Response:
    rt = session.runtime(request)
    if not rt.federated.enabled:
        return redirect("/login")
    try:
        started = rt.federated.start(callback_url(request), safe_next(next))
    except SignInRefused as exc:
        return login_page(request, {"error": exc.detail, "next": safe_next(next)}, 503)
    response = redirect(started.url)
    response.set_cookie(
        BROWSER_COOKIE, started.browser_secret, max_age=600, httponly=True,
        # Lax, not Strict: the provider sends the browser back with a top-level GET from
        # its own site, and a Strict cookie would not come with it.
        samesite="lax", secure=session.secure(request), path=COOKIE_PATH,
    )  # fmt: skip
    return response


@router.get("/login/oidc/callback", name="oidc_callback")
async def oidc_callback(request: Request) -> Response:
    return await run_in_threadpool(_finish, request)


def _finish(request: Request) -> Response:
    rt = session.runtime(request)
    if not rt.federated.enabled:
        return redirect("/login")
    q = request.query_params
    try:
        done = rt.federated.finish(
            state=q.get("state"), code=q.get("code"), error=q.get("error"),
            browser_secret=request.cookies.get(BROWSER_COOKIE),
            redirect_uri=callback_url(request), source="web",
            request_id=request.state.request_id,
        )  # fmt: skip
    except SignInRefused as exc:
        status = 403 if exc.reason in {"tenant", "no_role", "disabled"} else 401
        response = login_page(request, {"error": exc.detail, "next": "/"}, status)
    else:
        response = redirect(safe_next(done.next_url))
        session.set_session(request, response, done.token, done.expires_in)
    response.delete_cookie(BROWSER_COOKIE, path=COOKIE_PATH)
    return response
