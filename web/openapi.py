"""The OpenAPI document (`GET /openapi.json`): every error an RFC 9457 problem.

FastAPI documents a declared error under the route's own media type (application/json)
and adds its own `HTTPValidationError` for 422, neither of which this app ever sends, so
generated clients (openapi-python-client, for one) parse every error as nothing. This
rewrites each operation's error responses once, when the document is first built, to
`application/problem+json` with the `Problem` schema, and adds the errors any operation
can answer whatever it declares: 401 when it needs a token, 404 when its path names a
record, 422 when it takes input, 400 and 413 when it takes a body, 500 always. Tests read
the document and check real answers against it (tests/test_openapi.py,
tests/test_bad_input.py).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from web.problems import ERROR_TEXT, MEDIA_TYPE, PROBLEM_REF, Problem

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
# FastAPI's own schemas for a 422 this app never sends (it sends a Problem).
UNUSED = ("HTTPValidationError", "ValidationError")
HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {
        "Retry-After": {
            "description": "Seconds until the username may try again",
            "schema": {"type": "integer"},
        }
    },
}


def install(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_problems(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_problems(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    for item in spec.get("paths", {}).values():
        for method in METHODS:
            if method in item:
                _errors_as_problems(item[method])
    text = json.dumps(spec["paths"])
    for name in UNUSED:
        if f"#/components/schemas/{name}" not in text:
            schemas.pop(name, None)
    return spec


def _errors_as_problems(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    codes = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
    if operation.get("security"):
        codes.add(401)
    parameters = operation.get("parameters", [])
    if any(p.get("in") == "path" for p in parameters):
        codes.add(404)
    if parameters or operation.get("requestBody"):
        codes.add(422)
    if operation.get("requestBody"):
        codes.update((400, 413))
    codes.add(500)
    for code in sorted(codes):
        response = responses.setdefault(str(code), {})
        described = response.get("description")
        if not described or described == "Validation Error":  # FastAPI's, for its own 422
            response["description"] = ERROR_TEXT.get(code, "Error")
        response["content"] = {MEDIA_TYPE: {"schema": dict(PROBLEM_REF)}}
        if code in HEADERS:
            response["headers"] = HEADERS[code]
    operation["responses"] = dict(sorted(responses.items()))
