"""What every page shares: the templates, the signed-in user, navigation, CSRF, formats.

Pages are thin: they read and change things only through the runtime's services (the
same engine and access rules as the API), and every read of case content is audited
there, with source "web".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from referral_engine.access import Actor
from referral_engine.display import Display, Names, PathwayFields, pathway_fields
from web import session
from web.showing import FILTERS
from web.writes import run_writing

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
assert TEMPLATES.env.autoescape  # every template escapes what it shows


class SignInRequired(Exception):
    """Raised by a page when nobody is signed in; answered with a redirect to /login."""


def duration(seconds: int | None) -> str:
    """'3h 12m left', 'overdue by 2d 4h'."""
    if seconds is None:
        return ""
    late = seconds < 0
    s = abs(int(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    text = f"{days}d {hours}h" if days else (f"{hours}h {minutes}m" if hours else f"{minutes}m")
    return f"overdue by {text}" if late else f"{text} left"


TEMPLATES.env.filters.update(duration=duration, **FILTERS)


def nav(request: Request, actor: Actor | None) -> list[tuple[str, str]]:
    if actor is None:
        return []
    rt = session.runtime(request)
    can = rt.access.can
    items = [("Home", "/")]
    if can(actor, "referral:referral:create"):
        items.append(("Refer someone", "/referrals/new"))
    if can(actor, "referral:own:view"):
        items.append(("My referrals", "/referrals"))
    if rt.access.visible_pathways(actor):
        items.append(("Cases", "/queue"))
    if any(can(actor, f"{p}:case:view") for p in rt.meetings.pathways_with_meetings()):
        items.append(("Meetings", "/meetings"))
    if can(actor, "report:kpi:view"):
        items.append(("Dashboard", "/dashboard"))
    if can(actor, "audit:log:view"):
        items.append(("Audit", "/audit"))
    if rt.break_glass.review_pathways(actor):
        items.append(("Access reviews", "/review/access"))
    if can(actor, "admin:user:manage"):
        items.append(("Users", "/admin/users"))
    if can(actor, "access:grant:approve"):
        items.append(("Role approvals", "/admin/approvals"))
    if can(actor, "workflow:definition:view"):
        items.append(("Pathways", "/workflows"))
    return items


def _current(items: list[tuple[str, str]], path: str) -> str | None:
    """The menu entry for this page: the longest one whose address the path starts with."""
    matches = [h for _, h in items if path == h or (h != "/" and path.startswith(h + "/"))]
    return max(matches, key=len) if matches else None


def signed_in(request: Request) -> Actor:
    actor = session.current_actor(request)
    if actor is None:
        raise SignInRequired()
    return actor


async def posted(request: Request, handler: Callable[..., Response], *args: Any) -> Response:
    """A signed-in user's form, answered without holding up the server's other requests.

    Only reading the form happens on the event loop, where a slow client holds nothing
    else up. The rest runs in the thread pool with the other writers (web/writes.py):
    who is signed in (first, so a session that ran out mid-form signs in again rather
    than failing the CSRF check), the form's CSRF token, then `handler(request, actor,
    form, *args)`, which makes the change and builds the page. On the loop, a database
    wait or a password hash (argon2: ~165 ms) would stall every request the server holds
    (tests/test_off_the_loop.py).
    """
    form = await request.form()
    db = session.runtime(request).db
    return await run_writing(db, _signed_and_checked, handler, request, form, *args)


def _signed_and_checked(
    handler: Callable[..., Response], request: Request, form: FormData, *args: Any
) -> Response:
    actor = signed_in(request)
    session.check_form(request, form)
    return handler(request, actor, form, *args)


# The loaded policy's reference and its labels, as one pair: the reference itself, not
# its id(), so a policy loaded after another is freed can never be handed the old labels.
_vocab_of: tuple[Any, dict[str, str]] = (None, {})


def _vocab(reference) -> dict[str, str]:
    """The reference labels, built once per loaded policy rather than per page."""
    global _vocab_of
    held, labels = _vocab_of
    if held is not reference:
        labels = reference.labels()
        _vocab_of = (reference, labels)
    return labels


# The display for the loaded policy, built once; each request adds its own lookups.
_display_of: tuple[Any, Display | None] = (None, None)


def display_for(request: Request) -> Display:
    """The request's `Display`: the policy's labels, with names and meetings looked up
    (and remembered) for this request only."""
    global _display_of
    rt = session.runtime(request)
    held, base = _display_of
    if held is not rt.policy or base is None:
        ref = rt.policy.reference
        base = Display(
            ref.labels(), ref.field_labels,
            dash_questions={n: len(v.items) for n, v in rt.policy.dash.versions.items()},
        )  # fmt: skip
        _display_of = (rt.policy, base)
    found = getattr(request.state, "display", None)
    if found is None:
        names = Names(rt.db, {p: w.definition.label for p, w in rt.workflows.current.items()})
        found = request.state.display = base.with_lookups(users=names.user, meetings=names.meeting)
    return found


def fields_of(request: Request, pathway: str) -> PathwayFields | None:
    """What each stored field of the pathway is (labels, types, codes), built once per
    loaded definition."""
    wf = session.runtime(request).workflows.current.get(pathway)
    if wf is None:
        return None
    key = (wf.version, id(session.runtime(request).policy))
    cached = _fields_cache.get(key)
    if cached is None or cached[0] is not wf:
        ref = session.runtime(request).policy.reference
        cached = _fields_cache[key] = (wf, pathway_fields(wf, ref.field_labels))
    return cached[1]


_fields_cache: dict[tuple[str, int], tuple[Any, PathwayFields]] = {}


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    actor: Actor | None = None,
    status: int = 200,
) -> HTMLResponse:
    rt = session.runtime(request)
    items = nav(request, actor)
    ctx = {
        "request": request,
        "actor": actor,
        "nav": items,
        "nav_current": _current(items, request.url.path),
        "csrf": session.csrf_for(request),
        "path": request.url.path,
        "pathway_labels": {p: w.definition.label for p, w in rt.workflows.current.items()},
        "role_labels": {r: role.label for r, role in rt.policy.roles.items()},
        # The policy's labels for stored codes, which the `label` filter looks up.
        "vocab": _vocab(rt.policy.reference),
        # How every value on the page reads (web/showing.py), with this request's lookups.
        "display": display_for(request),
        # The unread count shown on every page (a count only: not audited as a read).
        "unread_notifications": rt.inbox.unread_count(actor) if actor else 0,
        # The idle warning (web/static/session.js): seconds left, and when to warn.
        "session_left": session.seconds_left(request) if actor else None,
        "session_warn": int(rt.settings.session_warning_minutes * 60),
    }
    ctx.update(context or {})
    return TEMPLATES.TemplateResponse(request, template, ctx, status_code=status)


def redirect(url: str, status: int = 303) -> RedirectResponse:
    return RedirectResponse(url, status_code=status)


def login_redirect(request: Request) -> RedirectResponse:
    """To the sign-in page and back. `expired=1` when a session cookie came with the
    request (it ran out or was ended): the sign-in page then says why, and a form's draft
    is waiting in the browser (web/static/drafts.js)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    expired = "&expired=1" if session.session_token(request) else ""
    return redirect(f"/login?next={quote(target)}{expired}")


def safe_next(value: str | None) -> str:
    """Only same-site paths: /login?next=https://evil.example must not redirect away."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"
