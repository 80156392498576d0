"""`GET /openapi.json` as a generated client reads it (issue 18): every error response is
an RFC 9457 problem (application/problem+json with the `Problem` schema), and the case
routes document their answers. Real answers, over the ASGI app, are checked against the
document with schemathesis' own conformance checks, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from conftest import referral_body
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

PROBLEM = "application/problem+json"
METHODS = ("get", "put", "post", "delete", "patch")
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def spec(client) -> dict[str, Any]:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def operations(spec: dict[str, Any]):
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_error_response_is_a_problem(spec):
    errors = 0
    for name, op in operations(spec):
        codes = {code for code in op["responses"] if code.isdigit() and int(code) >= 400}
        assert "500" in codes, name
        if op.get("security"):
            assert "401" in codes, f"{name} needs a token but does not document 401"
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in codes, name
        for code in codes:
            content = op["responses"][code]["content"]
            assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}, (
                name, code, content,
            )  # fmt: skip
            assert op["responses"][code]["description"] != "Validation Error"
            errors += 1
    assert errors >= 100
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's, never sent here
    problem = schemas["Problem"]
    assert {"type", "title", "status", "detail", "instance", "errors"} <= set(problem["properties"])
    assert set(problem["required"]) == {"title", "status"}
    assert schemas["FieldProblem"]["required"] == ["field", "reason"]
    token = spec["paths"]["/api/auth/token"]["post"]["responses"]
    assert "Retry-After" in token["429"]["headers"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_case_answers_have_a_schema(spec):
    refs = {
        ("get", "/api/cases"): "CaseList",
        ("get", "/api/cases/{case_id}"): "CaseView",
        ("post", "/api/cases/{case_id}/events"): "EventFired",
        ("get", "/api/cases/{case_id}/history"): "CaseHistory",
    }
    for (method, path), model in refs.items():
        ok = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"] == {"$ref": f"#/components/schemas/{model}"}
    view = spec["components"]["schemas"]["CaseView"]
    assert {"pathway", "state", "version", "due_at", "person_id", "linked_cases",
            "available_events"} <= set(view["required"])  # fmt: skip


def conforms(schema, method: str, path: str, response, **parameters: Any) -> None:
    """Schemathesis' checks: status documented, media type documented, body matches."""
    case = schema[path][method].Case(**parameters)
    case.validate_response(response, checks=CHECKS)


def test_real_case_answers_and_errors_match_the_document(client, users, spec):
    schema = schemathesis.openapi.from_dict(spec)
    teacher, officer, manager = users["teacher"], users["officer"], users["manager"]
    made = teacher.post("/api/referrals", json=referral_body()).json()
    case_id = made["case_id"]
    path = {"path_parameters": {"case_id": case_id}}

    viewed = officer.get(f"/api/cases/{case_id}")
    assert viewed.status_code == 200
    conforms(schema, "GET", "/api/cases/{case_id}", viewed, **path)

    def step(who, event: str, data: dict[str, Any]):
        version = who.get(f"/api/cases/{case_id}").json()["version"]
        body = {"event": event, "data": data, "expected_version": version}
        fired = who.post(f"/api/cases/{case_id}/events", json=body)
        assert fired.status_code == 200, fired.text
        conforms(schema, "POST", "/api/cases/{case_id}/events", fired, **path)
        return fired.json()

    step(officer, "screen", {"rag": "red", "rationale": "Children at risk tonight"})
    step(officer, "refer_for_decision", {"rationale": "Cannot wait for checks"})
    decided = step(manager, "decide", {
        "outcome": "strategy_discussion", "onward": ["marac", "channel"],
        "rationale": "Significant harm", "feedback_to_referrer": "A strategy discussion is held.",
    })  # fmt: skip
    links = decided["case"]["linked_cases"]
    # Neither onward case is the MASH manager's to see: there, but with no id and no
    # pathway (and still conforming).
    assert [link["visible"] for link in links] == [False, False]
    assert all("id" not in link and "pathway" not in link for link in links)

    listed = officer.get("/api/cases", params={"include_closed": True})
    conforms(schema, "GET", "/api/cases", listed)
    assert listed.json()["items"], "the list has something to check"
    with pytest.raises(FailureGroup):  # the checks bite: a list is not a case
        conforms(schema, "GET", "/api/cases/{case_id}", listed, **path)
    history = manager.get(f"/api/cases/{case_id}/history")
    conforms(schema, "GET", "/api/cases/{case_id}/history", history, **path)

    # Errors: each a problem, each documented for its route.
    stale = officer.post(f"/api/cases/{case_id}/events",
                         json={"event": "screen", "data": {}, "expected_version": 0})  # fmt: skip
    missing = officer.get("/api/cases/999999")
    anonymous = client.get(f"/api/cases/{case_id}")
    bad = officer.get("/api/cases", params={"rag": "purple"})
    for answer, method, route, params in (
        (stale, "POST", "/api/cases/{case_id}/events", path),
        (missing, "GET", "/api/cases/{case_id}", {"path_parameters": {"case_id": 999999}}),
        (anonymous, "GET", "/api/cases/{case_id}", path),
        (bad, "GET", "/api/cases", {}),
    ):
        assert answer.status_code in (401, 404, 409, 422)
        assert answer.headers["content-type"].startswith(PROBLEM)
        conforms(schema, method, route, answer, **params)
