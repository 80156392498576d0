"""Errors as RFC 9457 problem details (application/problem+json), one shape everywhere."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from referral_engine.errors import DomainError, InvalidData, Locked, Unauthorised

MEDIA_TYPE = "application/problem+json"


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
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            errors.append({"field": ".".join(loc) or "body", "reason": err.get("msg", "invalid")})
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return problem(
            request, 422, "The data is not valid", detail, kind="invalid-data", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        return problem(request, exc.status_code, _title(exc.status_code), str(exc.detail),
                       headers=headers)  # fmt: skip

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        import logging

        logging.getLogger("referral_engine.web").exception("unhandled error", exc_info=exc)
        return problem(request, 500, "Internal error", "the error was logged; nothing was changed")


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {MEDIA_TYPE: {}}, "description": text}
    for code, text in {
        401: "Not signed in, or the token is not valid",
        403: "Signed in, but not allowed to do this",
        404: "Not found, or not visible to you",
        409: "Stale version, or the event is not valid in the current state",
        422: "The data is not valid; `errors` names each field and why",
    }.items()
}
