"""Errors as RFC 9457 problem details (application/problem+json), one shape everywhere."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from referral_engine.errors import (
    DomainError,
    FieldError,
    InvalidData,
    Locked,
    Unauthorised,
)

MEDIA_TYPE = "application/problem+json"
MAX_ID = 2**31 - 1  # the largest id either database stores (PostgreSQL INTEGER)


class FieldProblem(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """An error, as RFC 9457 describes it, with the fields at fault when there are any."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldProblem] | None = None


def problem(
    request: Request,
    status: int,
    title: str,
    detail: str | None = None,
    *,
    kind: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:referral-engine:problem:{kind}" if kind else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
    }
    if errors:
        body["errors"] = errors
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _slug(exc: DomainError) -> str:
    name = type(exc).__name__
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        if is_page(request):
            return await run_in_threadpool(page_error, request, exc.status, exc.detail)
        headers = {}
        if isinstance(exc, Unauthorised):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, Locked):
            headers["Retry-After"] = str(exc.retry_after)
        errors = [e.as_dict() for e in exc.errors] if isinstance(exc, InvalidData) else None
        return problem(
            request, exc.status, exc.title, exc.detail, kind=_slug(exc), errors=errors,
            headers=headers,
        )  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [_request_field_error(err) for err in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        await audit_refusal(request, errors)
        return problem(
            request, 422, "The data is not valid", detail, kind="invalid-data", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if is_page(request):
            return await run_in_threadpool(page_error, request, exc.status_code, str(exc.detail))
        headers = dict(exc.headers or {})
        return problem(request, exc.status_code, _title(exc.status_code), str(exc.detail),
                       headers=headers)  # fmt: skip

    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)
    async def out_of_range(request: Request, exc: Exception):
        """A number the database cannot hold (an id or version past 2^31 on PostgreSQL,
        2^63 on SQLite) names no record: refused as bad input, never a server error."""
        detail = "a number in the request is out of range"
        if is_page(request):
            return await run_in_threadpool(page_error, request, 422, detail)
        errors = [{"field": "request", "reason": "a number is out of range"}]
        return problem(
            request, 422, "The data is not valid", detail, kind="invalid-data", errors=errors
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        import logging

        logging.getLogger("referral_engine.web").exception("unhandled error", exc_info=exc)
        return problem(request, 500, "Internal error", "the error was logged; nothing was changed")


def is_page(request: Request) -> bool:
    """Whether the request is for an HTML page (errors as pages) or the API (problem+json)."""
    path = request.url.path
    return not (path.startswith(("/api/", "/static/")) or path in ("/openapi.json", "/healthz"))


PAGE_ERRORS = {
    401: ("Sign in", "Please sign in to see this page."),
    403: ("You cannot do that", "Your role does not allow this."),
    404: ("Page not found", "There is no such page, or it is not one you can see."),
    409: ("This has changed", "Someone else changed this first. Go back and reload."),
    422: ("Check your entries", "Something you entered is not valid."),
    429: ("Too many attempts", "Please wait and try again."),
}


def page_error(request: Request, status: int, detail: str | None):
    from web.pages.base import login_redirect, render
    from web.session import current_actor

    actor = current_actor(request)
    if status == 401 and actor is None:
        return login_redirect(request)
    heading, message = PAGE_ERRORS.get(status, ("Something went wrong", "Please try again."))
    if status == 403 and detail:
        message = detail[0].upper() + detail[1:] + "."
    return render(
        request, "error.html", {"title": heading, "heading": heading, "message": message},
        actor=actor, status=status,
    )  # fmt: skip


def _request_field_error(err: dict[str, Any]) -> dict[str, str]:
    """FastAPI's own request checks, in the same field/reason shape as the engine's."""
    loc = list(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        return {"field": "body", "reason": f"is not valid JSON ({err.get('msg', '')})"}
    if loc and loc[0] == "header":
        name = "-".join(part.capitalize() for part in str(loc[-1]).split("-"))
        return {"field": name, "reason": err.get("msg", "invalid")}
    field = ".".join(str(p) for p in loc if p not in ("body", "query", "path"))
    reason = "is required" if err.get("type") == "missing" else err.get("msg", "invalid")
    return {"field": field or "body", "reason": reason}


# What a request is, for the audit row of one refused before it reached the service.
ROUTE_ACTIONS = {
    ("POST", "/api/referrals"): "referral:create",
    ("POST", "/api/cases/{case_id}/events"): "case:{event}",
}


async def audit_refusal(request: Request, errors: list[dict[str, str]]) -> None:
    """Requests refused by the framework's own checks are audited like any other refusal
    (if the caller is signed in: an anonymous request has no one to attribute it to)."""
    rt = request.app.state.runtime
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        return
    try:
        who = await run_in_threadpool(
            rt.accounts.actor_from_token,
            header[7:].strip(),
            source="api",
            request_id=getattr(request.state, "request_id", None),
        )
    except DomainError:
        return
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    action = ROUTE_ACTIONS.get((request.method, template))
    if action is None:
        parts = [p for p in template.split("/") if p and not p.startswith("{")]
        action = f"{parts[1] if len(parts) > 1 else 'request'}:{request.method.lower()}"
    summary = None
    if "{event}" in action:
        try:
            event = (await request.json()).get("event")
        except Exception:  # the body may not be JSON at all
            event = None
        # A closed vocabulary: an event no pathway has is recorded by a keyed hash.
        action, summary = rt.engine.event_action("api", event)
    else:
        action = f"api:{action}"
    case_id = request.path_params.get("case_id")
    exc = InvalidData([FieldError(e["field"], e["reason"]) for e in errors])
    await run_in_threadpool(
        rt.engine.refused, who, action, exc,
        case_id=int(case_id) if str(case_id or "").isdigit() and int(case_id) <= MAX_ID else None,
        target=request.url.path, summary=summary,
    )  # fmt: skip


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

# What each error status means here, for the OpenAPI document (web/openapi.py puts the
# problem+json schema on every one, whichever route declares it).
ERROR_TEXT: dict[int, str] = {
    400: "The body could not be read (not UTF-8, or not the declared media type)",
    401: "Not signed in, or the token is not valid",
    403: "Signed in, but not allowed to do this",
    404: "Not found, or not visible to you",
    409: "Stale version, or the event is not valid in the current state",
    413: "The request body is too large",
    422: "The data is not valid; `errors` names each field and why",
    429: "Too many attempts; `Retry-After` says how many seconds to wait",
    500: "Internal error; it was logged and nothing was changed",
}


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    """One error response as a route declares it: problem+json, never application/json."""
    return {
        "description": description or ERROR_TEXT[status],
        "content": {MEDIA_TYPE: {"schema": PROBLEM_REF}},
    }


RESPONSES: dict[int | str, dict[str, Any]] = {
    code: error_response(code) for code in (401, 403, 404, 409, 422, 429)
}
