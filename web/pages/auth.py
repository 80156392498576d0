"""Sign in and sign out in the browser."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from referral_engine.accounts import SecondFactorNeeded
from referral_engine.errors import Forbidden, Locked, Unauthorised
from web import session
from web.api.auth import refuse_password
from web.pages import second_factor
from web.pages.base import redirect, render, safe_next
from web.writes import run_writing

router = APIRouter(include_in_schema=False)


@router.get("/login", response_class=HTMLResponse, name="login_form")
def login_form(request: Request, next: str = "/", signed_out: str = "") -> Response:
    if session.current_actor(request) is not None:
        return redirect(safe_next(next))
    # A fixed sentence for a fixed flag: nothing from the address is ever printed.
    flash = "You have signed out. Close the browser if others use this computer." if (
        signed_out == "1") else None  # fmt: skip
    return login_page(request, {"next": safe_next(next), "values": {}, "flash": flash})


def login_page(request: Request, context: dict, status: int = 200) -> Response:
    """The sign-in form, its CSRF token the same random value in the form and a cookie;
    the identity provider's button when one is configured, the password form unless
    local passwords are off."""
    token = session.login_csrf(request)
    rt = session.runtime(request)
    offers = {"oidc": rt.federated.enabled, "passwords": rt.settings.local_passwords}
    context = {"values": {}, **context, **offers, "csrf": token}
    response = render(request, "login.html", context, status=status)
    session.keep_login_csrf(request, response, token)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form()
    # In the thread pool (tests/test_off_the_loop.py), but not behind the writers' gate
    # (web/writes.py): a sign-in is mostly its password hash (~165 ms of argon2), and
    # would hold a writer's place for all of it. Its own CSRF check (the sign-in form's
    # double-submit cookie) answers with the form again, not a refusal.
    return await run_in_threadpool(_login, request, form)


def _login(request: Request, form: FormData) -> Response:
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    next_url = safe_next(str(form.get("next") or "/"))
    rt = session.runtime(request)
    error, status = None, 200
    if not rt.settings.local_passwords:
        error, status = "Sign in with your organisation's account: passwords are not used.", 403
        refuse_password(
            rt, username, "web", request.state.request_id, Forbidden("local passwords are off")
        )
    elif not session.csrf_ok(request, str(form.get("csrf") or "")):
        error, status = "Your session expired. Please sign in again.", 400
    elif not username or not password:
        error, status = "Enter your username and password.", 422
    else:
        rid = request.state.request_id
        try:
            token, _, ttl = rt.accounts.sign_in(
                username, password, source="web", request_id=rid,
                second_factor=rt.second_factors.checker(None, source="web", request_id=rid),
            )  # fmt: skip
        except SecondFactorNeeded as exc:
            # The password was right: on to the code (or to setting one up).
            return second_factor.ask_for_code(request, exc.user_id, exc.enrolled, next_url)
        except Locked as exc:
            minutes = exc.retry_after // 60 + 1
            error, status = (
                f"Too many failed sign-ins. This account is locked for {minutes} minutes.",
                429,
            )
        except Unauthorised:
            error, status = "The username or password is not right.", 401
        else:
            response = redirect(next_url)
            session.set_session(request, response, token, ttl)
            return response
    return login_page(
        request, {"error": error, "next": next_url, "values": {"username": username}}, status
    )


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    return await run_writing(session.runtime(request).db, _logout, request, form)


def _logout(request: Request, form: FormData) -> Response:
    """Signs out only with the form's token; anyone without a live session is simply sent
    to the sign-in page (so not through `posted`, which would send them there to sign in
    and come back)."""
    response = redirect("/login")
    actor = session.current_actor(request)
    token = session.session_token(request)
    if actor is not None and token and session.csrf_ok(request, str(form.get("csrf") or "")):
        rt = session.runtime(request)
        rt.accounts.sign_out(token, actor)
        response = redirect("/login?signed_out=1")  # the sign-in page says so
        if rt.federated.has_identity(actor.user_id):
            # Signed in at the provider: sign out there too (RP-initiated logout), which
            # sends the browser back to the sign-in page. A page that goes on by itself,
            # not a redirect: the CSP's form-action 'self' stops a form's redirect to
            # another site.
            elsewhere = rt.federated.logout_url(str(request.url_for("login_form")))
            if elsewhere:
                response = render(request, "logout_provider.html", {"provider_logout": elsewhere})
        session.end_session(response)
    elif actor is None:
        session.end_session(response)
    return response


@router.get("/logout")
def logout_page(request: Request) -> Response:
    """A link to /logout asks to confirm: signing out changes state, so it needs a form."""
    actor = session.current_actor(request)
    if actor is None:
        return redirect("/login")
    return render(request, "logout.html", actor=actor)
